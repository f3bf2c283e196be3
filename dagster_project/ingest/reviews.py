"""Reviews into ``raw.reviews`` (issue 25): the same validation, quarantine, duplicate skipping and reconciled
audit as the events (loader.py runs the file; this module stages, validates and writes its rows). Formats: the
canonical layout (``reviews``) and Amazon's (``amazon-reviews``).

A review stands for a purchase where the source has no orders (the Amazon review samples): each accepted review
also lands in ``raw.events`` as a purchase of the reviewed item at the review's time, with the event id
``review-<review_id>`` and the review's load id, so that the behaviour marts see the reviewers. It is a proxy, said
in docs/raw_schema.md: the purchase happened before the review, on a day the data does not give.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from dagster_project.ingest.readers import reader_sql, require_columns

REVIEW_EVENT_PREFIX = "review-"

# The staged review columns, each from the source column a layout names for it (None: the layout has none).
STAGED = ("review_id", "user_id", "item_id", "review_ts", "rating", "title", "text", "helpful_votes", "total_votes")
REQUIRED = ("user_id", "item_id", "review_ts", "rating")
# The canonical layout (docs/raw_schema.md): a shop's own reviews, under the staged names.
CANONICAL_COLUMNS = {c: c for c in STAGED}
# Amazon product reviews (McAuley et al., the 5-core samples as the shared dataset holds them: one row per review,
# reviewer_id, asin, helpful_yes / helpful_total, review_text, rating 1-5, summary, review_ts by day in UTC). The
# reviewer's name is not kept: it identifies a person, and nothing downstream needs it.
AMAZON_COLUMNS = {"review_id": None, "user_id": "reviewer_id", "item_id": "asin", "review_ts": "review_ts",
                  "rating": "rating", "title": "summary", "text": "review_text", "helpful_votes": "helpful_yes",
                  "total_votes": "helpful_total"}


def staged_reviews_sql(expressions: dict[str, str], format_reason: str = "cast(null as varchar)") -> str:
    """The SELECT over ``_source`` producing the staged review columns, each from its SQL expression (a field
    without one stages as NULL): what the loader validates."""
    def staged(field: str, cast_to_text: bool) -> str:
        value = expressions.get(field, "null")
        return f"cast({value} as varchar)" if cast_to_text else value

    text_fields = {"review_id", "user_id", "item_id", "title", "text"}
    raw = {"review_ts": "review_ts_raw", "rating": "rating_raw", "helpful_votes": "helpful_votes_raw",
           "total_votes": "total_votes_raw"}
    columns = ",\n".join(f"    {staged(f, f in text_fields)} as {raw.get(f, f)}" for f in STAGED)
    return f"select\n    _row_number,\n{columns},\n    {format_reason} as _format_reason\nfrom _source"


def _staged_select(source_columns: dict[str, str | None]):
    """A format: (reader, staged review columns) for a file whose columns ``source_columns`` names (the required
    ones must be there; an absent optional one stages as NULL)."""

    def select(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
        reader = reader_sql(path)
        columns = require_columns(con, path, reader, tuple(source_columns[c] for c in REQUIRED))
        return reader, staged_reviews_sql({c: f'"{name}"' for c, name in source_columns.items() if name in columns})

    return select


REVIEW_FORMATS = {"reviews": _staged_select(CANONICAL_COLUMNS), "amazon-reviews": _staged_select(AMAZON_COLUMNS)}
# Sources whose reviews stand for the purchases they have no record of: each accepted review is also a purchase
# event. A shop's own reviews (the canonical layout) come beside its orders, which the events already hold.
PURCHASE_PROXY_FORMATS = {"amazon-reviews"}

# Reasons in the order they are tested: a row gets the first that applies.
VALIDATED_SQL = """
create temp table _validated as
with typed as (
    select
        *,
        cast(try_cast(review_ts_raw as timestamptz) as timestamp) as review_ts,
        try_cast(rating_raw as double) as rating,
        -- a fractional count is an error, never rounded (a cast of '1.5' to integer rounds)
        {whole_helpful} as helpful_votes,
        {whole_total} as total_votes
    from ({mapped})
)
select
    *,
    case
        when _format_reason is not null then _format_reason
        when user_id is null or trim(user_id) = '' then 'missing_user_id'
        when item_id is null or trim(item_id) = '' then 'missing_item_id'
        when review_ts_raw is null or review_ts is null then 'bad_timestamp'
        when review_ts < timestamp '{earliest}' then 'timestamp_too_old'
        when review_ts > now()::timestamp + interval {future_hours} hour then 'timestamp_in_future'
        when rating_raw is null then 'missing_rating'
        when rating is null then 'non_numeric_rating'
        when not isfinite(rating) then 'non_finite_rating'
        when rating < 1 or rating > 5 then 'rating_out_of_range'
        when (helpful_votes_raw is not null and helpful_votes is null)
          or (total_votes_raw is not null and total_votes is null) then 'non_integer_votes'
        when helpful_votes < 0 or total_votes < 0 or helpful_votes > total_votes then 'inconsistent_votes'
    end as _reason,
    -- one review per user, item and time where the source gives no id
    coalesce(nullif(trim(review_id), ''),
             md5(concat_ws('|', trim(user_id), trim(item_id), cast(review_ts as varchar)))) as _review_id
from typed
"""

ACCEPTED_SQL = """
create temp table _accepted as
select c.*, c.review_ts as event_ts  -- the audit's time span
from (
    select *, row_number() over (partition by _review_id order by _row_number) as _copy
    from _validated
    where _reason is null
) c
anti join raw.reviews r on r.review_id = c._review_id
where c._copy = 1
"""


def _whole_number(column: str) -> str:
    as_double = f"try_cast({column} as double)"
    return f"case when {as_double} = trunc({as_double}) then cast({as_double} as integer) end"


def load_review_rows(con: duckdb.DuckDBPyConnection, report, load_id: str, mapped: str, *, earliest: str,
                     future_hours: int) -> None:
    """Validate the staged rows, write the accepted reviews (and, for a PURCHASE_PROXY_FORMATS source, their
    purchase events) and the rejected rows, and count each from what was written, so that the loader's
    reconciliation can fail."""
    proxy = report.source_format in PURCHASE_PROXY_FORMATS
    con.execute(VALIDATED_SQL.format(earliest=earliest, future_hours=future_hours, mapped=mapped,
                                     whole_helpful=_whole_number("helpful_votes_raw"),
                                     whole_total=_whole_number("total_votes_raw")))
    con.execute(ACCEPTED_SQL)
    con.execute("""
        insert into raw.reviews
        select _review_id, trim(user_id), trim(item_id), review_ts, rating, title, text, helpful_votes,
               total_votes, ?
        from _accepted
    """, [load_id])
    if proxy:
        con.execute(f"""
            insert into raw.events
            select '{REVIEW_EVENT_PREFIX}' || _review_id, trim(user_id), review_ts, 'purchase', trim(item_id), null,
                   null, 1, null, ?
            from _accepted
        """, [load_id])
    con.execute("""
        insert into raw.rejected_reviews
        select ?, ?, v._row_number, v._reason, to_json(s)
        from _validated v join (select * exclude (_row_number), _row_number as _rn from _source) s
          on s._rn = v._row_number
        where v._reason is not null
    """, [load_id, report.source_file])
    (report.rows_accepted,) = con.execute("select count(*) from raw.reviews where load_id = ?", [load_id]).fetchone()
    (events,) = con.execute("select count(*) from raw.events where load_id = ?", [load_id]).fetchone()
    if events != (report.rows_accepted if proxy else 0):  # a bug, never bad input
        raise RuntimeError(f"{report.source_file}: {report.rows_accepted} reviews accepted but {events} purchase "
                           "events written for them")
    report.rejected_by_reason = dict(con.execute(
        "select reason_code, count(*) from raw.rejected_reviews where load_id = ? group by 1 order by 1", [load_id]
    ).fetchall())
    report.rows_rejected = sum(report.rejected_by_reason.values())
    report.rows_duplicate_in_file, report.rows_already_loaded = con.execute("""
        with firsts as (
            select _review_id, count(*) - 1 as later_copies from _validated where _reason is null group by 1
        )
        select coalesce(sum(later_copies), 0),
               count(*) filter (where _review_id in (select review_id from raw.reviews where load_id <> ?))
        from firsts
    """, [load_id]).fetchone()
    report.rows_duplicate = report.rows_duplicate_in_file + report.rows_already_loaded
