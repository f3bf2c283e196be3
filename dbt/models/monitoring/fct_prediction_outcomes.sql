{#-
    Every published prediction whose label window has closed (as known at the run's as-of date), next to what the
    user then did: the feedback loop's raw material. One row per (target, as_of_date, user_id); the realised
    metrics per (target, as_of_date, model_version) are computed from it by the prediction_performance asset.
-#}
{{ config(materialized='table') }}

{#- the target registry (ml/targets.py), passed by shopcast as var targets -#}
{%- set targets = var('targets') -%}

with

labels as (

    select * from {{ ref('fct_user_labels') }}

),

{% for t in targets %}
{{ t.name }}_outcomes as (

    select
        '{{ t.name }}' as target,
        p.as_of_date,
        p.user_id,
        cast(p.{{ t.score_column }} as double) as score,
        p.decile,
        cast(l.{{ t.label }} as double) as outcome,
        p.model_name,
        p.model_version,
        {{ dbt.dateadd('day', t.horizon_days, 'p.as_of_date') }} as label_closed_on
    from {{ source('predictions', t.name) }} as p
    inner join labels as l
        on l.user_id = p.user_id
        and l.as_of_date = p.as_of_date
    where l.{{ t.label }} is not null

){{ "," if not loop.last }}
{% endfor %}

{% for t in targets %}
select * from {{ t.name }}_outcomes
{{ "union all" if not loop.last }}
{% endfor %}
