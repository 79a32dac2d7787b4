{#-
    Fails for every non-null value outside [min_value, max_value]
    (or (min_value, max_value) when inclusive=false). Either bound may be
    omitted; nulls are left to not_null.

    data_tests:
      - accepted_range:
          arguments:
            min_value: 0
            max_value: 1
            inclusive: true
-#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}

    {%- if min_value is none and max_value is none -%}
        {{ exceptions.raise_compiler_error("accepted_range needs min_value and/or max_value") }}
    {%- endif -%}

    {%- set lower_op = '>=' if inclusive else '>' -%}
    {%- set upper_op = '<=' if inclusive else '<' -%}

with

validation as (

    select {{ column_name }} as value
    from {{ model }}

),

errors as (

    select value
    from validation
    where value is not null
      and not (
        true
        {%- if min_value is not none %}
        and value {{ lower_op }} {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        and value {{ upper_op }} {{ max_value }}
        {%- endif %}
      )

)

select * from errors

{% endtest %}
