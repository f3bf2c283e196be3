{#-
    Point-in-time user features: one row per (user_id, as_of_date) for users with an event in the
    active_window_days before as_of_date, computed only from events strictly before as_of_date.
    Incremental by as_of_date: a run (re)writes exactly its own as-of dates, so re-running a date replaces it.
    features_version says which columns a row was computed with: dates written by an older version are rebuilt
    when a run needs them (dagster_project/defs/dbt_assets.py).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='as_of_date',
        partition_by=partitioned_by_key('as_of_date'),
        on_schema_change='append_new_columns',
    )
}}

{%- set windows = var('feature_windows') -%}
{%- set lookback = var('lookback_days') -%}

with

as_of_dates as (

    {{ as_of_date_spine() }}

),

activity as (

    select *
    from {{ ref('int_user_daily_activity') }}
    where activity_date >= {{ dbt.dateadd('day', -lookback, min_as_of_date()) }}
      and activity_date < {{ as_of_date() }}

),

population as (

    select distinct d.as_of_date, a.user_id
    from as_of_dates as d
    inner join activity as a
        on a.activity_date >= {{ dbt.dateadd('day', -var('active_window_days'), 'd.as_of_date') }}
        and a.activity_date < d.as_of_date

),

history as (

    -- each population row with every activity day in its lookback window, and how many days back it lies
    select
        p.as_of_date,
        {{ days_between('a.activity_date', 'p.as_of_date') }} as days_ago,
        -- days since the user's previous active day in the window (NULL on the first)
        {{ days_between('lag(a.activity_date) over (partition by p.as_of_date, p.user_id order by a.activity_date)',
                        'a.activity_date') }} as days_since_previous_active_day,
        a.*  -- its user_id is the population row's (the join's key)
    from population as p
    inner join activity as a
        on a.user_id = p.user_id
        and a.activity_date < p.as_of_date
        and a.activity_date >= {{ dbt.dateadd('day', -lookback, 'p.as_of_date') }}

),

windowed as (

    -- counts cast to bigint: DuckDB sums integers into 128-bit HUGEINTs, which Arrow and BI tools read as
    -- 38-digit decimals (2.4M rows x 34 such columns: 49 s from Arrow to pandas, against 0.3 s as bigint)
    select
        as_of_date,
        user_id,
        {% for window in windows -%}
        cast(sum(case when days_ago <= {{ window }} then n_events else 0 end) as bigint) as events_{{ window }}d,
        {% for event_type in var('event_types') -%}
        cast(sum(case when days_ago <= {{ window }} then n_{{ event_type }} else 0 end) as bigint) as {{ event_type }}_count_{{ window }}d,
        {% endfor -%}
        {% endfor -%}
        {% for event_type in var('event_types') -%}
        min(case when n_{{ event_type }} > 0 then days_ago end) as days_since_last_{{ event_type }},
        {% endfor -%}
        min(days_ago) as days_since_last_event,
        sum(case when days_ago <= 28 then purchase_revenue else 0 end) as revenue_28d,
        sum(purchase_revenue) as revenue_{{ lookback }}d,
        cast(sum(case when days_ago <= 7 then n_sessions else 0 end) as bigint) as sessions_7d,
        cast(sum(case when days_ago <= 28 then n_sessions else 0 end) as bigint) as sessions_28d,
        count(case when days_ago <= 28 then 1 end) as active_days_28d,
        count(*) as active_days_{{ lookback }}d,
        count(case when days_ago <= 28 and n_purchase > 0 then 1 end) as purchase_days_28d,
        count(case when n_purchase > 0 then 1 end) as purchase_days_{{ lookback }}d,
        -- prices of the items viewed and carted
        {% for event_type in ['view', 'cart'] -%}
        sum(case when days_ago <= 28 then {{ event_type }}_price_sum end)
            / nullif(sum(case when days_ago <= 28 then {{ event_type }}_price_n else 0 end), 0)
            as mean_{{ event_type }}ed_price_28d,
        max(case when days_ago <= 28 then {{ event_type }}_price_max end) as max_{{ event_type }}ed_price_28d,
        {% endfor -%}
        -- habits: when in the day and the week the user is active
        cast(sum(event_hour_sum) as double) / sum(n_events) as mean_event_hour_{{ lookback }}d,
        cast(sum(n_evening_events) as double) / sum(n_events) as evening_event_share_{{ lookback }}d,
        cast(sum(n_night_events) as double) / sum(n_events) as night_event_share_{{ lookback }}d,
        cast(sum(case when {{ iso_weekday('activity_date') }} >= 6 then n_events else 0 end) as double)
            / sum(n_events) as weekend_event_share_{{ lookback }}d,
        -- rhythm: the gaps between active days, and how overdue the next one is
        cast(max(days_ago) - min(days_ago) as double) / nullif(count(*) - 1, 0)
            as mean_days_between_active_days_{{ lookback }}d,
        min(days_since_previous_active_day) as min_days_between_active_days_{{ lookback }}d,
        min(days_ago) - cast(max(days_ago) - min(days_ago) as double) / nullif(count(*) - 1, 0)
            as active_day_overdue_days_{{ lookback }}d,
        -- hours from the last event of a kind to the start of the as-of date (business time). Fractions are
        -- doubles on every engine: Spark reads a literal such as 60.0 as a decimal and rounds the quotient to 6 places
        {% for event_type in ['view', 'cart', 'checkout', 'event'] -%}
        cast({{ dbt.datediff('max(last_' ~ event_type ~ '_ts)', 'cast(as_of_date as timestamp)', 'minute') }} as double) / 60
            as hours_since_last_{{ event_type }}{{ "," if not loop.last }}
        {% endfor -%}
    from history
    group by 1, 2

),

breadth as (

    -- distinct items and categories need the events themselves, not the daily grain
    select
        d.as_of_date,
        e.user_id,
        count(distinct e.item_id) as distinct_items_28d,
        count(distinct e.category_id) as distinct_categories_28d
    from as_of_dates as d
    inner join (
        select user_id, event_date, item_id, category_id
        from {{ ref('stg_shop__events') }}
        where {{ event_days_between(dbt.dateadd('day', -28, min_as_of_date()), as_of_date()) }}
    ) as e
        on e.event_date >= {{ dbt.dateadd('day', -28, 'd.as_of_date') }}
        and e.event_date < d.as_of_date
    group by 1, 2

),

purchase_history as (

    -- the whole purchase history (int_user_purchase_days spans it), not only the lookback window
    select
        p.as_of_date,
        p.user_id,
        count(*) as purchase_days_all,
        sum(d.revenue) as revenue_all,
        {{ days_between('min(d.purchase_date)', 'max(d.purchase_date)') }} as purchase_span_days,
        {{ days_between('max(d.purchase_date)', 'p.as_of_date') }} as days_since_last_purchase_all
    from population as p
    inner join {{ ref('int_user_purchase_days') }} as d
        on d.user_id = p.user_id
        and d.purchase_date < p.as_of_date
    group by 1, 2

),

cart_events as (

    select user_id, item_id, event_type, event_ts_local, event_date, price, quantity
    from {{ ref('stg_shop__events') }}
    where {{ event_days_between(dbt.dateadd('day', -lookback, min_as_of_date()), as_of_date()) }}
      and event_type in ('cart', 'remove_from_cart', 'purchase')
      and item_id is not null

),

cart_items as (

    -- per item a user carted in the lookback window: when it was last carted, and last bought or removed
    select
        d.as_of_date,
        e.user_id,
        e.item_id,
        max(case when e.event_type = 'cart' then e.event_ts_local end) as last_carted_ts,
        max(case when e.event_type <> 'cart' then e.event_ts_local end) as last_closed_ts,
        max(case when e.event_type = 'cart' then e.price * coalesce(e.quantity, 1) end) as carted_value
    from as_of_dates as d
    inner join cart_events as e
        on e.event_date < d.as_of_date
        and e.event_date >= {{ dbt.dateadd('day', -lookback, 'd.as_of_date') }}
    group by 1, 2, 3

),

open_carts as (

    -- intent: items carted and neither bought nor removed since
    select
        as_of_date,
        user_id,
        count(*) as open_cart_items,
        sum(carted_value) as open_cart_value,
        cast({{ dbt.datediff('min(last_carted_ts)', 'cast(as_of_date as timestamp)', 'minute') }} as double) / 60
            as open_cart_age_hours
    from cart_items
    where last_carted_ts is not null
      and (last_closed_ts is null or last_closed_ts < last_carted_ts)
    group by 1, 2

),

final as (

    select
        w.*,
        w.revenue_28d / nullif(w.purchase_count_28d, 0) as avg_purchase_value_28d,
        w.revenue_{{ lookback }}d / nullif(w.purchase_count_{{ lookback }}d, 0) as avg_purchase_value_{{ lookback }}d,
        cast(w.cart_count_28d as double) / nullif(w.view_count_28d, 0) as cart_per_view_28d,
        cast(w.purchase_count_28d as double) / nullif(w.cart_count_28d, 0) as purchase_per_cart_28d,
        cast(w.purchase_count_{{ lookback }}d as double) / nullif(w.cart_count_{{ lookback }}d, 0)
            as purchase_per_cart_{{ lookback }}d,
        coalesce(b.distinct_items_28d, 0) as distinct_items_28d,
        coalesce(b.distinct_categories_28d, 0) as distinct_categories_28d,
        {{ days_between('f.first_seen_date', 'w.as_of_date') }} as tenure_days,
        -- daily event rate of the last 7 days over that of the 21 days before them (+1 smooths new users)
        (cast(w.events_7d as double) / 7 + 1) / (cast(w.events_28d - w.events_7d as double) / 21 + 1)
            as activity_trend_7d_vs_21d,
        coalesce(h.purchase_days_all, 0) as purchase_days_all,
        coalesce(h.revenue_all, 0) as revenue_all,
        cast(h.purchase_span_days as double) / nullif(h.purchase_days_all - 1, 0) as mean_days_between_purchase_days_all,
        h.days_since_last_purchase_all
            - cast(h.purchase_span_days as double) / nullif(h.purchase_days_all - 1, 0) as purchase_overdue_days_all,
        coalesce(o.open_cart_items, 0) as open_cart_items,
        coalesce(o.open_cart_value, case when o.open_cart_items is null then 0 end) as open_cart_value,
        o.open_cart_age_hours,
        {{ var('features_version') }} as features_version
    from windowed as w
    left join breadth as b
        on b.as_of_date = w.as_of_date and b.user_id = w.user_id
    left join {{ ref('int_user_first_seen') }} as f
        on f.user_id = w.user_id
    left join purchase_history as h
        on h.as_of_date = w.as_of_date and h.user_id = w.user_id
    left join open_carts as o
        on o.as_of_date = w.as_of_date and o.user_id = w.user_id

)

select * from final
