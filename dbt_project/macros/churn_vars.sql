{#-
    Read the project's vars safely. Every dbt step Dagster runs (churn_assets/defs/dbt/
    assets.py, its arguments built in churn_assets/lib/dbt.py) passes one var, the same for
    every step of a run:
        --vars '{"churn_window_days": <window_days of the run's `labels` resource>}'
    that is CHURN_WINDOW_DAYS unless the launchpad overrides the resource for the run; the
    training steps read the same resource, so the labels and the cohorts agree.
    The periods are not a var: Dagster passes the period keys of the run's partition range
    in the CHURN_PERIOD_ENDS environment variable (see periods.sql for why); read them with
    churn_period_ends(), which also takes a `period_ends` var by hand.
-#}

{#- The churn label window length in days, validated as a positive integer. The default
    (90, as in dbt_project.yml) only applies by hand: Dagster always passes the var. -#}
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
