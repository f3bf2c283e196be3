{#-
    Point-in-time event sequences (issue 24): per as-of date, each user's last var('sequence_length') events strictly
    before it, within the var('sequence_lookback_days') before it, one row per event, position 1 the most recent.
    Each event keeps its type, item, category and price (and a log2 price bucket), the seconds since the user's
    previous event, and whether it opened a session (another session id than the previous event's, or a gap over
    var('session_gap_minutes')). What the order-aware models read: the window counts cannot tell a cart removed in the
    last session from one removed a month ago.

    Rows per date are up to sequence_length per user, so, like the interactions, the table keeps the run's dates and
    var sequence_dates_kept (the training cutoffs shopcast passes); the post-hook deletes older dates. Tagged
    `sequences`: built where the sequence models ask for it, not by every daily run.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='as_of_date',
        partition_by=partitioned_by_key('as_of_date'),
        tags=['sequences'],
        post_hook="{{ prune_as_of_dates('sequence_dates_kept') }}",
    )
}}

{%- set lookback = var('sequence_lookback_days') -%}

with

as_of_dates as (

    {{ as_of_date_spine() }}

),

events as (

    select
        user_id,
        event_id,
        event_ts_local,
        event_date,
        event_type,
        item_id,
        category_id,
        price,
        session_id
    from {{ ref('stg_shop__events') }}
    where {{ event_days_between(dbt.dateadd('day', -lookback, min_as_of_date()), as_of_date()) }}

),

with_previous as (

    -- the previous event is always earlier than the event itself: it never carries a later date into a sequence
    select
        *,
        lag(event_ts_local) over (partition by user_id order by event_ts_local, event_id) as previous_ts,
        lag(session_id) over (partition by user_id order by event_ts_local, event_id) as previous_session_id
    from events

),

windowed as (

    select
        d.as_of_date,
        e.*,
        row_number() over (
            partition by d.as_of_date, e.user_id order by e.event_ts_local desc, e.event_id desc
        ) as position
    from as_of_dates as d
    inner join with_previous as e
        on e.event_date >= {{ dbt.dateadd('day', -lookback, 'd.as_of_date') }}
        and e.event_date < d.as_of_date

)

select
    as_of_date,
    user_id,
    cast(position as integer) as position,
    event_id,
    event_ts_local as event_ts,
    event_type,
    item_id,
    category_id,
    price,
    case
        when price is null or price <= 0 then 0
        else 1 + cast(floor(ln(price + 1) / ln(2)) as integer)
    end as price_bucket,
    {{ dbt.datediff('previous_ts', 'event_ts_local', 'second') }} as seconds_since_previous,
    (
        previous_ts is null
        or coalesce(session_id <> previous_session_id, false)
        or {{ dbt.datediff('previous_ts', 'event_ts_local', 'second') }} > {{ var('session_gap_minutes') }} * 60
    ) as opens_session
from windowed
where position <= {{ var('sequence_length') }}
