{#-
    Training examples for the run's as_of_date: features at the weekly cutoffs
    as_of_date - k * training_cadence_days (k = 1 .. training_cutoffs) with their labels.
    Cutoff 1 is the latest one whose 7-day windows have closed: models validate on it and train on the others.
    The 28-day revenue label is NULL at cutoffs whose window is still open.
-#}
{{ config(materialized='table') }}

with

cutoffs as (

    select
        k as cutoff_rank,
        cast({{ dbt.dateadd('day', '-k * ' ~ var('training_cadence_days'), as_of_date()) }} as date) as as_of_date
    from range(1, {{ var('training_cutoffs') }} + 1) as t(k)

),

examples as (

    select
        c.cutoff_rank,
        f.*,
        l.purchase_next_7d,
        l.churn_next_7d,
        l.revenue_next_28d
    from cutoffs as c
    inner join {{ ref('feat_user_daily') }} as f
        on f.as_of_date = c.as_of_date
    inner join {{ ref('fct_user_labels') }} as l
        on l.user_id = f.user_id and l.as_of_date = f.as_of_date

)

select * from examples
