-- One place for an analyst to look at a customer: who they are, their current features
-- and their latest churn score with its lineage.

with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

current_features as (

    select * from {{ ref('current_features') }}

),

scores as (

    select * from {{ source('scoring', 'churn_scores') }}

),

final as (

    select
        current_features.customer_id,
        customers.email_domain,
        customers.signup_at,
        current_features.as_of as feature_as_of,
        current_features.days_since_last_order,
        current_features.total_revenue_30d,
        current_features.total_revenue_90d,
        current_features.total_revenue_365d,
        current_features.order_frequency,
        current_features.cart_diversity,
        current_features.email_domain_class,
        current_features.customer_lifetime_days,
        case
            when current_features.customer_lifetime_days < 90 then '0-3 months'
            when current_features.customer_lifetime_days < 365 then '3-12 months'
            when current_features.customer_lifetime_days < 730 then '1-2 years'
            else '2+ years'
        end as tenure_bucket,
        scores.churn_probability,
        scores.risk_band,
        scores.model_version,
        scores.model_sha256,
        scores.scored_at,
        scores.feature_as_of = current_features.as_of as score_is_current

    from current_features
    inner join customers
        on customers.customer_id = current_features.customer_id
    left join scores
        on scores.customer_id = current_features.customer_id

)

select * from final
