{#-
    Predicted top spenders: the top 5 % of predicted_revenue_28d at each as-of date (GA4's "predicted top spenders"),
    with their 7-day purchase probability (NULL where purchase is not published).
-#}
{{ config(materialized='incremental', incremental_strategy=replace_by_key_strategy(), unique_key='as_of_date',
          partition_by=partitioned_by_key('as_of_date'), on_schema_change='append_new_columns') }}

with

ranked as (

    select
        *,
        row_number() over (partition by as_of_date order by predicted_revenue desc, user_id) as spend_rank,
        count(*) over (partition by as_of_date) as scored_users
    from {{ source('predictions', 'predicted_revenue_28d') }}
    where as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}

)

select
    ranked.user_id,
    ranked.as_of_date,
    ranked.predicted_revenue as predicted_revenue_28d,
    p.probability as purchase_probability_7d,
    ranked.reason_1 as top_reason,
    ranked.model_version
from ranked
left join {{ source('predictions', 'purchase_propensity_7d') }} as p
    on p.user_id = ranked.user_id and p.as_of_date = ranked.as_of_date
where ranked.spend_rank <= ceil(0.05 * ranked.scored_users)
