{#-
    The campaign table: each likely 7-day purchaser (aud_likely_purchasers_7d: the top decile of
    purchase_propensity_7d) with the three items they are most likely to buy next and the best item they have not
    bought before (predictions.next_items, predictions.new_items), each with its reason: who to target and with
    what, in one row a marketer exports. Users without lists yet (no recommender champion) keep NULL items.
-#}
{{ config(materialized='incremental', incremental_strategy=replace_by_key_strategy(), unique_key='as_of_date',
          partition_by=partitioned_by_key('as_of_date'), on_schema_change='append_new_columns') }}

with

purchasers as (

    select *
    from {{ ref('aud_likely_purchasers_7d') }}
    where as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}

),

next_items as (

    select *
    from {{ source('predictions', 'next_items') }}
    where as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}
      and rank <= 3

),

new_items as (

    select *
    from {{ source('predictions', 'new_items') }}
    where as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}
      and rank = 1

)

select
    p.user_id,
    p.as_of_date,
    p.purchase_probability_7d,
    p.predicted_revenue_28d,
    p.top_reason,
    {% for rank in [1, 2, 3] %}
    max(case when n.rank = {{ rank }} then n.item_id end) as item_{{ rank }},
    max(case when n.rank = {{ rank }} then n.reason end) as item_{{ rank }}_reason,
    {% endfor %}
    max(x.item_id) as cross_sell_item,
    max(x.reason) as cross_sell_reason,
    max(n.model_version) as items_model_version
from purchasers as p
left join next_items as n
    on n.user_id = p.user_id and n.as_of_date = p.as_of_date
left join new_items as x
    on x.user_id = p.user_id and x.as_of_date = p.as_of_date
group by 1, 2, 3, 4, 5
