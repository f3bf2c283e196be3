{#-
    Predicted top spenders: the top 5 % of predicted_revenue_28d at each as-of date (GA4's "predicted top spenders").
-#}
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='as_of_date') }}

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
    user_id,
    as_of_date,
    predicted_revenue as predicted_revenue_28d,
    reason_1 as top_reason,
    model_version
from ranked
where spend_rank <= ceil(0.05 * scored_users)
