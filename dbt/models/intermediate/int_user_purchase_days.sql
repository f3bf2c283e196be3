{#-
    One row per (user, business day with a purchase): the purchase history BG/NBD and Gamma-Gamma read
    (marts.feat_user_rfm). Their inputs span a customer's whole life, not a feature window, so the first build reads
    all history; later builds recompute only the days the run can see ([min_as_of_date - lookback_days, as_of_date)).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy=replace_by_key_strategy(),
        unique_key='purchase_date',
        partition_by=partitioned_by_key('purchase_date'),
    )
}}

with

purchases as (

    select *
    from {{ ref('stg_shop__events') }}
    where event_type = 'purchase'
      and event_date < {{ as_of_date() }}
    {% if is_incremental() %}
      and {{ event_days_between(dbt.dateadd('day', -var('lookback_days'), min_as_of_date()), as_of_date()) }}
    {% endif %}

),

purchase_days as (

    select
        user_id,
        event_date as purchase_date,
        count(*) as n_purchase_events,
        coalesce(sum(purchase_revenue), 0) as revenue
    from purchases
    group by 1, 2

)

select * from purchase_days
