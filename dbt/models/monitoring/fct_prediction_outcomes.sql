{#-
    Every published prediction whose label window has closed (as known at the run's as-of date), next to what the
    user then did: the feedback loop's raw material. One row per (target, as_of_date, user_id); the realised
    metrics per (target, as_of_date, model_version) are computed from it by the prediction_performance asset.
-#}
{{ config(materialized='table') }}

{%- set targets = [
    ('purchase_propensity_7d', 'probability', 'purchase_next_7d', var('purchase_horizon_days')),
    ('churn_probability_7d', 'probability', 'churn_next_7d', var('churn_horizon_days')),
    ('predicted_revenue_28d', 'predicted_revenue', 'revenue_next_28d', var('revenue_horizon_days')),
] -%}

with

labels as (

    select * from {{ ref('fct_user_labels') }}

),

{% for table, score, label, horizon in targets %}
{{ table }}_outcomes as (

    select
        '{{ table }}' as target,
        p.as_of_date,
        p.user_id,
        cast(p.{{ score }} as double) as score,
        p.decile,
        cast(l.{{ label }} as double) as outcome,
        p.model_name,
        p.model_version,
        {{ dbt.dateadd('day', horizon, 'p.as_of_date') }} as label_closed_on
    from {{ source('predictions', table) }} as p
    inner join labels as l
        on l.user_id = p.user_id
        and l.as_of_date = p.as_of_date
    where l.{{ label }} is not null

){{ "," if not loop.last }}
{% endfor %}

{% for table, score, label, horizon in targets %}
select * from {{ table }}_outcomes
{{ "union all" if not loop.last }}
{% endfor %}
