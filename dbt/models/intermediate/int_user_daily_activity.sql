{#-
    One row per (user, business day) with event counts and values: the grain every window feature and label
    is summed from. Incremental by day: a run recomputes only the days its as-of dates can see
    ([min_as_of_date - lookback_days, as_of_date)), so a daily run reads one feature window, not the history.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='activity_date',
    )
}}

with

events as (

    select *
    from {{ ref('stg_shop__events') }}
    where event_date >= {{ dbt.dateadd('day', -var('lookback_days'), min_as_of_date()) }}
      and event_date < {{ as_of_date() }}

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
        count(distinct session_id) + sum(starts_derived_session) as n_sessions
    from sessionised
    group by 1, 2

)

select * from daily
