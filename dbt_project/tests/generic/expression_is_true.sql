{#-
    Fails for every row where the SQL expression is not true (false or null).
    At column level the column name is prefixed to the expression:

    columns:
      - name: total_revenue_90d
        data_tests:
          - expression_is_true:
              arguments:
                expression: ">= total_revenue_30d"
-#}
{% test expression_is_true(model, expression, column_name=none) %}

with

errors as (

    select *
    from {{ model }}
    where not coalesce(({{ column_name ~ ' ' if column_name is not none }}{{ expression }}), false)

)

select * from errors

{% endtest %}
