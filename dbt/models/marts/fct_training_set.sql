{#-
    Training examples for the run's as_of_date: features at the cutoffs
    as_of_date - label_horizon - (k - 1) * training_cadence_days (k = 1 .. training_cutoffs) with their labels,
    where label_horizon is the longest label window of the classification targets (ml/targets.py). Cutoff 1 is the latest one whose 7-day windows have
    closed: models validate on it and train on the others. With the default weekly cadence the cutoffs are
    as_of_date - 7, - 14, ...; a daily cadence suits short histories (the 9-day Taobao sample).
    The 28-day revenue label is NULL at cutoffs whose window is still open.
-#}
{{ config(materialized='table') }}

{%- set label_horizon = var('label_horizon_days') -%}

with

cutoffs as (

    select
        k as cutoff_rank,
        cast({{ dbt.dateadd('day', '-(' ~ label_horizon ~ ' + (k - 1) * ' ~ run_var('training_cadence_days') ~ ')',
                            as_of_date()) }} as date) as as_of_date
    from {{ integer_series(1, run_var('training_cutoffs'), 'k') }}

),

examples as (

    select
        c.cutoff_rank,
        f.*,
        l.purchase_next_7d,
        l.churn_next_7d,
        l.revenue_next_28d,
        l.purchase_next_90d
    from cutoffs as c
    inner join {{ ref('feat_user_daily') }} as f
        on f.as_of_date = c.as_of_date
    inner join {{ ref('fct_user_labels') }} as l
        on l.user_id = f.user_id and l.as_of_date = f.as_of_date

)

select * from examples
