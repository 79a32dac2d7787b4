-- Proves that no order placed after a period's as_of reaches any feature.
--
-- Recomputes the order-derived quantities from orders on or before as_of only, with a
-- plain join per period (independently of customer_features' running-total SQL), and
-- checks every feature of the run's periods against them. Returns one row per violation
-- (none when the features are leak-free). An order after as_of would show up as a negative
-- or too-small recency, a revenue/count/diversity above what the known orders allow, or a
-- customer in the population whose first order is after as_of. Only the newest period of
-- the run is recomputed: the join is a pass over the orders per period checked, and the
-- running totals make every period equally exposed to a leak.

{{ config(store_failures=true, meta={'dagster': {'ref': {'name': 'customer_features'}}}) }}

with

customer_features as (

    select * from {{ ref('customer_features') }}
    where {{ in_run_periods() }}

),

checked_period as (

    select max(as_of) as as_of
    from customer_features

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

known_orders as (

    select
        checked_period.as_of,
        orders.customer_id,
        max(orders.ordered_on) as last_order_on,
        count(*) as order_count,
        sum(orders.amount) as revenue_to_date,
        count(distinct orders.category) as category_count

    from checked_period
    inner join orders
        on orders.ordered_on <= checked_period.as_of
    group by checked_period.as_of, orders.customer_id

),

checks as (

    select
        customer_features.as_of,
        customer_features.customer_id,
        case
            when known_orders.customer_id is null
                then 'customer in the population has no order on or before as_of (first order is after as_of)'
            when customer_features.days_since_last_order < 0
                then 'days_since_last_order < 0: an order after as_of was used'
            when customer_features.days_since_last_order
                <> {{ dbt.datediff('known_orders.last_order_on', 'customer_features.as_of', 'day') }}
                then 'days_since_last_order differs from the last order on or before as_of'
            when customer_features.total_revenue_30d > known_orders.revenue_to_date
                or customer_features.total_revenue_90d > known_orders.revenue_to_date
                or customer_features.total_revenue_365d > known_orders.revenue_to_date
                then 'revenue exceeds the revenue of orders on or before as_of'
            when customer_features.order_frequency * greatest(customer_features.customer_lifetime_days, 30) / 30.0
                > known_orders.order_count + 1e-9
                then 'order_frequency implies more orders than exist on or before as_of'
            when customer_features.cart_diversity > known_orders.category_count
                then 'cart_diversity exceeds the categories of orders on or before as_of'
            when customer_features.customer_lifetime_days < customer_features.days_since_last_order
                then 'customer_lifetime_days < days_since_last_order'
        end as failure

    from customer_features
    inner join checked_period
        on checked_period.as_of = customer_features.as_of
    left join known_orders
        on known_orders.customer_id = customer_features.customer_id

),

final as (

    select *
    from checks
    where failure is not null

)

select * from final
