{#-
    Read the project's date/int vars safely. Dagster passes them on the command
    line as JSON (`--vars '{"as_of": "2025-10-02", "churn_window_days": 90}'`),
    so dates arrive as strings; YAML-style vars may arrive as date objects.
-#}

{#- SQL literal for a date var: `date 'YYYY-MM-DD'`, or `null::date` when unset. -#}
{% macro date_var_sql(var_name) -%}
    {%- set raw = var(var_name, none) -%}
    {%- if raw is none or (raw | string | trim | lower) in ('', 'none', 'null') -%}
        null::date
    {%- else -%}
        {%- set text = raw | string | trim -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T].*)?$', text) -%}
            {{ exceptions.raise_compiler_error(
                "var '" ~ var_name ~ "' must be a date formatted YYYY-MM-DD (or null), got: '" ~ text ~ "'"
            ) }}
        {%- endif -%}
        {#- Reject impossible dates (2025-02-30) here, with the var's name in the message. -#}
        {%- set y, m, d = text[:4] | int, text[5:7] | int, text[8:10] | int -%}
        {%- set days_in_month = none -%}
        {%- if 1 <= y and 1 <= m <= 12 -%}
            {%- set first_of_next = modules.datetime.date(y + 1, 1, 1) if m == 12 else modules.datetime.date(y, m + 1, 1) -%}
            {%- set days_in_month = (first_of_next - modules.datetime.date(y, m, 1)).days -%}
        {%- endif -%}
        {%- if days_in_month is none or not (1 <= d <= days_in_month) -%}
            {{ exceptions.raise_compiler_error(
                "var '" ~ var_name ~ "' is not a valid calendar date: '" ~ text ~ "'"
            ) }}
        {%- endif -%}
        date '{{ text[:10] }}'
    {%- endif -%}
{%- endmacro %}

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
