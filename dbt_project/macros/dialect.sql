{#-
    The few places where Postgres and Spark SQL differ, one small macro each, dispatched on
    the target's adapter (`postgres__` / `spark__`; `default__` is the Postgres form). Models
    call these instead of writing either dialect, so one copy of every model builds on both
    engines. dbt's own cross-database macros are used where they fit (`dbt.datediff` for a
    number of days); `dbt.dateadd` does not: it returns a timestamp on both engines, and
    Spark's raises on a null date.

    Types: Postgres `text`, `double precision` and unbounded `numeric` are Spark `string`,
    `double` and `decimal(38, 10)` (Spark's bare `decimal` is `decimal(10, 0)`). Money on
    Spark keeps 10 decimal places: amounts with more are rounded there, and sums stay
    exact below 10^28.
-#}

{% macro text_type() -%}
    {{- return(adapter.dispatch('text_type')()) -}}
{%- endmacro %}
{% macro default__text_type() -%} text {%- endmacro %}
{% macro spark__text_type() -%} string {%- endmacro %}

{% macro double_type() -%}
    {{- return(adapter.dispatch('double_type')()) -}}
{%- endmacro %}
{% macro default__double_type() -%} double precision {%- endmacro %}
{% macro spark__double_type() -%} double {%- endmacro %}

{% macro numeric_type() -%}
    {{- return(adapter.dispatch('numeric_type')()) -}}
{%- endmacro %}
{% macro default__numeric_type() -%} numeric {%- endmacro %}
{% macro spark__numeric_type() -%} decimal(38, 10) {%- endmacro %}

{#- A date `days` days after `date_expr` (a date, not a timestamp; `days` may be negative). -#}
{% macro add_days(date_expr, days) -%}
    {{- return(adapter.dispatch('add_days')(date_expr, days)) -}}
{%- endmacro %}
{% macro default__add_days(date_expr, days) -%} ({{ date_expr }} + {{ days }}) {%- endmacro %}
{% macro spark__add_days(date_expr, days) -%} date_add({{ date_expr }}, {{ days }}) {%- endmacro %}

{#-
    Regular expressions, written as Postgres reads them. Spark unescapes backslashes in a
    string literal before the regex engine sees them ('\.' would become '.', any
    character), so its forms double them.
-#}
{#- Whether `expr` matches `pattern` (null when `expr` is null). -#}
{% macro regexp_matches(expr, pattern) -%}
    {{- return(adapter.dispatch('regexp_matches')(expr, pattern)) -}}
{%- endmacro %}
{% macro default__regexp_matches(expr, pattern) -%}
    ({{ expr }} ~ '{{ pattern }}')
{%- endmacro %}
{% macro spark__regexp_matches(expr, pattern) -%}
    ({{ expr }} rlike '{{ pattern | replace("\\", "\\\\") }}')
{%- endmacro %}

{#- The first capture group of `pattern` in `expr`; no match gives null on Postgres and ''
    on Spark, so callers wrap it in nullif(..., ''). -#}
{% macro regexp_group(expr, pattern) -%}
    {{- return(adapter.dispatch('regexp_group')(expr, pattern)) -}}
{%- endmacro %}
{% macro default__regexp_group(expr, pattern) -%}
    substring({{ expr }} from '{{ pattern }}')
{%- endmacro %}
{% macro spark__regexp_group(expr, pattern) -%}
    regexp_extract({{ expr }}, '{{ pattern | replace("\\", "\\\\") }}', 1)
{%- endmacro %}

{#- A decimal without trailing zeros, so equal sums are stored alike whatever path reached
    them (Postgres numeric keeps the scale of its inputs). Spark's decimal has a fixed
    scale: nothing to trim. -#}
{% macro trim_scale(expr) -%}
    {{- return(adapter.dispatch('trim_scale')(expr)) -}}
{%- endmacro %}
{% macro default__trim_scale(expr) -%} trim_scale({{ expr }}) {%- endmacro %}
{% macro spark__trim_scale(expr) -%} {{ expr }} {%- endmacro %}

{#-
    A join that repeats each row once per integer in [start, stop] (none when stop < start),
    the integer in `alias.column`. Spark's sequence() counts down when stop < start, hence
    the empty array there.
-#}
{% macro join_int_series(start, stop, alias, column) -%}
    {{- return(adapter.dispatch('join_int_series')(start, stop, alias, column)) -}}
{%- endmacro %}
{% macro default__join_int_series(start, stop, alias, column) -%}
    cross join lateral generate_series({{ start }}, {{ stop }}) as {{ alias }} ({{ column }})
{%- endmacro %}
{% macro spark__join_int_series(start, stop, alias, column) -%}
    lateral view explode(
        if(({{ start }}) <= ({{ stop }}), sequence({{ start }}, {{ stop }}), array())
    ) {{ alias }} as {{ column }}
{%- endmacro %}
