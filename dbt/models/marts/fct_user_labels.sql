{#-
    What each user in feat_user_daily then did, as known at the run's as_of_date (the knowledge horizon: only
    events before it are used). A label is NULL until its window has closed:
      purchase_next_7d  any purchase in [as_of_date, as_of_date + purchase_horizon_days)
      churn_next_7d     GA4's churn: active in the 7 days before as_of_date, no event in the 7 days from it
                        (NULL for users not active in the 7 days before)
      revenue_next_28d  purchase revenue in [as_of_date, as_of_date + revenue_horizon_days)
      purchase_next_90d any purchase in [as_of_date, as_of_date + purchase_90d_horizon_days): the optional target
                        of shops whose users buy a few times a year (review data: ml/targets.py)
-#}
{{ config(materialized='table' if target.type == 'spark' else 'view') }}

{%- set purchase_h = var('purchase_horizon_days') -%}
{%- set churn_h = var('churn_horizon_days') -%}
{%- set revenue_h = var('revenue_horizon_days') -%}
{%- set purchase_90d_h = var('purchase_90d_horizon_days') -%}

with

population as (

    select user_id, as_of_date, events_7d
    from {{ ref('feat_user_daily') }}
    where as_of_date < {{ as_of_date() }}

),

future_activity as (

    select *
    from {{ ref('int_user_daily_activity') }}
    where activity_date < {{ as_of_date() }}

),

outcomes as (

    select
        p.user_id,
        p.as_of_date,
        p.events_7d,
        sum(case when {{ days_between('p.as_of_date', 'a.activity_date') }} < {{ purchase_h }}
                 then a.n_purchase else 0 end) as purchases_in_purchase_window,
        sum(case when {{ days_between('p.as_of_date', 'a.activity_date') }} < {{ churn_h }}
                 then a.n_events else 0 end) as events_in_churn_window,
        sum(case when {{ days_between('p.as_of_date', 'a.activity_date') }} < {{ revenue_h }}
                 then a.purchase_revenue else 0 end) as revenue_in_revenue_window,
        sum(case when {{ days_between('p.as_of_date', 'a.activity_date') }} < {{ purchase_90d_h }}
                 then a.n_purchase else 0 end) as purchases_in_purchase_90d_window
    from population as p
    left join future_activity as a
        on a.user_id = p.user_id
        and a.activity_date >= p.as_of_date
    group by 1, 2, 3

),

labelled as (

    select
        user_id,
        as_of_date,
        case when {{ dbt.dateadd('day', purchase_h, 'as_of_date') }} <= {{ as_of_date() }}
             then cast(purchases_in_purchase_window > 0 as integer) end as purchase_next_7d,
        case when events_7d > 0 and {{ dbt.dateadd('day', churn_h, 'as_of_date') }} <= {{ as_of_date() }}
             then cast(events_in_churn_window = 0 as integer) end as churn_next_7d,
        case when {{ dbt.dateadd('day', revenue_h, 'as_of_date') }} <= {{ as_of_date() }}
             then revenue_in_revenue_window end as revenue_next_28d,
        case when {{ dbt.dateadd('day', purchase_90d_h, 'as_of_date') }} <= {{ as_of_date() }}
             then cast(purchases_in_purchase_90d_window > 0 as integer) end as purchase_next_90d
    from outcomes

)

select * from labelled
