{#-
    BG/NBD and Gamma-Gamma inputs per (user_id, as_of_date), for the users of feat_user_daily, from purchases strictly
    before as_of_date over the user's whole history, in days:
      frequency       purchase days after the first one (repeat purchases)
      recency         days from the first to the last purchase day (0 without a repeat purchase)
      t_days          days from the first purchase day (or, for users who never bought, the first visit) to as_of_date
      monetary_value  mean revenue per purchase day (0 for users who never bought)
    Incremental by as_of_date, like feat_user_daily.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='as_of_date',
        partition_by=partitioned_by_key('as_of_date'),
    )
}}

with

population as (

    select user_id, as_of_date
    from {{ ref('feat_user_daily') }}
    where {{ is_run_as_of_date('as_of_date') }}

),

purchase_history as (

    select
        p.user_id,
        p.as_of_date,
        count(*) as purchase_days,
        min(d.purchase_date) as first_purchase_date,
        max(d.purchase_date) as last_purchase_date,
        avg(d.revenue) as revenue_per_purchase_day
    from population as p
    inner join {{ ref('int_user_purchase_days') }} as d
        on d.user_id = p.user_id
        and d.purchase_date < p.as_of_date
    group by 1, 2

),

rfm as (

    select
        p.user_id,
        p.as_of_date,
        coalesce(h.purchase_days - 1, 0) as frequency,
        coalesce({{ days_between('h.first_purchase_date', 'h.last_purchase_date') }}, 0) as recency,
        {{ days_between('coalesce(h.first_purchase_date, f.first_seen_date)', 'p.as_of_date') }} as t_days,
        coalesce(h.revenue_per_purchase_day, 0) as monetary_value
    from population as p
    left join purchase_history as h
        on h.user_id = p.user_id and h.as_of_date = p.as_of_date
    inner join {{ ref('int_user_first_seen') }} as f
        on f.user_id = p.user_id

)

select * from rfm
