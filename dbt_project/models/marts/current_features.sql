-- The features of the newest period: what batch scoring of the current period, online
-- scoring and the drift monitor read. A filter on customer_features, never a second copy
-- of the logic (materialised as a table so it never disappears during a rebuild; see the
-- yml). Not partitioned: it follows whichever period is newest.

with

customer_features as (

    select * from {{ ref('customer_features') }}

),

newest_period as (

    select max(as_of) as as_of
    from customer_features

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
        customer_features.customer_lifetime_days

    from customer_features
    inner join newest_period
        on newest_period.as_of = customer_features.as_of

)

select * from final
