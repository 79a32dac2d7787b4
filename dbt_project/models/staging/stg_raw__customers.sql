with

source as (

    select * from {{ source('raw', 'customers') }}

),

renamed as (

    select
        customer_id,
        signup_at,
        nullif(lower(trim(email)), '') as email

    from source

),

final as (

    select
        customer_id,
        signup_at,
        email,
        -- text after the (last) '@'; null when there is no '@' or nothing after it
        nullif({{ regexp_group('email', '@([^@]*)$') }}, '') as email_domain

    from renamed

)

select * from final
