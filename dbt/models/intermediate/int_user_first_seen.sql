{#-
    Each user's first business day with an event. Leakage-free for any as-of date at which the user is in the
    population: such a user has an event before it, so the minimum is before it too.
    Incremental: the first build reads the whole history once; later builds read only the daily activity of the
    run's window (a far smaller grain than events) and write the users seen for the first time, or earlier than
    recorded (late events). On Spark, whose Parquet tables cannot replace rows by user, it is rebuilt whole (one
    distributed aggregation of the events; the same rows).
-#}
-- depends_on: {{ ref('int_user_daily_activity') }}
{{
    config(
        materialized='table' if target.type == 'spark' else 'incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
    )
}}

{% if is_incremental() %}

with

seen_in_window as (

    select
        user_id,
        min(activity_date) as first_seen_date
    from {{ ref('int_user_daily_activity') }}
    where activity_date >= {{ dbt.dateadd('day', -var('lookback_days'), min_as_of_date()) }}
      and activity_date < {{ as_of_date() }}
    group by 1

),

first_seen as (

    select w.user_id, w.first_seen_date
    from seen_in_window as w
    left join {{ this }} as t
        on t.user_id = w.user_id
    where t.user_id is null or w.first_seen_date < t.first_seen_date

)

{% else %}

with

first_seen as (

    select
        user_id,
        min(event_date) as first_seen_date
    from {{ ref('stg_shop__events') }}
    where event_date < {{ as_of_date() }}
    group by 1

)

{% endif %}

select * from first_seen
