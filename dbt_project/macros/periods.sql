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
        (select cast(1 as integer) as bucket, cast(null as date) as as_of where false)
    {%- else -%}
        (select cast(bucket as integer) as bucket, cast(as_of as date) as as_of from (values
        {%- for end in ends %}
            ({{ loop.index }}, date '{{ end }}'){% if not loop.last %},{% endif %}
        {%- endfor %}
        ) as periods (bucket, as_of))
    {%- endif -%}
{%- endmacro %}

{#-
    The bucket of a date: the number of the first listed period ending on or after it
    (n + 1 when it is after every listed period). An order in bucket b is known to
    periods b, b + 1, ...; Postgres' width_bucket binary-searches the sorted period ends,
    Spark (which has no array form of width_bucket) tests them in order.
-#}
{% macro period_bucket(date_expr) -%}
    {%- set ends = churn_period_ends() -%}
    {%- if ends | length == 0 -%}
        1
    {%- else -%}
        {{ adapter.dispatch('period_bucket')(date_expr, ends) }}
    {%- endif -%}
{%- endmacro %}

{% macro default__period_bucket(date_expr, ends) -%}
    (width_bucket({{ date_expr }}, array[
        {%- for end in ends -%}
            date '{{ end }}' + 1{% if not loop.last %}, {% endif %}
        {%- endfor -%}
    ]::date[]) + 1)
{%- endmacro %}

{% macro spark__period_bucket(date_expr, ends) -%}
    (case
        when {{ date_expr }} is null then null
        {%- for end in ends %}
        when {{ date_expr }} <= date '{{ end }}' then {{ loop.index }}
        {%- endfor %}
        else {{ ends | length + 1 }}
    end)
{%- endmacro %}

{#- The last period of the run (a SQL date literal). -#}
{% macro last_period_end_sql() -%}
    {%- set ends = churn_period_ends() -%}
    {%- if ends | length == 0 -%} cast(null as date) {%- else -%} date '{{ ends[-1] }}' {%- endif -%}
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
    are rebuilt. delete+insert (insert_overwrite on Spark) alone replaces only the periods
    present in the new result, so a period that a longer label window no longer labels
    would keep the labels built under the shorter one. On Postgres inside the model's
    transaction: readers see the old rows or the new. Spark's Parquet tables have no
    transactions and no delete: the run's partitions are dropped, and a build that fails
    after the drop leaves those periods empty until it is run again.
-#}
{% macro clear_run_periods() -%}
    {%- if is_incremental() -%}
        {{ adapter.dispatch('clear_run_periods')() }}
    {%- endif -%}
{%- endmacro %}

{% macro default__clear_run_periods() -%}
    delete from {{ this }} where {{ in_run_periods() }}
{%- endmacro %}

{% macro spark__clear_run_periods() -%}
    {%- set ends = churn_period_ends(required=false) -%}
    {%- if ends | length > 0 -%}
        alter table {{ this }} drop if exists
        {%- for end in ends %} partition (as_of = date '{{ end }}'){% if not loop.last %},{% endif %}{% endfor %}
    {%- endif -%}
{%- endmacro %}

{#-
    How a per-period mart is materialised, per engine: one period's rows are replaced, the
    others kept. Postgres: delete+insert on as_of (one transaction), an index on as_of, and
    the model's contract enforced (`contract=true`). Spark: a Parquet table partitioned by
    as_of, rebuilt partitions overwritten (insert_overwrite); the contract is not enforced
    there (see CONTRIBUTING.md, "Two engines", for what checks it instead).
    Use: {{ config(materialized='incremental', **period_mart_config(contract=true)) }}
-#}
{% macro period_mart_config(contract=false) -%}
    {{- return(adapter.dispatch('period_mart_config')(contract)) -}}
{%- endmacro %}

{% macro default__period_mart_config(contract) -%}
    {{- return({
        'incremental_strategy': 'delete+insert',
        'unique_key': 'as_of',
        'indexes': [{'columns': ['as_of']}],
        'contract': {'enforced': contract},
    }) -}}
{%- endmacro %}

{% macro spark__period_mart_config(contract) -%}
    {{- return({
        'incremental_strategy': 'insert_overwrite',
        'partition_by': ['as_of'],
        'file_format': 'parquet',
        'contract': {'enforced': false},
    }) -}}
{%- endmacro %}
