{#- The few constructs DuckDB and Spark spell differently, dispatched by adapter (default: DuckDB's). Each model is
    written once; docs/scale_out.md lists what differs and why. -#}

{#- A relation of the integers first..last (inclusive) in one column: select ... from {{ integer_series(...) }}. -#}
{% macro integer_series(first, last, column, alias='series') -%}
    {{ return(adapter.dispatch('integer_series')(first, last, column, alias)) }}
{%- endmacro %}

{% macro default__integer_series(first, last, column, alias) -%}
    range({{ first }}, {{ last }} + 1) as {{ alias }}({{ column }})
{%- endmacro %}

{% macro spark__integer_series(first, last, column, alias) -%}
    (select explode(sequence({{ first }}, {{ last }})) as {{ column }}) as {{ alias }}
{%- endmacro %}

{#- One row per day from first to last (inclusive), two SQL date expressions, in a date column. -#}
{% macro date_series(first, last, column) -%}
    {{ return(adapter.dispatch('date_series')(first, last, column)) }}
{%- endmacro %}

{% macro default__date_series(first, last, column) -%}
    select cast(range as date) as {{ column }}
    from range({{ first }}, {{ dbt.dateadd('day', 1, last) }}, interval 1 day)
{%- endmacro %}

{% macro spark__date_series(first, last, column) -%}
    select explode(sequence({{ first }}, {{ last }}, interval 1 day)) as {{ column }}
{%- endmacro %}

{#- How an incremental model replaces the dates (or days) a run recomputes: DuckDB deletes the rows of the model's
    key and inserts the new ones; Spark's Parquet tables cannot delete rows, so they are partitioned by that key and
    the run's partitions are overwritten whole (dynamic partition overwrite). The same rows either way. -#}
{% macro replace_by_key_strategy() -%}
    {{ return('insert_overwrite' if target.type == 'spark' else 'delete+insert') }}
{%- endmacro %}

{% macro partitioned_by_key(column) -%}
    {{ return([column] if target.type == 'spark' else none) }}
{%- endmacro %}

{#- The post-hook that drops a model's as-of dates older than the run's, except those named in the run var
    ``kept_var`` (the training cutoffs a later run reads again). -#}
{% macro prune_as_of_dates(kept_var) -%}
    {{ return(adapter.dispatch('prune_as_of_dates')(kept_var)) }}
{%- endmacro %}

{% macro default__prune_as_of_dates(kept_var) -%}
    delete from {{ this }} where as_of_date < {{ min_as_of_date() }}
    {%- for day in (run_var(kept_var) or []) %} and as_of_date <> {{ _iso_date(day, kept_var) }}{% endfor %}
{%- endmacro %}

{% macro spark__prune_as_of_dates(kept_var) -%}
    {#- partitions are dropped, not rows deleted: the older dates are listed first -#}
    {%- set kept = run_var(kept_var) or [] -%}
    {%- set dropped = [] -%}
    {%- set older = run_query("select distinct cast(as_of_date as string) from " ~ this
                              ~ " where as_of_date < " ~ min_as_of_date()) if execute else none -%}
    {%- for row in (older.rows if older else []) if row[0] not in kept -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', row[0]) -%}
            {{ exceptions.raise_compiler_error("not an ISO date in " ~ this ~ ".as_of_date: " ~ row[0]) }}
        {%- endif -%}
        {#- a partition spec takes a literal, not an expression -#}
        {%- do dropped.append("partition (as_of_date = '" ~ row[0] ~ "')") -%}
    {%- endfor -%}
    {%- if dropped -%}
    alter table {{ this }} drop if exists {{ dropped | join(', ') }}
    {%- else -%}
    select 1 as nothing_to_drop
    {%- endif -%}
{%- endmacro %}
