with

customer_features as (

    select * from {{ ref('customer_features') }}

),

as_of_dates as (

    select * from {{ ref('as_of_dates') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

-- the training population is defined once, by customer_features
training_population as (

    select
        customer_features.customer_id,
        as_of_dates.as_of,
        as_of_dates.window_days

    from customer_features
    inner join as_of_dates
        on as_of_dates.purpose = customer_features.purpose
    where customer_features.purpose = 'training'

),

-- orders strictly after as_of and up to and including as_of + window_days
orders_in_label_window as (

    select
        training_population.customer_id,
        training_population.as_of,
        training_population.window_days,
        count(orders.order_id) as orders_in_window

    from training_population
    left join orders
        on orders.customer_id = training_population.customer_id
        and orders.ordered_on > training_population.as_of
        and orders.ordered_on <= training_population.as_of + training_population.window_days
    group by
        training_population.customer_id,
        training_population.as_of,
        training_population.window_days

),

final as (

    select
        customer_id::text as customer_id,
        as_of::date as as_of,
        window_days::integer as window_days,
        orders_in_window::integer as orders_in_window,
        case when orders_in_window = 0 then 1 else 0 end::integer as churned

    from orders_in_label_window

)

select * from final
