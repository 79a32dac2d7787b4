{#-
    Use a model's custom schema as-is instead of dbt's default
    "<target_schema>_<custom_schema>".

    Why: the warehouse layout is a contract with its readers. Analysts write
    `select * from marts.customer_features`, and the Python side (training,
    serving, Great Expectations) reads `marts.training_snapshot` without knowing
    which dbt target built it. dbt's default would produce `analytics_marts`,
    and the name would change with CHURN_PG_SCHEMA.

    Consequence: targets are isolated by database (CHURN_PG_DATABASE), not by
    schema prefix. Never point two targets at the same database.

    Resources without a custom schema fall back to the target schema
    (CHURN_PG_SCHEMA, default `analytics`).
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
