{#-
    Size of each audience at each as-of date any target was scored, next to the scored population it is drawn from
    (0 and 0 where a target was not published that day), and what it is expected to bring: expected buyers in 7 days
    (the sum of its users' calibrated purchase probabilities) and expected revenue in 28 days (the sum of their
    revenue forecasts); NULL where that target was not published.
-#}
{{ config(materialized='table') }}

{%- set audiences = [
    ('likely_purchasers_7d', 'aud_likely_purchasers_7d', 'purchase_propensity_7d'),
    ('likely_churning_high_value', 'aud_likely_churning_high_value', 'churn_probability_7d'),
    ('predicted_top_spenders', 'aud_predicted_top_spenders', 'predicted_revenue_28d'),
] -%}

with

scored_dates as (

    {% for name, model, scored in audiences %}
    select distinct as_of_date from {{ source('predictions', scored) }}
    {% if not loop.last %}union{% endif %}
    {% endfor %}

)

{% for name, model, scored in audiences %}
select
    '{{ name }}' as audience,
    d.as_of_date,
    (select count(*) from {{ ref(model) }} as a where a.as_of_date = d.as_of_date) as users,
    (select count(*) from {{ source('predictions', scored) }} as s where s.as_of_date = d.as_of_date) as scored_users,
    (select sum(a.purchase_probability_7d) from {{ ref(model) }} as a where a.as_of_date = d.as_of_date)
        as expected_buyers_7d,
    (select sum(a.predicted_revenue_28d) from {{ ref(model) }} as a where a.as_of_date = d.as_of_date)
        as expected_revenue_28d
from scored_dates as d
{% if not loop.last %}union all{% endif %}
{% endfor %}
