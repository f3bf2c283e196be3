{#-
    The items as of the run's as-of date, from events strictly before it: category, brand and price (raw.items
    where a catalogue is loaded, else the latest the events show), the name or description (raw.items: the
    newest one an export gave before the as-of date, else a catalogue's), first and last day seen, and popularity over
    the last 28 days and all history. What the served recommendations are described with (category, price); not
    a model input, so one current row per item suffices.
-#}
{{ config(materialized='table') }}

with

item_days as (

    select *
    from {{ ref('int_user_item_daily') }}
    where activity_date < {{ as_of_date() }}

),

latest_seen as (

    select
        item_id,
        activity_date,
        category_id,
        max_price,
        row_number() over (partition by item_id order by case when category_id is null then 1 else 0 end,
                           activity_date desc, category_id desc) as newest_category,
        row_number() over (partition by item_id order by case when max_price is null then 1 else 0 end,
                           activity_date desc, max_price desc) as newest_price
    from item_days

),

catalogue as (

    select
        item_id,
        max(category_id) as category_id,
        max(brand) as brand,
        max(price) as price,
        -- the text the item had on the as-of date: the newest an event export first showed before it; a catalogue
        -- row without a date after it
        coalesce(
            max_by(description, described_at) filter (where described_at < {{ as_of_date() }}),
            max(description) filter (where described_at is null)
        ) as description
    from {{ source('shop', 'items') }}
    group by 1

),

activity as (

    select
        item_id,
        min(activity_date) as first_seen_date,
        max(activity_date) as last_seen_date,
        count(distinct case when activity_date >= {{ dbt.dateadd('day', -28, as_of_date()) }} then user_id end)
            as users_28d,
        count(distinct case when activity_date >= {{ dbt.dateadd('day', -28, as_of_date()) }} and n_purchase > 0
                            then user_id end) as buyers_28d,
        count(distinct case when n_purchase > 0 then user_id end) as buyers_all_time,
        cast(sum(case when activity_date >= {{ dbt.dateadd('day', -28, as_of_date()) }} then quantity_purchased
                      else 0 end) as bigint) as units_sold_28d
    from item_days
    group by 1

)

select
    {{ as_of_date() }} as as_of_date,
    a.item_id,
    coalesce(c.category_id, cat.category_id) as category_id,
    c.brand,
    coalesce(c.price, price.max_price) as price,
    c.description,
    a.first_seen_date,
    a.last_seen_date,
    a.users_28d,
    a.buyers_28d,
    a.buyers_all_time,
    a.units_sold_28d
from activity as a
left join catalogue as c
    on c.item_id = a.item_id
left join latest_seen as cat
    on cat.item_id = a.item_id and cat.newest_category = 1
left join latest_seen as price
    on price.item_id = a.item_id and price.newest_price = 1
