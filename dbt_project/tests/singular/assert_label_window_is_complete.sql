-- The churn label window of the training as_of must be fully observed:
-- training as_of + window_days <= the last order date in the data. Otherwise
-- customers who simply have not had time to reorder would be labelled churned.
-- Returns one row (with a human-readable `failure`) when the window is
-- incomplete; stored in schema test_failures so the message can be read back:
--   select failure from test_failures.assert_label_window_is_complete

{{ config(store_failures=true, meta={'dagster': {'ref': {'name': 'as_of_dates'}}}) }}

with

as_of_dates as (

    select * from {{ ref('as_of_dates') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

training as (

    select
        as_of,
        window_days,
        as_of + window_days as label_window_end

    from as_of_dates
    where purpose = 'training'

),

data_bounds as (

    select max(ordered_on) as last_order_on
    from orders

),

final as (

    select
        training.as_of,
        training.window_days,
        training.label_window_end,
        data_bounds.last_order_on,
        case
            when data_bounds.last_order_on is null
                then 'label window incomplete: there are no orders at all'
            else
                'label window incomplete: training as_of ' || training.as_of
                || ' + ' || training.window_days || ' days = ' || training.label_window_end
                || ' is after the last order date ' || data_bounds.last_order_on
                || '; pick as_of <= ' || (data_bounds.last_order_on - training.window_days)
                || ' (or leave var as_of unset)'
        end as failure

    from training
    cross join data_bounds
    where data_bounds.last_order_on is null
        or training.label_window_end > data_bounds.last_order_on

)

select * from final
