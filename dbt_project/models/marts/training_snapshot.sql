-- What the ML reads: each labelled period's features joined to its labels.
-- No logic here beyond the join; features and labels are computed upstream.
-- Partitioned like customer_features (a period without closed labels has no rows).
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        pre_hook="{{ clear_run_periods() }}",
        **period_mart_config(contract=true)
    )
}}

with

periods as (

    select * from {{ period_values_sql() }}

),

customer_features as (

    select * from {{ ref('customer_features') }}
    where as_of in (select as_of from periods)

),

churn_labels as (

    select * from {{ ref('churn_labels') }}
    where as_of in (select as_of from periods)

),

final as (

    select
        customer_features.as_of,
        customer_features.customer_id,
        customer_features.days_since_last_order,
        customer_features.total_revenue_30d,
        customer_features.total_revenue_90d,
        customer_features.total_revenue_365d,
        customer_features.order_frequency,
        customer_features.cart_diversity,
        customer_features.email_domain_class,
        customer_features.customer_lifetime_days,
        churn_labels.churned

    from customer_features
    inner join churn_labels
        on churn_labels.customer_id = customer_features.customer_id
        and churn_labels.as_of = customer_features.as_of

)

select * from final
