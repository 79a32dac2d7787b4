-- The online scorer's predictions judged like the batch scores: each prediction made for
-- a customer id, beside what that customer then did. The label of a prediction is the
-- customer's label for the period whose features the scorer used (features_as_of), so a
-- prediction appears once that period's label window has closed. Requests that sent their
-- own features (no customer id, no features_as_of) have no label and never appear.
--
-- A view: the scorer appends to the log all the time, outside Dagster, so a table would be
-- stale a second after it was built. It is (re)created in the analytics run with the other
-- analyst tables (the depends_on below puts it there, after customer_360), which also brings
-- it back if a full refresh of churn_labels dropped it (Postgres drops dependent views).
-- depends_on: {{ ref('customer_360') }}
{{ config(materialized='view') }}

with

online_predictions as (

    select * from {{ source('scoring', 'online_predictions') }}

),

churn_labels as (

    select * from {{ ref('churn_labels') }}

),

by_customer as (

    select
        request_id,
        batch_item,
        scored_at,
        customer_id,
        cast(features_as_of as date) as as_of,
        served_by,
        model_version,
        churn_probability,
        risk_band,
        shadow_model_version,
        shadow_probability

    from online_predictions
    where customer_id is not null and features_as_of is not null

),

final as (

    select
        by_customer.request_id,
        by_customer.batch_item,
        by_customer.scored_at,
        by_customer.customer_id,
        by_customer.as_of,
        by_customer.served_by,
        by_customer.model_version,
        by_customer.churn_probability,
        by_customer.risk_band,
        by_customer.shadow_model_version,
        by_customer.shadow_probability,
        churn_labels.churned

    from by_customer
    inner join churn_labels
        on churn_labels.customer_id = by_customer.customer_id
        and churn_labels.as_of = by_customer.as_of

)

select * from final
