-- What the ML reads: training features joined to their labels.
-- No logic here beyond the join; features and labels are computed upstream.

with

customer_features as (

    select * from {{ ref('customer_features') }}

),

churn_labels as (

    select * from {{ ref('churn_labels') }}

),

training_features as (

    select *
    from customer_features
    where purpose = 'training'

),

final as (

    select
        training_features.as_of,
        training_features.customer_id,
        training_features.days_since_last_order,
        training_features.total_revenue_30d,
        training_features.total_revenue_90d,
        training_features.total_revenue_365d,
        training_features.order_frequency,
        training_features.cart_diversity,
        training_features.email_domain_class,
        training_features.customer_lifetime_days,
        churn_labels.churned

    from training_features
    inner join churn_labels
        on churn_labels.customer_id = training_features.customer_id
        and churn_labels.as_of = training_features.as_of

)

select * from final
