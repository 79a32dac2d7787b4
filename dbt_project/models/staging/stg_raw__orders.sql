with

source as (

    select * from {{ source('raw', 'orders') }}

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        ordered_at::date as ordered_on,
        amount::numeric as amount,
        -- an order has at least one item; unknown counts default to 1
        coalesce(item_count, 1)::integer as item_count,
        nullif(lower(trim(category)), '') as category

    from source

)

select * from final
