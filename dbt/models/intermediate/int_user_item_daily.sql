{#-
    One row per (user, item, business day) with the user's events on the item, by kind: the grain the point-in-time
    interactions (fct_user_item_interactions) and the items dimension are summed from, and the truth of the
    recommenders' backtests (what each user bought after a cutoff). Events without an item (a visit, a page that
    is no product) say nothing about an item and are left out. Incremental by day like int_user_purchase_days: the
    first build reads all history; later builds recompute the days late events can still change
    ([min_as_of_date - lookback_days, as_of_date)).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='activity_date',
        partition_by=partitioned_by_key('activity_date'),
    )
}}

with

events as (

    select *
    from {{ ref('stg_shop__events') }}
    where item_id is not null
      and event_date < {{ as_of_date() }}
    {% if is_incremental() %}
      and {{ event_days_between(dbt.dateadd('day', -var('lookback_days'), min_as_of_date()), as_of_date()) }}
    {% endif %}

),

daily as (

    select
        user_id,
        item_id,
        event_date as activity_date,
        max(category_id) as category_id,
        {% for event_type in var('event_types') -%}
        cast(sum(case when event_type = '{{ event_type }}' then 1 else 0 end) as bigint) as n_{{ event_type }},
        {% endfor -%}
        cast(sum(case when event_type = 'purchase' then quantity else 0 end) as bigint) as quantity_purchased,
        coalesce(sum(purchase_revenue), 0) as purchase_revenue,
        max(price) as max_price
    from events
    group by 1, 2, 3

)

select * from daily
