{#- A value each run decides: its dates, its training windows, the older dates a mart keeps. shopcast passes them in
    the environment (DBT_SHOPCAST_RUN_VARS, JSON), read only when dbt executes, not as --vars: dbt re-parses the whole
    project whenever --vars change (~3.5 s an invocation, measured), while these values never change what dbt parses.
    By hand, --vars works as for any var (the environment variable is unset). -#}
{% macro run_var(name, default=none) -%}
    {%- if execute -%}
        {%- set run_vars = fromjson(env_var('DBT_SHOPCAST_RUN_VARS', '{}')) -%}
        {%- if name in run_vars -%}
            {{- return(run_vars[name]) -}}
        {%- endif -%}
    {%- endif -%}
    {{- return(var(name, default)) -}}
{%- endmacro %}

{#- The run's dates. Every date that reaches SQL is checked to be an ISO date first. -#}
{% macro _iso_date(value, name) -%}
    {%- set text = value | string -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be an ISO date YYYY-MM-DD, got: " ~ text) }}
    {%- endif -%}
    cast('{{ text }}' as date)
{%- endmacro %}

{% macro as_of_date() -%}
    {{ _iso_date(run_var('as_of_date'), 'as_of_date') }}
{%- endmacro %}

{% macro min_as_of_date() -%}
    {{ _iso_date(run_var('min_as_of_date') or run_var('as_of_date'), 'min_as_of_date') }}
{%- endmacro %}

{#- One row per as-of date of the run: every date from min_as_of_date to as_of_date, or, when var as_of_dates
    lists them (a run that needs only some dates of its range, such as the weekly training cutoffs), those. -#}
{% macro as_of_date_spine() -%}
    {%- if run_var('as_of_dates') -%}
    select as_of_date from (values
        {%- for day in run_var('as_of_dates') %}
        ({{ _iso_date(day, 'as_of_dates') }}){{ "," if not loop.last }}
        {%- endfor %}
    ) as t(as_of_date)
    {%- else -%}
    {{ date_series(min_as_of_date(), as_of_date(), 'as_of_date') }}
    {%- endif -%}
{%- endmacro %}

{#- True for the rows of the run's as-of dates (see as_of_date_spine). -#}
{% macro is_run_as_of_date(column) -%}
    {%- if run_var('as_of_dates') -%}
    {{ column }} in ({% for day in run_var('as_of_dates') %}{{ _iso_date(day, 'as_of_dates') }}{{ ", " if not loop.last }}{% endfor %})
    {%- else -%}
    {{ column }} between {{ min_as_of_date() }} and {{ as_of_date() }}
    {%- endif -%}
{%- endmacro %}

{#- Raw timestamps are UTC; business days follow var business_timezone. -#}
{% macro to_business_time(column) -%}
    {%- set tz = var('business_timezone') -%}
    {%- if not modules.re.match('^[A-Za-z0-9_+/-]+$', tz) -%}
        {{ exceptions.raise_compiler_error("var business_timezone is not a time zone name: " ~ tz) }}
    {%- endif -%}
    {%- if tz == 'UTC' -%}
        {{ column }}
    {%- else -%}
        {{ return(adapter.dispatch('utc_to_zone')(column, tz)) }}
    {%- endif -%}
{%- endmacro %}

{#- A UTC timestamp as wall-clock time in zone tz (the engines spell it differently). -#}
{% macro default__utc_to_zone(column, tz) -%}
    cast(({{ column }} at time zone 'UTC') at time zone '{{ tz }}' as timestamp)
{%- endmacro %}

{% macro spark__utc_to_zone(column, tz) -%}
    from_utc_timestamp({{ column }}, '{{ tz }}')
{%- endmacro %}

{#- Whole days from an earlier date to a later one. -#}
{% macro days_between(earlier, later) -%}
    {{ dbt.datediff(earlier, later, 'day') }}
{%- endmacro %}

{#- Events (of stg_shop__events) on business days [first, last), two SQL date expressions. Besides the business
    day, the raw UTC timestamp is bounded too, widened by a day (any time zone's offset is less): DuckDB checks that
    against each row group's min/max, and so skips the history instead of computing every event's business day. -#}
{% macro event_days_between(first, last) -%}
    (event_ts_utc >= cast({{ first }} as timestamp) - interval 1 day
     and event_ts_utc < cast({{ last }} as timestamp) + interval 1 day
     and event_date >= {{ first }} and event_date < {{ last }})
{%- endmacro %}

{#- ISO day of the week of a date: 1 = Monday .. 7 = Sunday (the engines name it differently). -#}
{% macro iso_weekday(expr) -%}
    {{ return(adapter.dispatch('iso_weekday')(expr)) }}
{%- endmacro %}

{% macro default__iso_weekday(expr) -%}
    extract(isodow from {{ expr }})
{%- endmacro %}

{% macro spark__iso_weekday(expr) -%}
    extract(dayofweek_iso from {{ expr }})
{%- endmacro %}
