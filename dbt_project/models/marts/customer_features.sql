-- The single implementation of the churn features, for every purpose at once
-- (training and scoring differ only in their as_of). Never re-implement this
-- in Python: training and serving both read this table.

with

as_of_dates as (

    select * from {{ ref('as_of_dates') }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

free_email_domains as (

    select * from {{ ref('free_email_domains') }}

),

-- the only place orders meet as_of: everything below sees orders on or
-- before that purpose's as_of and nothing later (no label leakage)
orders_known_at_as_of as (

    select
        as_of_dates.purpose,
        as_of_dates.as_of,
        orders.customer_id,
        orders.ordered_on,
        orders.amount,
        orders.category

    from as_of_dates
    inner join orders
        on orders.ordered_on <= as_of_dates.as_of

),

order_aggregates as (

    select
        purpose,
        as_of,
        customer_id,
        min(ordered_on) as first_order_on,
        max(ordered_on) as last_order_on,
        count(*) as order_count,
        -- revenue in the trailing N days: ordered_on in (as_of - N, as_of]
        coalesce(sum(amount) filter (where ordered_on > as_of - 30), 0) as total_revenue_30d,
        coalesce(sum(amount) filter (where ordered_on > as_of - 90), 0) as total_revenue_90d,
        coalesce(sum(amount) filter (where ordered_on > as_of - 365), 0) as total_revenue_365d,
        count(distinct category) as cart_diversity

    from orders_known_at_as_of
    group by purpose, as_of, customer_id

),

email_domain_classes as (

    select
        customer_id,
        case
            when email_domain is null then 'unknown'
            when email_domain in (select lower(trim(domain)) from free_email_domains) then 'free'
            when email_domain like '%.edu'
                or email_domain like '%.ac.%'
                or email_domain ~ '\.edu\.[a-z]+$'
                then 'education'
            else 'business'
        end as email_domain_class

    from customers

),

-- population: customers with at least one order on or before as_of
customer_as_of as (

    select
        order_aggregates.*,
        email_domain_classes.email_domain_class,
        -- least() ignores nulls: a null signup falls back to the first order
        order_aggregates.as_of
            - least(customers.signup_at::date, order_aggregates.first_order_on)
            as customer_lifetime_days

    from order_aggregates
    inner join customers
        on customers.customer_id = order_aggregates.customer_id
    inner join email_domain_classes
        on email_domain_classes.customer_id = order_aggregates.customer_id

),

final as (

    select
        purpose::text as purpose,
        as_of::date as as_of,
        customer_id::text as customer_id,
        (as_of - last_order_on)::integer as days_since_last_order,
        total_revenue_30d::numeric as total_revenue_30d,
        total_revenue_90d::numeric as total_revenue_90d,
        total_revenue_365d::numeric as total_revenue_365d,
        -- orders per 30 days; lifetime floored at 30 days so brand-new
        -- customers are not inflated (float arithmetic, like Python's)
        (
            order_count::double precision * 30.0::double precision
            / greatest(customer_lifetime_days, 30)::double precision
        ) as order_frequency,
        cart_diversity::integer as cart_diversity,
        email_domain_class::text as email_domain_class,
        customer_lifetime_days::integer as customer_lifetime_days

    from customer_as_of

)

select * from final
