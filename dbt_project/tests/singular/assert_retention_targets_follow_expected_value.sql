-- analytics.retention_targets ranks customers by expected value saved: rank 1 is worth the
-- most, and the expected value never rises as the rank grows. Returns one row per rank
-- that breaks the order, or one row when the ranks are not exactly 1..customers.

{{ config(store_failures=true, meta={'dagster': {'ref': {'name': 'retention_targets'}}}) }}

with

retention_targets as (

    select * from {{ ref('retention_targets') }}

),

ordered as (

    select
        contact_rank,
        customer_id,
        expected_value_saved,
        lag(expected_value_saved) over (order by contact_rank) as previous_expected_value

    from retention_targets

),

rank_range as (

    select count(*) as customers, min(contact_rank) as first_rank, max(contact_rank) as last_rank
    from retention_targets

),

out_of_order as (

    select
        contact_rank,
        'contact_rank ' || cast(contact_rank as {{ text_type() }}) || ' (' || customer_id
        || ') has expected value ' || cast(expected_value_saved as {{ text_type() }})
        || ', more than the rank before it (' || cast(previous_expected_value as {{ text_type() }})
        || ')' as failure

    from ordered
    where expected_value_saved > previous_expected_value

),

gaps as (

    select
        cast(null as integer) as contact_rank,
        'contact_rank runs from ' || cast(first_rank as {{ text_type() }}) || ' to '
        || cast(last_rank as {{ text_type() }}) || ' over '
        || cast(customers as {{ text_type() }}) || ' customers, not from 1 to their number'
        as failure

    from rank_range
    where customers > 0 and (first_rank <> 1 or last_rank <> customers)

),

final as (

    select * from out_of_order
    union all
    select * from gaps

)

select * from final
