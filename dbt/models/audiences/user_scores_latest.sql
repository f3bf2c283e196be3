{#-
    One row per user with the latest score of every target (each at its own latest as-of date) and its reason codes,
    the BG/NBD outputs and the user's top 3 next items with their reasons: what a CRM sync or a BI tool reads. Users
    appear if any target scored them.
-#}
{{ config(materialized='table', schema='predictions') }}

{#- the target registry (ml/targets.py), passed by shopcast as var targets: column prefix, table, score column -#}
{%- set targets = [] -%}
{%- for t in var('targets') -%}
    {%- do targets.append((t.short_name, t.name, t.score_column)) -%}
{%- endfor -%}

with

{% for prefix, table, score in targets %}
{{ prefix }} as (

    select *
    from {{ source('predictions', table) }}
    where as_of_date = (select max(as_of_date) from {{ source('predictions', table) }})

),
{% endfor %}

next_items as (

    select
        user_id,
        as_of_date,
        {% for rank in [1, 2, 3] %}
        max(case when rank = {{ rank }} then item_id end) as next_item_{{ rank }},
        max(case when rank = {{ rank }} then reason end) as next_item_{{ rank }}_reason,
        {% endfor %}
        max(model_version) as next_items_model_version
    from {{ source('predictions', 'next_items') }}
    where as_of_date = (select max(as_of_date) from {{ source('predictions', 'next_items') }})
      and rank <= 3
    group by 1, 2

),

clv as (

    select *
    from {{ source('predictions', 'clv') }}
    where as_of_date = (select max(as_of_date) from {{ source('predictions', 'clv') }})

),

users as (

    {% for prefix, table, score in targets %}
    select user_id from {{ prefix }}
    union
    {% endfor %}
    select user_id from clv

)

select
    u.user_id,
    {% for prefix, table, score in targets %}
    {{ prefix }}.as_of_date as {{ prefix }}_as_of_date,
    {{ prefix }}.{{ score }} as {{ table }},
    {{ prefix }}.decile as {{ prefix }}_decile,
    {{ prefix }}.reason_1 as {{ prefix }}_reason_1,
    {{ prefix }}.reason_2 as {{ prefix }}_reason_2,
    {{ prefix }}.reason_3 as {{ prefix }}_reason_3,
    {{ prefix }}.model_version as {{ prefix }}_model_version,
    {% endfor %}
    clv.as_of_date as clv_as_of_date,
    clv.clv_p_alive as p_alive,
    clv.clv_expected_purchases_90d as expected_purchases_90d,
    clv.clv_expected_spend as expected_spend_per_purchase_day,
    n.as_of_date as next_items_as_of_date,
    {% for rank in [1, 2, 3] %}
    n.next_item_{{ rank }},
    n.next_item_{{ rank }}_reason,
    {% endfor %}
    n.next_items_model_version
from users as u
{% for prefix, table, score in targets %}
left join {{ prefix }} on {{ prefix }}.user_id = u.user_id
{% endfor %}
left join clv on clv.user_id = u.user_id
left join next_items as n on n.user_id = u.user_id
