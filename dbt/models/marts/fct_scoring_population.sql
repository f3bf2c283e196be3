{#- The users to score for the run's as-of date(s): the feature rows of those dates, one per user and date. -#}
{{ config(materialized='table') }}

select *
from {{ ref('feat_user_daily') }}
where {{ is_run_as_of_date('as_of_date') }}
