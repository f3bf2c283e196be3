{#-
    Point-in-time user x item interactions: one row per (as_of_date, user, item) the user touched in the
    interaction_lookback_days before as_of_date, from events strictly before it: counts by kind, first and last
    day, and a weight, each day's events weighted by type (var interaction_weights) and halved every
    interaction_half_life_days before the as-of date. The recommenders (ml/recommend.py) are fitted and scored on
    these rows.

    Rows per date are every (user, item) pair of the lookback, so the table keeps only the dates still needed: the
    run's own dates and var interaction_dates_kept (the recommenders' cutoffs, which shopcast passes); the
    post-hook deletes older dates.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='as_of_date',
        partition_by=partitioned_by_key('as_of_date'),
        post_hook="{{ prune_as_of_dates('interaction_dates_kept') }}",
    )
}}

{%- set weights = var('interaction_weights') -%}
{%- set lookback = var('interaction_lookback_days') -%}

with

as_of_dates as (

    {{ as_of_date_spine() }}

),

item_days as (

    select *
    from {{ ref('int_user_item_daily') }}
    where activity_date >= {{ dbt.dateadd('day', -lookback, min_as_of_date()) }}
      and activity_date < {{ as_of_date() }}

),

windowed as (

    select
        d.as_of_date,
        i.*,
        cast({{ days_between('i.activity_date', 'd.as_of_date') }} as double) as days_ago
    from as_of_dates as d
    inner join item_days as i
        on i.activity_date >= {{ dbt.dateadd('day', -lookback, 'd.as_of_date') }}
        and i.activity_date < d.as_of_date

)

select
    as_of_date,
    user_id,
    item_id,
    max(category_id) as category_id,
    cast(sum(n_view + n_fav) as bigint) as views,
    cast(sum(n_cart + n_checkout) as bigint) as carts,
    cast(sum(n_purchase) as bigint) as purchases,
    cast(sum(n_return) as bigint) as returns,
    cast(sum(quantity_purchased) as bigint) as quantity_purchased,
    sum(purchase_revenue) as purchase_revenue,
    min(activity_date) as first_activity_date,
    max(activity_date) as last_activity_date,
    max(case when n_purchase > 0 then activity_date end) as last_purchase_date,
    cast(min(days_ago) as integer) as days_since_last,
    sum(
        ({% for event_type in var('event_types') %}{{ weights.get(event_type, 0) }} * n_{{ event_type }}{{ " + " if not loop.last }}{% endfor %})
        * power(0.5, days_ago / {{ var('interaction_half_life_days') }})
    ) as weight
from windowed
group by 1, 2, 3
