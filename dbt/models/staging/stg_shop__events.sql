with

source as (

    select * from {{ source('shop', 'events') }}

),

renamed as (

    select
        event_id,
        user_id,
        event_ts as event_ts_utc,
        {{ to_business_time('event_ts') }} as event_ts_local,
        cast({{ to_business_time('event_ts') }} as date) as event_date,
        event_type,
        item_id,
        category_id,
        price,
        quantity,
        case when event_type = 'purchase' then price * quantity end as purchase_revenue,
        case when event_type = 'return' then price * quantity end as return_value,
        session_id,
        load_id

    from source

)

select * from renamed
