{#-
    The periods a dbt invocation builds. Dagster passes them as the partition keys of the
    run in the `CHURN_PERIOD_ENDS` environment variable (comma-separated): one partition, or
    a whole range in a single-run backfill. An environment variable and not a `--vars`
    entry because dbt re-parses the whole project whenever the vars change, and the periods
    change with every run; a changed variable re-parses only the models that read it. By
    hand, either works: a non-empty `--vars '{"period_ends": ["2025-01-31"]}'` wins.
    The period calendar itself (month or week ends, which periods exist) is defined once,
    in `churn_assets/periods.py`.

    Partitioned models compute every listed period in one pass over the orders: each order
    is placed in the first listed period on or after its date (`period_bucket`), and the
    running totals per customer over the listed periods give each period's features.
-#}

{#- The run's period ends, sorted, validated (YYYY-MM-DD strings); `required`: a build of
    the partitioned models without any is an error. -#}
{% macro churn_period_ends(required=true) -%}
    {%- set raw = var('period_ends', []) -%}
    {%- if not raw -%}
        {%- set raw = env_var('CHURN_PERIOD_ENDS', '') -%}
    {%- endif -%}
    {%- if raw is string -%}
        {%- set raw = raw.split(',') if raw | trim else [] -%}
    {%- endif -%}
    {%- set ends = [] -%}
    {%- for value in raw -%}
        {%- set text = value | string | trim -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {{ exceptions.raise_compiler_error(
                "the run's period ends (var 'period_ends' or CHURN_PERIOD_ENDS) must be dates "
                ~ "formatted YYYY-MM-DD, got: '" ~ text ~ "'"
            ) }}
        {%- endif -%}
        {%- do ends.append(text) -%}
    {%- endfor -%}
    {#- Only a build needs periods; `dbt docs generate` or `compile` render no rows. -#}
    {%- if required and execute and ends | length == 0 and flags.WHICH in ('build', 'run') -%}
        {{ exceptions.raise_compiler_error(
            "no period ends: the partitioned models build the periods Dagster passes "
            ~ "(materialise a partition in the UI or run `churn backfill`); by hand: "
            ~ "dbt build --vars '{\"period_ends\": [\"2025-01-31\"]}'"
        ) }}
    {%- endif -%}
    {{- return(ends | unique | sort) -}}
{%- endmacro %}

{#- `(values (1, date 'e1'), (2, date 'e2'), ...)`: the run's periods with their bucket number. -#}
{% macro period_values_sql() -%}
    {%- set ends = churn_period_ends() -%}
    {%- if ends | length == 0 -%}
        (select 1::integer as bucket, null::date as as_of where false)
    {%- else -%}
        (select bucket::integer as bucket, as_of::date as as_of from (values
        {%- for end in ends %}
            ({{ loop.index }}, date '{{ end }}'){% if not loop.last %},{% endif %}
        {%- endfor %}
        ) as periods (bucket, as_of))
    {%- endif -%}
{%- endmacro %}

{#-
    The bucket of a date: the number of the first listed period ending on or after it
    (n + 1 when it is after every listed period). An order in bucket b is known to
    periods b, b + 1, ...; width_bucket binary-searches the sorted period ends.
-#}
{% macro period_bucket(date_expr) -%}
    {%- set ends = churn_period_ends() -%}
    {%- if ends | length == 0 -%}
        1
    {%- else -%}
        (width_bucket({{ date_expr }}, array[
            {%- for end in ends -%}
                date '{{ end }}' + 1{% if not loop.last %}, {% endif %}
            {%- endfor -%}
        ]::date[]) + 1)
    {%- endif -%}
{%- endmacro %}

{#- The last period of the run (a SQL date literal). -#}
{% macro last_period_end_sql() -%}
    {%- set ends = churn_period_ends() -%}
    {%- if ends | length == 0 -%} null::date {%- else -%} date '{{ ends[-1] }}' {%- endif -%}
{%- endmacro %}

{#- `as_of in (...)` for the run's periods; `true` when none are set (tests of an unpartitioned build). -#}
{% macro in_run_periods(column='as_of') -%}
    {%- set ends = churn_period_ends(required=false) -%}
    {%- if ends | length == 0 -%}
        true
    {%- else -%}
        {{ column }} in ({% for end in ends %}date '{{ end }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {%- endif -%}
{%- endmacro %}

{#-
    dbt's hook for the `where` test config, extended: a generic test of a partitioned model
    checks the periods this run built, not the whole table (a one-period run re-tests one
    period; a backfill tests them all). Singular tests call in_run_periods() themselves.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set identifier = relation.identifier if relation.identifier is defined else none -%}
    {%- if identifier in ('customer_features', 'churn_labels', 'training_snapshot')
        and churn_period_ends(required=false) | length > 0 -%}
        {%- set where = in_run_periods() ~ ((' and (' ~ where ~ ')') if where else '') -%}
    {%- endif -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#-
    Pre-hook of the per-period marts that hold labels: empty the run's periods before they
    are rebuilt. delete+insert alone deletes only the periods present in the new result, so
    a period that a longer label window no longer labels would keep the labels built under
    the shorter one. Inside the model's transaction: readers see the old rows or the new.
-#}
{% macro clear_run_periods() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ in_run_periods() }}
    {%- endif -%}
{%- endmacro %}
