"""Mappings from real export layouts to the canonical staged columns (see docs/raw_schema.md).

Each returns (reader, SELECT over ``_source``) with the columns the loader validates: _row_number, event_id,
user_id, event_ts_raw (a UTC timestamp or text), event_type, item_id, category_id, price_raw, quantity_raw,
session_id, item_description (the item's name or description where the export has one, into raw.items) and
_format_reason (a format-specific rejection, or NULL).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from dagster_project.ingest.mapped import mapped_select
from dagster_project.ingest.readers import IngestError, reader_sql, require_columns
from dagster_project.ingest.reviews import REVIEW_FORMATS

CANONICAL_REQUIRED = ("user_id", "event_ts", "event_type")
CANONICAL_OPTIONAL = ("event_id", "item_id", "category_id", "price", "quantity", "session_id", "item_description")

def canonical_select(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
    """(reader, SELECT over ``_source`` producing the staged canonical columns) for a canonical-schema file."""
    reader = reader_sql(path)
    columns = require_columns(con, path, reader, CANONICAL_REQUIRED)
    optional = {c: (f'"{c}"' if c in columns else "null") for c in CANONICAL_OPTIONAL}
    return reader, f"""
        select
            _row_number,
            cast({optional['event_id']} as varchar) as event_id,
            cast(user_id as varchar) as user_id,
            event_ts as event_ts_raw,
            lower(trim(cast(event_type as varchar))) as event_type,
            cast({optional['item_id']} as varchar) as item_id,
            cast({optional['category_id']} as varchar) as category_id,
            {optional['price']} as price_raw,
            {optional['quantity']} as quantity_raw,
            cast({optional['session_id']} as varchar) as session_id,
            cast({optional['item_description']} as varchar) as item_description,
            cast(null as varchar) as _format_reason
        from _source
    """


# Taobao UserBehavior.csv: headerless; epoch seconds in UTC (the business day is China time: set
# business_tz=Asia/Shanghai for partitions); no price.
TAOBAO_COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
TAOBAO_TYPES = {"pv": "view", "fav": "fav", "cart": "cart", "buy": "purchase"}


def _case(column: str, mapping: dict[str, str]) -> str:
    whens = " ".join(f"when '{source}' then '{target}'" for source, target in mapping.items())
    return f"case lower(trim({column})) {whens} else lower(trim({column})) end"


def taobao_select(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
    reader = reader_sql(path, csv_columns=TAOBAO_COLUMNS)
    columns = require_columns(con, path, reader, tuple(TAOBAO_COLUMNS))
    if len(columns) != len(TAOBAO_COLUMNS):
        raise IngestError(f"{path}: not a Taobao UserBehavior file: it has {len(columns)} columns, expected "
                                 f"{len(TAOBAO_COLUMNS)} without a header ({','.join(TAOBAO_COLUMNS)})")
    return reader, f"""
        select
            _row_number,
            cast(null as varchar) as event_id,
            user_id,
            cast(to_timestamp(try_cast("timestamp" as bigint)) as timestamp) as event_ts_raw,
            {_case('behavior_type', TAOBAO_TYPES)} as event_type,
            item_id,
            category_id,
            cast(null as double) as price_raw,
            cast(null as integer) as quantity_raw,
            cast(null as varchar) as session_id,
            cast(null as varchar) as item_description,
            case when "timestamp" is not null and try_cast("timestamp" as bigint) is null
                 then 'bad_timestamp' end as _format_reason
        from _source
    """


# Google Merchandise Store product events: event_time is UTC. product_click is kept as a view (a click into a
# product's page); checkout is a canonical type of its own. The event id is the hit's identity, so the
# duplicated (visitor, visit, hit, sku, type) rows of the export are skipped as duplicates. The item is the product
# name where the export has one: GA lists a product's views under one SKU and its purchases under its variants' (a
# size, a colour), so by SKU most purchases would follow no view of the same item (recommendations, open carts).
GA_REQUIRED = ("full_visitor_id", "visit_id", "event_time", "hit_number", "event_type", "product_sku")
GA_TYPES = {"product_click": "view", "view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart",
            "checkout": "checkout", "purchase": "purchase"}


def ga_merch_select(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
    reader = reader_sql(path)
    columns = require_columns(con, path, reader, GA_REQUIRED)
    optional = {c: (f'"{c}"' if c in columns else "null")
                for c in ("product_name", "product_category", "price", "quantity")}
    return reader, f"""
        select
            _row_number,
            md5(concat_ws('|', full_visitor_id, visit_id, hit_number, product_sku, event_type)) as event_id,
            cast(full_visitor_id as varchar) as user_id,
            event_time as event_ts_raw,
            {_case('event_type', GA_TYPES)} as event_type,
            coalesce(nullif(trim(cast({optional['product_name']} as varchar)), ''), cast(product_sku as varchar))
                as item_id,
            cast({optional['product_category']} as varchar) as category_id,
            {optional['price']} as price_raw,
            {optional['quantity']} as quantity_raw,
            concat_ws('-', full_visitor_id, visit_id) as session_id,
            cast({optional['product_name']} as varchar) as item_description,
            cast(null as varchar) as _format_reason
        from _source
    """


# UCI Online Retail invoice lines: purchases; cancellations ('C' invoices or negative quantities) become
# `return` events with the absolute quantity; 'A' invoices (bad-debt adjustments), lines without a customer and
# non-product stock codes (POST, DOT, M, BANK CHARGES, AMAZONFEE, gift vouchers: no 5-digit product number) are
# quarantined. InvoiceDate is UK local time, converted to UTC. The invoice is the session.
RETAIL_REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")


def online_retail_select(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
    reader = reader_sql(path)
    columns = require_columns(con, path, reader, RETAIL_REQUIRED)
    description = '"Description"' if "Description" in columns else "null"
    return reader, f"""
        select
            _row_number,
            cast(null as varchar) as event_id,
            cast(try_cast(try_cast(CustomerID as double) as bigint) as varchar) as user_id,
            cast(timezone('UTC', timezone('Europe/London', try_cast(InvoiceDate as timestamp))) as timestamp)
                as event_ts_raw,
            case when upper(cast(InvoiceNo as varchar)) like 'C%' or try_cast(Quantity as integer) < 0
                 then 'return' else 'purchase' end as event_type,
            cast(StockCode as varchar) as item_id,
            cast(null as varchar) as category_id,
            UnitPrice as price_raw,
            abs(try_cast(Quantity as integer)) as quantity_raw,
            cast(InvoiceNo as varchar) as session_id,
            cast({description} as varchar) as item_description,
            case
                when CustomerID is null then 'missing_customer'
                when upper(cast(InvoiceNo as varchar)) like 'A%' then 'adjustment_invoice'
                when not regexp_matches(cast(StockCode as varchar), '^[0-9]{{5}}') then 'non_product_code'
            end as _format_reason
        from _source
    """


FORMATS = {
    "canonical": canonical_select,
    "taobao": taobao_select,
    "ga-merch": ga_merch_select,
    "online-retail": online_retail_select,
    "mapped": mapped_select,
    **REVIEW_FORMATS,  # reviews into raw.reviews (ingest/reviews.py), each also a purchase event
}
