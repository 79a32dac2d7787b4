-- How each model version's scores held up once the customers' labels matured, period by
-- period: realized AUC beside the holdout AUC it was promoted on, and calibration in the
-- large (mean predicted vs observed churn rate).

with

realized as (

    select * from {{ source('scoring', 'realized_performance') }}

),

final as (

    select
        model_version,
        as_of,
        rows,
        auc as realized_auc,
        holdout_auc,
        auc - holdout_auc as auc_change,
        brier,
        mean_predicted,
        observed_rate,
        mean_predicted - observed_rate as calibration_gap

    from realized

)

select * from final
