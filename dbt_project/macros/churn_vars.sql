{#-
    Read the project's vars safely. Dagster passes them on the command line as JSON
    (`--vars '{"period_ends": ["2025-09-30"], "churn_window_days": 90}'`); the period
    vars are read in periods.sql.
-#}

{#- The churn label window length in days, validated as a positive integer. -#}
{% macro churn_window_days() -%}
    {%- set raw = var('churn_window_days', 90) -%}
    {%- set text = raw | string | trim -%}
    {%- if not modules.re.match('^[0-9]+$', text) or (text | int) < 1 -%}
        {{ exceptions.raise_compiler_error(
            "var 'churn_window_days' must be a positive integer, got: '" ~ text ~ "'"
        ) }}
    {%- endif -%}
    {{- text | int -}}
{%- endmacro %}
