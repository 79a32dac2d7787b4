{#-
    Read the project's vars safely. Every dbt step Dagster runs (churn_assets/defs/dbt/
    assets.py, its arguments built in churn_assets/lib/dbt.py) passes the same vars, for
    every step of a run:
        --vars '{"churn_window_days": <window_days of the run's `labels` resource>,
                 "retention_margin": .., "retention_save_rate": .., "retention_contact_cost": ..}'
    the window is CHURN_WINDOW_DAYS unless the launchpad overrides the resource for the run
    (the training steps read the same resource, so the labels and the cohorts agree); the
    retention numbers are the run's `policy` resource's (CHURN_RETENTION_*).
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

{#- A policy number Dagster passes in --vars (retention_margin, retention_save_rate,
    retention_contact_cost; see dbt_project.yml), validated as a non-negative number (the
    policy checks its range before it gets here), as a double literal. -#}
{% macro policy_number(name) -%}
    {%- set text = var(name) | string | trim -%}
    {%- if not modules.re.match('^[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$', text) -%}
        {{ exceptions.raise_compiler_error(
            "var '" ~ name ~ "' must be a non-negative number, got: '" ~ text ~ "'"
        ) }}
    {%- endif -%}
    cast({{ text }} as {{ double_type() }})
{%- endmacro %}
