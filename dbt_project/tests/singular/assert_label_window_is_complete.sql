-- A label needs its whole window observed: as_of + window_days <= the last order date in
-- the data. Otherwise customers who simply have not had time to reorder would be labelled
-- churned. churn_labels only labels such periods; this proves it for the run's periods.
-- Returns one row per offending period (with a human-readable `failure`), stored in schema
-- test_failures so the message can be read back:
--   select failure from test_failures.assert_label_window_is_complete

{{ config(store_failures=true, meta={'dagster': {'ref': {'name': 'churn_labels'}}}) }}

with

churn_labels as (

    select * from {{ ref('churn_labels') }}
    where {{ in_run_periods() }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

data_bounds as (

    select max(ordered_on) as last_order_on
    from orders

),

labelled_periods as (

    select as_of, max(window_days) as window_days, count(*) as customers
    from churn_labels
    group by as_of

),

final as (

    select
        labelled_periods.as_of,
        labelled_periods.window_days,
        {{ add_days('labelled_periods.as_of', 'labelled_periods.window_days') }}
            as label_window_end,
        data_bounds.last_order_on,
        'label window incomplete: period ' || labelled_periods.as_of || ' + '
        || labelled_periods.window_days || ' days = '
        || {{ add_days('labelled_periods.as_of', 'labelled_periods.window_days') }}
        || ' is after the last order date '
        || coalesce(cast(data_bounds.last_order_on as {{ text_type() }}), 'none')
        || ' but ' || labelled_periods.customers || ' customers were labelled' as failure

    from labelled_periods
    cross join data_bounds
    where data_bounds.last_order_on is null
        or {{ add_days('labelled_periods.as_of', 'labelled_periods.window_days') }}
            > data_bounds.last_order_on

)

select * from final
