-- The single implementation of the churn features: one row per period and customer.
-- Never re-implement this in Python: training, batch scoring and serving all read it.
--
-- Partitioned by period (as_of = the period end): a run builds the periods of
-- churn_period_ends() (from Dagster, CHURN_PERIOD_ENDS: the run's partition keys) and
-- replaces exactly those periods' rows (delete+insert on as_of, in one transaction); other
-- periods stay untouched (on Spark: insert_overwrite of the run's as_of partitions; see
-- period_mart_config in macros/periods.sql). All the run's periods are computed in one
-- pass over the orders: every order becomes dated "events" (it is known from its period on;
-- its revenue leaves the 30/90/365-day sums 30/90/365 days later), and running totals per
-- customer over the periods give every period's features.
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        **period_mart_config(contract=true)
    )
}}

with

periods as (

    select * from {{ period_values_sql() }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

orders as (

    -- orders after the last period of the run reach none of its features
    select *
    from {{ ref('stg_raw__orders') }}
    where ordered_on <= {{ last_period_end_sql() }}

),

free_email_domains as (

    select * from {{ ref('free_email_domains') }}

),

-- Per order: the period from which it is known (bucket b0), and the periods from which its
-- amount has left each trailing revenue window (bucket bN: ordered_on + N days is no longer
-- in (as_of - N, as_of]). Every feature below is a running total of these events. An
-- order's revenue enters only if it is still inside the window at b0 (bN > b0), and leaves
-- only inside the run (bN <= the last bucket): a one-period run has no leaving events at all.
orders_bucketed as (

    select
        customer_id,
        ordered_on,
        amount,
        {{ period_bucket('ordered_on') }} as b0,
        {{ period_bucket(add_days('ordered_on', 30)) }} as b30,
        {{ period_bucket(add_days('ordered_on', 90)) }} as b90,
        {{ period_bucket(add_days('ordered_on', 365)) }} as b365

    from orders

),

known_events as (

    select
        customer_id,
        b0 as bucket,
        count(*) as orders,
        min(ordered_on) as first_order_on,
        max(ordered_on) as last_order_on,
        coalesce(sum(amount) filter (where b30 > b0), 0) as revenue_30d,
        coalesce(sum(amount) filter (where b90 > b0), 0) as revenue_90d,
        coalesce(sum(amount) filter (where b365 > b0), 0) as revenue_365d

    from orders_bucketed
    group by customer_id, b0

),

leaving_events as (

    select customer_id, b30 as bucket, -amount as revenue_30d,
           cast(0 as {{ numeric_type() }}) as revenue_90d,
           cast(0 as {{ numeric_type() }}) as revenue_365d
    from orders_bucketed
    where b30 > b0 and b30 <= (select max(bucket) from periods)

    union all

    select customer_id, b90, cast(0 as {{ numeric_type() }}), -amount,
           cast(0 as {{ numeric_type() }})
    from orders_bucketed
    where b90 > b0 and b90 <= (select max(bucket) from periods)

    union all

    select customer_id, b365, cast(0 as {{ numeric_type() }}),
           cast(0 as {{ numeric_type() }}), -amount
    from orders_bucketed
    where b365 > b0 and b365 <= (select max(bucket) from periods)

),

order_events as (

    select
        customer_id,
        bucket,
        sum(orders) as orders,
        min(first_order_on) as first_order_on,
        max(last_order_on) as last_order_on,
        sum(revenue_30d) as revenue_30d,
        sum(revenue_90d) as revenue_90d,
        sum(revenue_365d) as revenue_365d

    from (
        select * from known_events
        union all
        select
            customer_id, bucket, 0 as orders, cast(null as date) as first_order_on,
            cast(null as date) as last_order_on, revenue_30d, revenue_90d, revenue_365d
        from leaving_events
    ) as events
    group by customer_id, bucket

),

-- a category counts from the period of its first order
category_events as (

    select
        customer_id,
        {{ period_bucket('first_ordered_on') }} as bucket,
        count(*) as new_categories

    from (
        select customer_id, category, min(ordered_on) as first_ordered_on
        from orders
        where category is not null
        group by customer_id, category
    ) as first_orders
    group by customer_id, bucket

),

-- population: from the period of a customer's first order on
customer_periods as (

    select
        first_buckets.customer_id,
        periods.bucket,
        periods.as_of

    from (
        select customer_id, min(bucket) as first_bucket
        from order_events
        where orders > 0
        group by customer_id
    ) as first_buckets
    inner join periods
        on periods.bucket >= first_buckets.first_bucket

),

running_totals as (

    select
        customer_periods.customer_id,
        customer_periods.as_of,
        sum(coalesce(order_events.orders, 0)) over customer_history as order_count,
        min(order_events.first_order_on) over customer_history as first_order_on,
        max(order_events.last_order_on) over customer_history as last_order_on,
        sum(coalesce(order_events.revenue_30d, 0)) over customer_history as total_revenue_30d,
        sum(coalesce(order_events.revenue_90d, 0)) over customer_history as total_revenue_90d,
        sum(coalesce(order_events.revenue_365d, 0)) over customer_history as total_revenue_365d,
        sum(coalesce(category_events.new_categories, 0)) over customer_history as cart_diversity

    from customer_periods
    left join order_events
        on order_events.customer_id = customer_periods.customer_id
        and order_events.bucket = customer_periods.bucket
    left join category_events
        on category_events.customer_id = customer_periods.customer_id
        and category_events.bucket = customer_periods.bucket
    window customer_history as (
        partition by customer_periods.customer_id
        order by customer_periods.bucket
        rows between unbounded preceding and current row
    )

),

-- a join, not `in (select ...)`: Spark allows no subquery inside a case expression
free_domains as (

    select distinct lower(trim(domain)) as domain
    from free_email_domains

),

email_domain_classes as (

    select
        customers.customer_id,
        case
            when customers.email_domain is null then 'unknown'
            when free_domains.domain is not null then 'free'
            when customers.email_domain like '%.edu'
                or customers.email_domain like '%.ac.%'
                or {{ regexp_matches('customers.email_domain', '\\.edu\\.[a-z]+$') }}
                then 'education'
            else 'business'
        end as email_domain_class

    from customers
    left join free_domains
        on free_domains.domain = customers.email_domain

),

customer_as_of as (

    select
        running_totals.*,
        email_domain_classes.email_domain_class,
        -- least() ignores nulls: a null signup falls back to the first order
        {{ dbt.datediff(
            'least(cast(customers.signup_at as date), running_totals.first_order_on)',
            'running_totals.as_of',
            'day',
        ) }} as customer_lifetime_days

    from running_totals
    inner join customers
        on customers.customer_id = running_totals.customer_id
    inner join email_domain_classes
        on email_domain_classes.customer_id = running_totals.customer_id

),

final as (

    select
        cast(as_of as date) as as_of,
        cast(customer_id as {{ text_type() }}) as customer_id,
        cast({{ dbt.datediff('last_order_on', 'as_of', 'day') }} as integer)
            as days_since_last_order,
        -- trim_scale: a sum reached through entering and leaving events (0.00) and one
        -- that never saw the order (0) are the same value; store it the same way, so a
        -- period's rows are identical whichever run built them
        cast({{ trim_scale('total_revenue_30d') }} as {{ numeric_type() }}) as total_revenue_30d,
        cast({{ trim_scale('total_revenue_90d') }} as {{ numeric_type() }}) as total_revenue_90d,
        cast({{ trim_scale('total_revenue_365d') }} as {{ numeric_type() }})
            as total_revenue_365d,
        -- orders per 30 days; lifetime floored at 30 days so brand-new
        -- customers are not inflated (float arithmetic, like Python's)
        (
            cast(order_count as {{ double_type() }}) * cast(30.0 as {{ double_type() }})
            / cast(greatest(customer_lifetime_days, 30) as {{ double_type() }})
        ) as order_frequency,
        cast(cart_diversity as integer) as cart_diversity,
        cast(email_domain_class as {{ text_type() }}) as email_domain_class,
        cast(customer_lifetime_days as integer) as customer_lifetime_days

    from customer_as_of

)

select * from final
