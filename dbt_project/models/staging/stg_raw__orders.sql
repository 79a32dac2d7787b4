with

source as (

    select * from {{ source('raw', 'orders') }}

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        cast(ordered_at as date) as ordered_on,
        cast(amount as {{ numeric_type() }}) as amount,
        -- an order has at least one item; unknown counts default to 1
        cast(coalesce(item_count, 1) as integer) as item_count,
        nullif(lower(trim(category)), '') as category

    from source

)

select * from final
