{%- set window_days = churn_window_days() -%}

with

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

data_bounds as (

    select max(ordered_on) as last_order_on
    from orders

),

as_of_by_purpose as (

    -- training: the latest date whose label window is fully observed,
    -- unless pinned with var('as_of')
    select
        'training' as purpose,
        coalesce({{ date_var_sql('as_of') }}, last_order_on - {{ window_days }}) as as_of
    from data_bounds

    union all

    -- scoring: everything we know today, unless pinned with var('scoring_as_of')
    select
        'scoring' as purpose,
        coalesce({{ date_var_sql('scoring_as_of') }}, last_order_on) as as_of
    from data_bounds

),

final as (

    select
        purpose::text as purpose,
        as_of::date as as_of,
        {{ window_days }}::integer as window_days

    from as_of_by_purpose

)

select * from final
