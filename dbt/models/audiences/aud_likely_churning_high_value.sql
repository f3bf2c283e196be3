{#-
    Likely churning high-value users: users whose purchase revenue in the last 90 days is in the top quarter of the
    buyers' and whose churn probability is above the median of the scored users (deciles 1-5). Who to win back first;
    with their purchase probability and revenue forecast (NULL where not published): what they are expected to bring.
-#}
{{ config(materialized='incremental', incremental_strategy=replace_by_key_strategy(), unique_key='as_of_date',
          partition_by=partitioned_by_key('as_of_date'), on_schema_change='append_new_columns') }}

with

buyer_value as (

    select
        user_id,
        as_of_date,
        revenue_90d,
        percent_rank() over (partition by as_of_date order by revenue_90d) as value_rank
    from {{ ref('feat_user_daily') }}
    where revenue_90d > 0
      and as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}

)

select
    c.user_id,
    c.as_of_date,
    c.probability as churn_probability_7d,
    v.revenue_90d,
    p.probability as purchase_probability_7d,
    r.predicted_revenue as predicted_revenue_28d,
    c.reason_1 as top_reason,
    c.model_version
from {{ source('predictions', 'churn_probability_7d') }} as c
inner join buyer_value as v
    on v.user_id = c.user_id and v.as_of_date = c.as_of_date
left join {{ source('predictions', 'purchase_propensity_7d') }} as p
    on p.user_id = c.user_id and p.as_of_date = c.as_of_date
left join {{ source('predictions', 'predicted_revenue_28d') }} as r
    on r.user_id = c.user_id and r.as_of_date = c.as_of_date
where c.decile <= 5
  and v.value_rank >= 0.75
  and c.as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}
