{#-
    Fails for every combination of the given columns that appears more than
    once: the model-level uniqueness test for a composite primary key.

    data_tests:
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [as_of, customer_id]
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    {%- if combination_of_columns is string or combination_of_columns | length == 0 -%}
        {{ exceptions.raise_compiler_error("unique_combination_of_columns needs a non-empty list of columns") }}
    {%- endif -%}

    {%- set columns_csv = combination_of_columns | join(', ') -%}

with

duplicates as (

    select
        {{ columns_csv }},
        count(*) as n_rows
    from {{ model }}
    group by {{ columns_csv }}
    having count(*) > 1

)

select * from duplicates

{% endtest %}
