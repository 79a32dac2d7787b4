-- Whom a retention campaign contacts first: every scored customer of the newest scored
-- period, ranked by the expected value of contacting them,
--   churn_probability x customer_value x save rate - contact cost,
-- with customer_value = margin x revenue of the last 365 days (the profit one more year of
-- the customer brings if, saved, they keep buying as they did). Margin, save rate and
-- contact cost are policy (churn_assets/policy.py), passed by Dagster as vars.

with

scores as (

    select * from {{ source('scoring', 'churn_scores') }}

),

customer_features as (

    select * from {{ ref('customer_features') }}

),

newest as (

    select max(feature_as_of) as as_of
    from scores

),

-- The features that were scored (the period's own row, not today's current_features,
-- which may have moved on to a period not yet scored).
valued as (

    select
        scores.customer_id,
        scores.feature_as_of as as_of,
        scores.churn_probability,
        scores.risk_band,
        scores.model_version,
        cast(customer_features.total_revenue_365d as {{ double_type() }}) as revenue_365d,
        {{ policy_number('retention_margin') }}
            * cast(customer_features.total_revenue_365d as {{ double_type() }})
            as customer_value

    from scores
    inner join newest
        on scores.feature_as_of = newest.as_of
    inner join customer_features
        on customer_features.customer_id = scores.customer_id
        and customer_features.as_of = scores.feature_as_of

),

expected as (

    select
        *,
        churn_probability * customer_value * {{ policy_number('retention_save_rate') }}
            - {{ policy_number('retention_contact_cost') }} as expected_value_saved

    from valued

),

final as (

    select
        -- ties (equal expected value) go to the smaller customer_id, so ranks are stable
        cast(row_number() over (
            order by expected_value_saved desc, customer_id
        ) as integer) as contact_rank,
        customer_id,
        as_of,
        churn_probability,
        risk_band,
        revenue_365d,
        customer_value,
        expected_value_saved,
        expected_value_saved > 0 as worth_contacting,
        sum(expected_value_saved) over (
            order by expected_value_saved desc, customer_id
            rows between unbounded preceding and current row
        ) as cumulative_expected_value,
        model_version

    from expected

)

select * from final
