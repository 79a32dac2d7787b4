-- Churn risk summarised by segment (email domain class x tenure bucket): where to look first.

with

customer_360 as (

    select * from {{ ref('customer_360') }}
    where churn_probability is not null

),

final as (

    select
        email_domain_class,
        tenure_bucket,
        count(*) as customers,
        avg(churn_probability) as mean_churn_probability,
        count(*) filter (where risk_band = 'high') as high_risk_customers,
        avg(cast(risk_band = 'high' as integer)) as high_risk_share,
        sum(total_revenue_365d) filter (where risk_band = 'high') as revenue_365d_at_high_risk

    from customer_360
    group by email_domain_class, tenure_bucket

)

select * from final
