{#-
    One row per (user, business day) with event counts and values: the grain every window feature and label
    is summed from. Incremental by day: a run recomputes only the days of its window
    ([min_as_of_date - lookback_days, as_of_date)) that are stale, i.e. whose events in staging differ in number
    from the events this table has counted for them (a new day, or late events landed for an old one; events are
    only ever added, never changed, so the count tells). A daily run thus aggregates one new day, not its window.
    A day counted before a column was added (last_event_ts is NULL) is stale too, so an upgrade fills its window.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='activity_date',
        partition_by=partitioned_by_key('activity_date'),
        on_schema_change='append_new_columns',
    )
}}

{%- set window_start = dbt.dateadd('day', -var('lookback_days'), min_as_of_date()) -%}
{%- set counted_columns = (adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list)
                          if is_incremental() else [] -%}

with

{% if is_incremental() %}
stale_days as (

    select s.event_date as activity_date
    from (
        select event_date, count(*) as n_events
        from {{ ref('stg_shop__events') }}
        where {{ event_days_between(window_start, as_of_date()) }}
        group by 1
    ) as s
    left join (
        select
            activity_date,
            sum(n_events) as n_events,
            {#- before the upgrade that added it, the column is not there at all (it is added after this query) #}
            {% if 'last_event_ts' in counted_columns -%}
            sum(case when last_event_ts is null then 1 else 0 end)
            {%- else -%}
            count(*)
            {%- endif %} as rows_before_last_column
        from {{ this }}
        where activity_date >= {{ window_start }} and activity_date < {{ as_of_date() }}
        group by 1
    ) as t
        on t.activity_date = s.event_date
    where t.n_events is distinct from s.n_events or t.rows_before_last_column > 0

),
{% endif %}

events as (

    -- the stale days, and the day before each: a derived session may have started before midnight
    select *
    from {{ ref('stg_shop__events') }}
    where {{ event_days_between(dbt.dateadd('day', -1, window_start), as_of_date()) }}
    {% if is_incremental() %}
      and (event_date in (select activity_date from stale_days)
           or {{ dbt.dateadd('day', 1, 'event_date') }} in (select activity_date from stale_days))
    {% endif %}

),

sessionised as (

    -- where the source has no session id, a new session starts after a gap of session_gap_minutes
    select
        *,
        case
            when session_id is not null then 0
            when lag(event_ts_utc) over (partition by user_id order by event_ts_utc) is null then 1
            when {{ dbt.datediff('lag(event_ts_utc) over (partition by user_id order by event_ts_utc)',
                                 'event_ts_utc', 'minute') }} > {{ var('session_gap_minutes') }} then 1
            else 0
        end as starts_derived_session
    from events

),

daily as (

    select
        user_id,
        event_date as activity_date,
        count(*) as n_events,
        {% for event_type in var('event_types') -%}
        count(*) filter (where event_type = '{{ event_type }}') as n_{{ event_type }},
        {% endfor -%}
        coalesce(sum(purchase_revenue), 0) as purchase_revenue,
        cast(count(distinct session_id) + sum(starts_derived_session) as bigint) as n_sessions,
        -- prices of what the user looked at and carted (their mean and maximum over a window; NULL when unknown)
        {% for event_type in ['view', 'cart'] -%}
        sum(case when event_type = '{{ event_type }}' then price end) as {{ event_type }}_price_sum,
        count(case when event_type = '{{ event_type }}' then price end) as {{ event_type }}_price_n,
        max(case when event_type = '{{ event_type }}' then price end) as {{ event_type }}_price_max,
        {% endfor -%}
        -- when in the business day the user acts: hour-of-day habits
        cast(sum(extract(hour from event_ts_local)) as bigint) as event_hour_sum,
        count(case when extract(hour from event_ts_local) >= 18 then 1 end) as n_evening_events,
        count(case when extract(hour from event_ts_local) < 6 then 1 end) as n_night_events,
        -- the last moments of the day (business time), for hours since the last event of a kind
        {% for event_type in ['view', 'cart', 'checkout'] -%}
        max(case when event_type = '{{ event_type }}' then event_ts_local end) as last_{{ event_type }}_ts,
        {% endfor -%}
        max(event_ts_local) as last_event_ts
    from sessionised
    where event_date >= {{ window_start }}
    {% if is_incremental() %}
      and event_date in (select activity_date from stale_days)
    {% endif %}
    group by 1, 2

)

select * from daily
