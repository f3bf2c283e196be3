with

source as (

    select * from {{ source('shop', 'reviews') }}

),

renamed as (

    select
        review_id,
        user_id,
        item_id,
        review_ts as review_ts_utc,
        {{ to_business_time('review_ts') }} as review_ts_local,
        cast({{ to_business_time('review_ts') }} as date) as review_date,
        rating,
        title,
        text,
        helpful_votes,
        total_votes,
        load_id

    from source

)

select * from renamed
