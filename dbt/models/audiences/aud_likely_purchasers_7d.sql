{#-
    Likely 7-day purchasers: the top decile of purchase_propensity_7d at each as-of date of the run (GA4's
    "likely 7-day purchasers"), with the score and its strongest reason, and the user's 28-day revenue forecast
    (NULL where revenue is not published): summed, the audience's expected buyers and expected revenue.
-#}
{{ config(materialized='incremental', incremental_strategy=replace_by_key_strategy(), unique_key='as_of_date',
          partition_by=partitioned_by_key('as_of_date'), on_schema_change='append_new_columns') }}

select
    p.user_id,
    p.as_of_date,
    p.probability as purchase_probability_7d,
    r.predicted_revenue as predicted_revenue_28d,
    p.reason_1 as top_reason,
    p.model_version
from {{ source('predictions', 'purchase_propensity_7d') }} as p
left join {{ source('predictions', 'predicted_revenue_28d') }} as r
    on r.user_id = p.user_id and r.as_of_date = p.as_of_date
where p.decile = 1
  and p.as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}
