-- The features at the scoring as_of (latest data): what batch scoring, online scoring and
-- the drift monitor read. A filter on customer_features, never a second copy of the logic
-- (materialised as a table so it never disappears during a rebuild; see the yml).

with

customer_features as (

    select * from {{ ref('customer_features') }}

),

final as (

    select
        as_of,
        customer_id,
        days_since_last_order,
        total_revenue_30d,
        total_revenue_90d,
        total_revenue_365d,
        order_frequency,
        cart_diversity,
        email_domain_class,
        customer_lifetime_days

    from customer_features
    where purpose = 'scoring'

)

select * from final
