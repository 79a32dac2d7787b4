-- Churn labels per period: for each customer in a period's population, did they order in
-- the label window (as_of, as_of + window_days]? Only periods whose window has closed in
-- the data (as_of + window_days <= the last order date) get labels: before that, a silent
-- customer may simply not have had time to reorder. Partitioned like customer_features.
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        pre_hook="{{ clear_run_periods() }}",
        **period_mart_config()
    )
}}

{%- set window_days = churn_window_days() %}

with

periods as (

    select * from {{ period_values_sql() }}

),

customer_features as (

    select * from {{ ref('customer_features') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

data_bounds as (

    select max(ordered_on) as last_order_on
    from orders

),

labelled_periods as (

    select periods.bucket, periods.as_of
    from periods
    cross join data_bounds
    where {{ add_days('periods.as_of', window_days) }} <= data_bounds.last_order_on

),

population as (

    select customer_features.customer_id, labelled_periods.bucket, labelled_periods.as_of
    from customer_features
    inner join labelled_periods
        on labelled_periods.as_of = customer_features.as_of

),

-- An order on day d is in the label window of the periods p with d - window <= p < d:
-- buckets period_bucket(d - window) .. period_bucket(d) - 1. One pass over the orders,
-- each order expanded to the (few) periods whose window it falls in.
orders_in_windows as (

    select
        orders.customer_id,
        windows.bucket,
        count(*) as orders_in_window

    from orders
    {{ join_int_series(
        period_bucket(add_days('orders.ordered_on', '-' ~ window_days)),
        period_bucket('orders.ordered_on') ~ ' - 1',
        'windows',
        'bucket',
    ) }}
    group by orders.customer_id, windows.bucket

),

final as (

    select
        cast(population.customer_id as {{ text_type() }}) as customer_id,
        cast(population.as_of as date) as as_of,
        cast({{ window_days }} as integer) as window_days,
        cast(coalesce(orders_in_windows.orders_in_window, 0) as integer) as orders_in_window,
        cast(case when orders_in_windows.orders_in_window is null then 1 else 0 end as integer)
            as churned

    from population
    left join orders_in_windows
        on orders_in_windows.customer_id = population.customer_id
        and orders_in_windows.bucket = population.bucket

)

select * from final
