"""Load one export file into ``raw.events`` (or ``raw.reviews``: ingest/reviews.py): validate every row in SQL, quarantine bad rows with a reason,
skip duplicates, and record an audit row whose counts reconcile (rows read = accepted + rejected + duplicates).

Each load is one DuckDB transaction: a file is loaded completely or not at all. A file that cannot be read
(wrong format, binary, missing required columns) raises ``IngestError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dagster_project.faults import failpoint, fault
from dagster_project.ingest.formats import FORMATS
from dagster_project.ingest.mapped import mapped_table
from dagster_project.ingest.readers import SUFFIXES, IngestError, file_sha256, first_error_line
from dagster_project.ingest.reviews import REVIEW_FORMATS, load_review_rows
from dagster_project.warehouse import CANONICAL_EVENT_TYPES, connect, ensure_raw_schema

# Timestamps outside [EARLIEST_VALID_TS, now + FUTURE_TOLERANCE] are quarantined.
EARLIEST_VALID_TS = "2000-01-01"
FUTURE_TOLERANCE_HOURS = 24


@dataclass
class LoadReport:
    source_file: str
    source_format: str
    file_sha256: str
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0           # copies within the file + rows whose id was loaded before
    rows_duplicate_in_file: int = 0   # valid rows whose id repeats an earlier row of the same file
    rows_already_loaded: int = 0      # valid first copies whose id raw.events already holds
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    items_described: int = 0          # items whose name or description this file gave (raw.items)
    duplicate_file: bool = False
    load_id: str | None = None

    def reconciles(self) -> bool:
        """Every row read is accounted for, each count measured on its own (rows written, rows quarantined,
        duplicates counted as such): a row lost between reading and writing breaks the sum."""
        return (self.rows_read == self.rows_accepted + self.rows_rejected + self.rows_duplicate
                and self.rows_duplicate == self.rows_duplicate_in_file + self.rows_already_loaded)


# Reasons in the order they are tested: a row gets the first that applies.
VALIDATED_SQL = """
create temp table _validated as
with typed as (
    select
        *,
        -- naive timestamps are UTC (the session time zone is UTC); aware ones are converted to UTC
        cast(try_cast(event_ts_raw as timestamptz) as timestamp) as event_ts,
        try_cast(price_raw as double) as price,
        -- a missing quantity is one item; a fractional one is an error, never rounded
        case
            when quantity_raw is null then 1
            when try_cast(quantity_raw as double) = trunc(try_cast(quantity_raw as double))
                then try_cast(try_cast(quantity_raw as double) as integer)
        end as quantity
    from ({mapped})
)
select
    *,
    case
        when _format_reason is not null then _format_reason
        when user_id is null or trim(user_id) = '' then 'missing_user_id'
        when event_ts_raw is null or event_ts is null then 'bad_timestamp'
        when event_ts < timestamp '{earliest}' then 'timestamp_too_old'
        when event_ts > now()::timestamp + interval {future_hours} hour then 'timestamp_in_future'
        when event_type is null or event_type not in ({event_types}) then 'unknown_event_type'
        when price_raw is not null and price is null then 'non_numeric_price'
        -- NaN or an infinity would turn every money sum of the user into NaN or inf
        when price is not null and not isfinite(price) then 'non_finite_price'
        when price < 0 then 'negative_price'
        when quantity is null then 'non_integer_quantity'
        when quantity < 1 then 'non_positive_quantity'
    end as _reason,
    coalesce(
        nullif(trim(event_id), ''),
        md5(concat_ws('|', trim(user_id), cast(event_ts as varchar), event_type, coalesce(item_id, ''),
                      coalesce(cast(price as varchar), ''), cast(quantity as varchar), coalesce(session_id, '')))
    ) as _event_id
from typed
"""

# First copy of each event id in the file, minus ids already loaded; the time bounds let DuckDB skip
# row groups of raw.events outside the file's span (an id includes its timestamp, so duplicates share it).
ACCEPTED_SQL = """
create temp table _accepted as
select c.*
from (
    select *, row_number() over (partition by _event_id order by _row_number) as _copy
    from _validated
    where _reason is null
) c
anti join (
    select event_id from raw.events where event_ts between ? and ?
) e on e.event_id = c._event_id
where c._copy = 1
"""


def load_file(warehouse: Path, path: Path, fmt: str = "canonical", mapping: Path | None = None) -> LoadReport:
    """Load one file; idempotent: the same file (by content) loads once, the same event once.
    ``mapping`` is the YAML mapping of the ``mapped`` format (default: found beside the file)."""
    path = Path(path).resolve()
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; expected one of {', '.join(sorted(FORMATS))}")
    if mapping is not None and fmt != "mapped":
        raise IngestError(f"a mapping file applies to the mapped format only, not to {fmt}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    ensure_raw_schema(warehouse)
    reviews = fmt in REVIEW_FORMATS or (fmt == "mapped" and mapped_table(path, mapping) == "reviews")
    report = LoadReport(str(path), fmt, file_sha256(path))
    with connect(warehouse) as con:
        con.execute("set TimeZone = 'UTC'")
        reader, mapped = FORMATS[fmt](con, path, **({"mapping": mapping} if fmt == "mapped" else {}))
        try:
            con.execute(f"create temp table _source as select row_number() over () as _row_number, * from {reader}")
        except duckdb.Error as exc:
            raise IngestError(f"{path}: cannot be parsed as {fmt}: {first_error_line(exc)}") from exc
        (report.rows_read,) = con.execute("select count(*) from _source").fetchone()
        previous = con.execute(
            "select load_id from raw.load_audit where file_sha256 = ? and rows_accepted + rows_rejected > 0",
            [report.file_sha256],
        ).fetchone()
        load_id = report.load_id = uuid.uuid4().hex
        con.execute("begin transaction")
        if previous:
            # the same bytes were loaded before: everything in it is a duplicate
            report.duplicate_file = True
            report.rows_duplicate = report.rows_already_loaded = report.rows_read
        elif reviews:
            load_review_rows(con, report, load_id, mapped, earliest=EARLIEST_VALID_TS,
                             future_hours=FUTURE_TOLERANCE_HOURS)
        else:
            _load_rows(con, report, load_id, mapped)
        con.execute(
            "insert into raw.load_audit select ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "(select min(event_ts) from _accepted), (select max(event_ts) from _accepted), ?"
            if not previous else
            "insert into raw.load_audit select ?, ?, ?, ?, ?, ?, ?, ?, ?, null, null, ?",
            [load_id, report.source_file, fmt, report.file_sha256, report.rows_read, report.rows_accepted,
             report.rows_rejected, report.rows_duplicate, json.dumps(report.rejected_by_reason),
             datetime.now(UTC).replace(tzinfo=None)],
        )
        if report.rows_read and not report.rows_accepted and not report.rows_duplicate:
            con.execute("rollback")
            reasons = ", ".join(f"{k}: {v}" for k, v in report.rejected_by_reason.items())
            raise IngestError(f"{path}: not a {fmt} file, or a broken one: every one of its {report.rows_read:,} "
                              f"rows was rejected ({reasons}); nothing was loaded")
        if not report.reconciles():  # a bug, never bad input: refuse to commit counts that do not add up
            con.execute("rollback")
            raise RuntimeError(f"{path}: counts do not reconcile: {report}")
        failpoint("ingest.before_commit")
        con.execute("commit")
    return report


def _load_rows(con: duckdb.DuckDBPyConnection, report: LoadReport, load_id: str, mapped: str) -> None:
    event_types = ", ".join(f"'{t}'" for t in CANONICAL_EVENT_TYPES)
    con.execute(VALIDATED_SQL.format(earliest=EARLIEST_VALID_TS, future_hours=FUTURE_TOLERANCE_HOURS,
                                     event_types=event_types, mapped=mapped))
    bounds = con.execute("select min(event_ts), max(event_ts) from _validated where _reason is null").fetchone()
    con.execute(ACCEPTED_SQL, list(bounds))
    if fault("ingest.lose_row"):  # a deliberate bug for the audit's test: one accepted row never reaches raw.events
        con.execute("delete from _accepted where _row_number = (select min(_row_number) from _accepted)")
    # in the file's order, not sorted by time: files arrive a day at a time, so raw.events is ordered by day
    # already where it matters (the time bounds above), and sorting cost a third of a large file's load
    con.execute(
        """
        insert into raw.events
        select _event_id, trim(user_id), event_ts, event_type, item_id, category_id, price, quantity,
               session_id, ?
        from _accepted
        """,
        [load_id],
    )
    # the items' names or descriptions, where the export has them: one row per item, text and file, dated by the
    # first event that shows the text, so that a run reads the text an item had on its as-of date (dim_items)
    con.execute(
        """
        insert into raw.items (item_id, category_id, brand, price, load_id, description, described_at)
        select item_id, null, null, null, ?, trim(item_description), min(event_ts)
        from _accepted
        where item_id is not null and nullif(trim(item_description), '') is not null
        group by item_id, trim(item_description)
        """,
        [load_id],
    )
    (report.items_described,) = con.execute("select count(distinct item_id) from raw.items where load_id = ?",
                                            [load_id]).fetchone()
    con.execute(
        """
        insert into raw.rejected_events
        select ?, ?, v._row_number, v._reason, to_json(s)
        from _validated v join (select * exclude (_row_number), _row_number as _rn from _source) s
          on s._rn = v._row_number
        where v._reason is not null
        """,
        [load_id, report.source_file],
    )
    # each count measured on its own, so that read = accepted + rejected + duplicate can fail: accepted is what
    # raw.events received, rejected what raw.rejected_events received, duplicates are counted from the ids
    (report.rows_accepted,) = con.execute("select count(*) from raw.events where load_id = ?", [load_id]).fetchone()
    report.rejected_by_reason = dict(con.execute(
        "select reason_code, count(*) from raw.rejected_events where load_id = ? group by 1 order by 1", [load_id]
    ).fetchall())
    report.rows_rejected = sum(report.rejected_by_reason.values())
    report.rows_duplicate_in_file, report.rows_already_loaded = con.execute(
        """
        with firsts as (
            select _event_id, count(*) - 1 as later_copies from _validated where _reason is null group by 1
        )
        select coalesce(sum(later_copies), 0),
               count(*) filter (where _event_id in (
                   select event_id from raw.events where load_id <> ? and event_ts between ? and ?))
        from firsts
        """, [load_id, *bounds]).fetchone()
    report.rows_duplicate = report.rows_duplicate_in_file + report.rows_already_loaded


def loaded_checksums(warehouse: Path) -> set[str]:
    """SHA-256 of every file loaded so far (with at least one row accepted or rejected)."""
    ensure_raw_schema(warehouse)
    with connect(warehouse, read_only=True) as con:
        return {r[0] for r in con.execute(
            "select distinct file_sha256 from raw.load_audit where rows_accepted + rows_rejected > 0").fetchall()}


def load_path(warehouse: Path, path: Path, fmt: str = "canonical", mapping: Path | None = None,
              *, new_files_only: bool = False) -> list[LoadReport]:
    """A file, or every supported file in a folder (sorted, so loads are reproducible). ``new_files_only``
    (the scheduled scan of a landing folder, where files accumulate) passes over files already loaded without
    reading them, so a daily run costs the new day, not the history; an explicit load of a known file still
    records it as a duplicate."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise IngestError(f"{path}: no .parquet or .csv files in this folder")
    else:
        files = [path]
    if new_files_only:
        known = loaded_checksums(warehouse)
        files = [f for f in files if file_sha256(f) not in known]
    return [load_file(warehouse, f, fmt, mapping) for f in files]
