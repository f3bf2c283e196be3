{#-
    Each user's first business day with an event. Leakage-free for any as-of date at which the user is in the
    population: such a user has an event before it, so the minimum is before it too.
-#}
with

first_seen as (

    select
        user_id,
        min(event_date) as first_seen_date
    from {{ ref('stg_shop__events') }}
    where event_date < {{ as_of_date() }}
    group by 1

)

select * from first_seen
