"""The DuckDB warehouse: raw-layer DDL and connection helpers.

DuckDB allows one read-write process or many readers, never both. Writers open a read-write connection only for
the duration of a write and close it; readers (status, checks, scoring inputs) open read-only connections.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from dagster_project.faults import failpoint
from dagster_project.settings import load_settings

# The canonical raw layer. Event types are documented in docs/raw_schema.md; the list may grow.
CANONICAL_EVENT_TYPES = ("view", "cart", "remove_from_cart", "fav", "purchase", "checkout", "return")

RAW_DDL = """
create schema if not exists raw;
create table if not exists raw.events (
    event_id      varchar   not null,
    user_id       varchar   not null,
    event_ts      timestamp not null,   -- UTC
    event_type    varchar   not null,
    item_id       varchar,
    category_id   varchar,
    price         double,               -- unit price, >= 0
    quantity      integer   not null,   -- >= 1
    session_id    varchar,
    load_id       varchar   not null    -- the raw.load_audit row that brought it in
);
create table if not exists raw.items (
    item_id     varchar not null,
    category_id varchar,
    brand       varchar,
    price       double,
    load_id     varchar not null,
    description  varchar,               -- the item's name or description, as the source gives it
    described_at timestamp              -- UTC: the first event that showed this text (a run reads the newest before it)
);
-- homes made before item descriptions were loaded
alter table raw.items add column if not exists description varchar;
alter table raw.items add column if not exists described_at timestamp;
create table if not exists raw.users (
    user_id   varchar not null,
    signup_ts timestamp,
    age       integer,
    gender    varchar,
    region    varchar,
    load_id   varchar not null
);
create table if not exists raw.load_audit (
    load_id            varchar   not null,
    source_file        varchar   not null,
    source_format      varchar   not null,
    file_sha256        varchar   not null,
    rows_read          bigint    not null,
    rows_accepted      bigint    not null,
    rows_rejected      bigint    not null,
    rows_duplicate     bigint    not null,
    rejected_by_reason json,
    min_event_ts       timestamp,
    max_event_ts       timestamp,
    loaded_at          timestamp not null
);
create table if not exists raw.rejected_events (
    load_id         varchar not null,
    source_file     varchar not null,
    row_number      bigint  not null,
    reason_code     varchar not null,
    original_values json
);
create table if not exists raw.reviews (
    review_id     varchar   not null,
    user_id       varchar   not null,
    item_id       varchar   not null,
    review_ts     timestamp not null,   -- UTC
    rating        double    not null,   -- 1 .. 5
    title         varchar,
    text          varchar,              -- never published: the serving file holds no review text
    helpful_votes integer,
    total_votes   integer,
    load_id       varchar   not null
);
create table if not exists raw.rejected_reviews (
    load_id         varchar not null,
    source_file     varchar not null,
    row_number      bigint  not null,
    reason_code     varchar not null,
    original_values json
);
"""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def quote_identifier(name: str) -> str:
    """Validate a schema/table/column name before it is spliced into SQL; values always go as parameters."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return f'"{name}"'


def string_literal(value) -> str:
    """A SQL string literal, for the few statements that take no parameters (ATTACH, COPY ... TO): quotes
    doubled, control characters refused."""
    text = str(value)
    if any(ord(ch) < 32 for ch in text):
        raise ValueError(f"refusing a control character in a SQL literal: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def qualified(schema: str, table: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def duckdb_config(path: Path) -> dict:
    """Bounded memory (spilling to a folder beside the warehouse), the same bound dbt's profile sets."""
    return {
        "memory_limit": load_settings().duckdb_memory_limit,
        "temp_directory": str(Path(path).parent / "tmp" / "duckdb"),
    }


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse file open for writing."""


@contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; read-write only for the duration of a write."""
    if read_only and not Path(path).exists():
        raise FileNotFoundError(f"warehouse {path} does not exist yet: ingest events first (shopcast ingest)")
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=duckdb_config(path))
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        from dagster_project.locking import holder  # the run lock lives beside the warehouse

        raise WarehouseBusy(f"{path} is open for writing by {holder(Path(path).parent / 'locks')}: one process may write a DuckDB file, and then "
                            "nobody else may open it. Wait for the run to end, or read the serving file "
                            f"({Path(path).parent / 'serving' / 'shopcast.duckdb'}), which runs never hold.") from exc
    try:
        yield con
    finally:
        con.close()


def ensure_raw_schema(path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as con:
        con.execute(RAW_DDL)


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def column_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.columns where table_schema = ? and table_name = ? "
        "and column_name = ?", [schema, table, column],
    ).fetchone()
    return bool(row and row[0])


def event_day_bounds(con: duckdb.DuckDBPyConnection, business_timezone: str):
    """(first, last) business day with events in raw.events, in the business time zone; (None, None) when empty."""
    con.execute("set TimeZone = 'UTC'")
    return con.execute(
        "select cast(timezone(?, min(event_ts) at time zone 'UTC') as date), "
        "cast(timezone(?, max(event_ts) at time zone 'UTC') as date) from raw.events",
        [business_timezone, business_timezone],
    ).fetchone()


# A day belongs to the history from the first day with at least this share of a median day's events: a handful
# of stray events weeks before an export's real start (the Taobao sample has some in September) is not history.
HISTORY_DAY_SHARE = 0.05
_history_starts: dict[tuple, object] = {}


def history_start(con: duckdb.DuckDBPyConnection, business_timezone: str):
    """The first business day of the events' history (HISTORY_DAY_SHARE), or None when raw.events is empty.
    Remembered per warehouse, zone and row count: a run asks several times, and a scan of 100M events costs."""
    (rows,) = con.execute("select count(*) from raw.events").fetchone()
    (path,) = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    key = (path, business_timezone, rows)
    if key not in _history_starts:
        con.execute("set TimeZone = 'UTC'")
        _history_starts[key] = con.execute(f"""
            with days as (
                select cast(timezone(?, event_ts at time zone 'UTC') as date) as day, count(*) as n
                from raw.events group by 1
            )
            select min(day) from days where n >= {HISTORY_DAY_SHARE} * (select median(n) from days)
        """, [business_timezone]).fetchone()[0]
    return _history_starts[key]


# The last day of an export is often cut short (Online Retail's ends at 12:50, with a quarter of a usual day's
# events): a label window ending on it would count half a day of purchases as a whole one, and the newest cutoff's
# buyers would look fewer than they were. The last day counts as complete with at least this share of the median
# day of the four weeks before it.
COMPLETE_DAY_SHARE = 0.5


def last_day_counts(con: duckdb.DuckDBPyConnection, business_timezone: str):
    """(last business day with events, its events, the median events of the days with events in the 28 days
    before it, or None when there are none); None when raw.events is empty."""
    con.execute("set TimeZone = 'UTC'")
    row = con.execute("""
        with days as (
            select cast(timezone(?, event_ts at time zone 'UTC') as date) as day, count(*) as n
            from raw.events group by 1
        ),
        last_day as (select max(day) as day from days)
        select l.day, (select n from days where day = l.day),
               (select median(n) from days where day < l.day and day >= l.day - interval 28 day)
        from last_day l
    """, [business_timezone]).fetchone()
    return None if row[0] is None else row


def history_end(con: duckdb.DuckDBPyConnection, business_timezone: str):
    """(the last complete business day of the events' history, why the last day with events is not it or None);
    (None, None) when raw.events is empty. See COMPLETE_DAY_SHARE."""
    counts = last_day_counts(con, business_timezone)
    if counts is None:
        return None, None
    day, events, usual = counts
    if usual is None or events >= COMPLETE_DAY_SHARE * usual:
        return day, None
    return day - dt.timedelta(days=1), (
        f"the last day with events, {day}, holds {events} events, {events / usual:.0%} of the median day of the "
        f"4 weeks before it ({usual:g}): taken as cut short by the export, so the history ends the day before")


def table_row_counts(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(schema, table, rows) for every base table and view, views counted too."""
    rows = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_catalog = current_database() and table_schema not in ('information_schema', 'pg_catalog') "
        "order by 1, 2"
    ).fetchall()
    out = []
    for schema, table in rows:
        (count,) = con.execute(f"select count(*) from {qualified(schema, table)}").fetchone()
        out.append((schema, table, int(count)))
    return out


def hash_sample_sql(table: str, rows_per_date: int, where: str = "true") -> str:
    """A subquery: the rows of ``table`` meeting ``where``, at most about ``rows_per_date`` users per as-of date. A
    date with more keeps the users whose hash falls below its share, so that the same users are kept at every date
    and on every run, and any rate is kept in expectation; the sample is drawn in the warehouse, so that a large
    table is never loaded whole. ``where`` may use numbered parameters ($1): it appears twice."""
    n = int(rows_per_date)
    return (f"(select s.* from {table} s join (select as_of_date, count(*) as n from {table} where {where} "
            f"group by 1) k using (as_of_date) "
            f"where ({where}) and (k.n <= {n} or hash(s.user_id) % 1000003 < {n} * 1000003.0 / k.n))")


def replace_dates(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame, date_column: str = "as_of_date") -> int:
    """Atomically replace the rows of the dates in ``frame`` with ``frame``: one transaction, other dates kept.

    The table is created from the frame's columns on first write.
    """
    target = qualified(schema, table)
    column = quote_identifier(date_column)
    con.execute(f"create schema if not exists {quote_identifier(schema)}")
    con.register("_incoming", frame)
    try:
        con.execute(f"create table if not exists {target} as select * from _incoming limit 0")
        # a newer release may add columns (reason codes, say): existing tables grow, old rows get NULL
        existing = {row[0] for row in con.execute(f"describe {target}").fetchall()}
        for name, kind, *_ in con.execute("describe select * from _incoming").fetchall():
            if name not in existing:
                con.execute(f"alter table {target} add column {quote_identifier(name)} {kind}")
        con.execute("begin transaction")
        con.execute(f"delete from {target} where {column} in (select distinct {column} from _incoming)")
        con.execute(f"insert into {target} by name select * from _incoming")
        failpoint("scoring.mid_write")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_incoming")
    return len(frame)
