{#-
    Likely 7-day purchasers: the top decile of purchase_propensity_7d at each as-of date of the run (GA4's
    "likely 7-day purchasers"), with the score and its strongest reason.
-#}
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='as_of_date') }}

select
    user_id,
    as_of_date,
    probability as purchase_probability_7d,
    reason_1 as top_reason,
    model_version
from {{ source('predictions', 'purchase_propensity_7d') }}
where decile = 1
  and as_of_date between {{ min_as_of_date() }} and {{ as_of_date() }}
