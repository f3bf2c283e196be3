"""What BI reads: the prediction tables, the audiences and the latest scores, published to a serving DuckDB file
(and Parquet files) under ``<home>/serving/`` that readers never share with the pipeline.

DuckDB admits one writing process or many readers of a file, never both: a dashboard holding the warehouse open
would block the nightly run. So the pipeline writes the warehouse, and each publish builds a new serving file under
a temporary name and swaps it in with ``os.replace`` (atomic on POSIX). A reader keeps the snapshot it opened; the
next connection sees the new one; nobody ever sees half a publish. Parquet copies go to a folder per publish and a
``current`` symlink is swapped the same way.

Every serving file carries ``serving.publish`` (one row: id, time, as-of date, run) and ``serving.published_tables``
(rows, as-of range and a content hash per table), so a reader can check that what it reads belongs together: the
hash is ``CONTENT_HASH_SQL``, the sum of every row's hash, independent of row order and equal in the Parquet copy.

No Dagster import: the asset in defs/serving.py is a thin wrapper, and tests call this directly too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from dagster_project.faults import failpoint
from dagster_project.settings import env_name
from dagster_project.targets import TARGETS
from dagster_project.warehouse import qualified, quote_identifier, string_literal

SERVING_FILE = "shopcast.duckdb"
PARQUET_DIR = "parquet"
CURRENT_LINK = "current"
# (schema, table, dated): dated tables keep their last serving_days as-of dates; the others are copied whole
PUBLISHED_TABLES = (
    *(("predictions", name, True) for name in TARGETS),   # the target registry: every target's predictions
    ("predictions", "clv", True),
    ("predictions", "next_items", True),
    ("predictions", "new_items", True),
    ("predictions", "cold_start_items", True),
    ("predictions", "user_scores_latest", False),
    ("audiences", "aud_likely_purchasers_7d", True),
    ("audiences", "aud_likely_churning_high_value", True),
    ("audiences", "aud_predicted_top_spenders", True),
    ("audiences", "aud_likely_purchasers_with_items", True),
    ("audiences", "audience_sizes", False),
    ("monitoring", "prediction_performance", False),
    ("monitoring", "model_decisions", False),
)
# Published when present: the decision log appears with the first training run, not with the first scoring run.
OPTIONAL_TABLES = {("monitoring", "model_decisions")}
# Columns that identify a person: replaced by a keyed hash when pseudonymisation is on.
IDENTIFYING_COLUMNS = ("user_id",)
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class ServingOptions:
    days: int = 28                      # as-of dates of the dated tables kept in the serving file
    pseudonymise: bool = False          # user ids → HMAC-SHA256(key, user_id) in everything published
    key: str = ""                       # the pseudonymisation key (pseudonymisation_key), never stored
    storage_version: str = "v1.0.0"     # the oldest DuckDB that must open the file (BI drivers lag behind)
    keep_parquet_publishes: int = 2     # the current one and the one before, for readers still on it

    def __post_init__(self):
        if self.days < 1:
            raise ValueError(f"{env_name('serving_days')} must be at least 1, got {self.days}")
        if self.pseudonymise and len(self.key) < MIN_KEY_LENGTH:
            raise ValueError(f"{env_name('pseudonymise_user_ids')} is on but {env_name('pseudonymisation_key')} is "
                             f"missing or shorter than {MIN_KEY_LENGTH} characters: set a secret key (it is never "
                             "stored)")
        if not self.storage_version.startswith("v") or not self.storage_version[1:].replace(".", "").isdigit():
            raise ValueError(f"{env_name('serving_storage_version')} must look like v1.0.0, got "
                             f"{self.storage_version!r}")


@dataclass(frozen=True)
class Publish:
    publish_id: str
    as_of_date: dt.date
    path: Path
    parquet: Path
    tables: pd.DataFrame               # schema, table_name, rows, min_as_of_date, max_as_of_date
    seconds: float


def pseudonym(key: str, user_id: str) -> str:
    """A stable keyed hash: the same user gets the same pseudonym in every publish; without the key it cannot be
    reversed or recomputed from a guessed id."""
    return "u_" + hmac.new(key.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


def serving_path(serving_dir: Path) -> Path:
    return serving_dir / SERVING_FILE


def _existing(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    return {(s, t) for s, t in con.execute(
        "select table_schema, table_name from information_schema.tables where table_catalog = 'wh'").fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> list[str]:
    """Column names of ``catalog.schema.table``, in order (the one catalog lookup every step below shares)."""
    return [c for (c,) in con.execute(
        "select column_name from information_schema.columns where table_catalog = ? and table_schema = ? "
        "and table_name = ? order by ordinal_position", [catalog, schema, table]).fetchall()]


def _source_sql(schema: str, table: str, dated: bool, days: int) -> str:
    source = f"wh.{qualified(schema, table)}"
    if not dated:
        return f"select * from {source}"
    # the last N as-of dates present, not a calendar window: a paused pipeline still publishes its latest scores
    return (f"select * from {source} where as_of_date in (select distinct as_of_date from {source} "
            f"order by as_of_date desc limit {int(days)})")


def _clean_stale(serving_dir: Path, keep: int) -> None:
    """Remove what killed publishes left (temporary files) and Parquet publishes older than the last ``keep``."""
    for leftover in serving_dir.glob(f".{SERVING_FILE}.*.tmp*"):
        leftover.unlink()
    parquet_root = serving_dir / PARQUET_DIR
    if not parquet_root.is_dir():
        return
    current = (parquet_root / CURRENT_LINK).resolve() if (parquet_root / CURRENT_LINK).exists() else None
    folders = sorted((p for p in parquet_root.iterdir() if p.is_dir() and not p.is_symlink()),
                     key=lambda p: p.name)
    for folder in folders[:-keep] if keep else folders:
        if folder != current:
            shutil.rmtree(folder)
    for leftover in parquet_root.glob(f".{CURRENT_LINK}.*"):
        leftover.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(warehouse: Path, serving_dir: Path, as_of: dt.date, options: ServingOptions,
            run_id: str = "") -> Publish:
    """Build a complete serving file and Parquet folder from the warehouse, then swap both in atomically."""
    started = dt.datetime.now(dt.UTC)
    serving_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(serving_dir, options.keep_parquet_publishes)  # what a killed publish left behind
    # sortable by time, unique across runs: the Parquet folders are ordered by it
    publish_id = f"{started:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    temporary = serving_dir / f".{SERVING_FILE}.{publish_id}.tmp"
    parquet_dir = serving_dir / PARQUET_DIR / publish_id
    parquet_dir.mkdir(parents=True)
    try:
        tables = _build(warehouse, temporary, parquet_dir, publish_id, started, as_of, run_id, options)
    except BaseException:  # a failed publish leaves nothing behind; the published file is untouched
        temporary.unlink(missing_ok=True)
        shutil.rmtree(parquet_dir, ignore_errors=True)
        raise
    _fsync(temporary)
    failpoint("publish.before_swap")
    final = serving_path(serving_dir)
    os.replace(temporary, final)
    _swap_link(serving_dir / PARQUET_DIR, publish_id)
    _fsync(serving_dir)
    _clean_stale(serving_dir, options.keep_parquet_publishes)
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return Publish(publish_id, as_of, final, serving_dir / PARQUET_DIR / CURRENT_LINK, tables, seconds)


def _build(warehouse: Path, temporary: Path, parquet_dir: Path, publish_id: str, started: dt.datetime,
           as_of: dt.date, run_id: str, options: ServingOptions) -> pd.DataFrame:
    """The complete serving file under its temporary name, and its Parquet copies; returns the table summary."""
    con = duckdb.connect()
    try:
        # ATTACH and COPY take no parameters: paths go in as escaped literals
        con.execute(f"attach {string_literal(warehouse)} as wh (read_only)")
        con.execute(f"attach {string_literal(temporary)} as serving "
                    f"(storage_version {string_literal(options.storage_version)})")
        present = _existing(con)
        missing = [f"{s}.{t}" for s, t, _ in PUBLISHED_TABLES if (s, t) not in present | OPTIONAL_TABLES]
        if missing:
            raise RuntimeError(f"cannot publish: {', '.join(missing)} missing from the warehouse {warehouse}: "
                               "materialize the scoring and audience assets first")
        published = [(s, t, d) for s, t, d in PUBLISHED_TABLES if (s, t) in present]
        if options.pseudonymise:
            _register_pseudonyms(con, options, published)
        rows = []
        for schema, table, dated in published:
            select = _source_sql(schema, table, dated, options.days)
            if options.pseudonymise:
                select = _pseudonymised(con, schema, table, select)
            con.execute(f"create schema if not exists serving.{quote_identifier(schema)}")
            con.execute(f"create table serving.{qualified(schema, table)} as {select}")
            rows.append(_table_summary(con, schema, table))
        failpoint("publish.tables_written")
        tables = pd.DataFrame(rows, columns=["schema", "table_name", "rows", "min_as_of_date", "max_as_of_date",
                                             "content_hash"])
        _write_manifest(con, publish_id, started, as_of, run_id, options, tables)
        for schema, table, _ in (*published, ("serving", "publish", False),
                                 ("serving", "published_tables", False)):
            con.execute(f"copy (select * from serving.{qualified(schema, table)}) to "
                        f"{string_literal(parquet_dir / f'{schema}.{table}.parquet')} (format parquet)")
        con.execute("detach serving")  # checkpoints: the file is complete, no WAL beside it
    finally:
        con.close()
    return tables


def _swap_link(parquet_root: Path, publish_id: str) -> None:
    link = parquet_root / CURRENT_LINK
    if link.is_dir() and not link.is_symlink():  # a home copied without keeping symlinks: a stale copy of a publish
        shutil.rmtree(link)
    temporary = parquet_root / f".{CURRENT_LINK}.{publish_id}"
    os.symlink(publish_id, temporary)
    os.replace(temporary, link)


def _register_pseudonyms(con: duckdb.DuckDBPyConnection, options: ServingOptions, published: list) -> None:
    ids = set()
    for schema, table, _ in published:
        columns = _columns(con, "wh", schema, table)
        for column in IDENTIFYING_COLUMNS:
            if column in columns:
                ids.update(v for (v,) in con.execute(
                    f"select distinct {quote_identifier(column)} from wh.{qualified(schema, table)}").fetchall()
                    if v is not None)
    mapping = pd.DataFrame({"original": sorted(ids)})
    mapping["pseudonym"] = [pseudonym(options.key, v) for v in mapping.original]
    con.register("pseudonyms", mapping)


def _pseudonymised(con: duckdb.DuckDBPyConnection, schema: str, table: str, select: str) -> str:
    replaced = [c for c in IDENTIFYING_COLUMNS if c in _columns(con, "wh", schema, table)]
    if not replaced:
        return select
    joins = " ".join(f"left join pseudonyms p{i} on p{i}.original = src.{quote_identifier(c)}"
                     for i, c in enumerate(replaced))
    replace = ", ".join(f"p{i}.pseudonym as {quote_identifier(c)}" for i, c in enumerate(replaced))
    return f"select src.* replace ({replace}) from ({select}) src {joins}"


# A table's content in one value: order-independent (a sum), duplicate rows counted (unlike xor), every column and
# value in it (DuckDB's hash of the row as a struct). Not cryptographic: it finds a torn or mixed read, not tampering.
CONTENT_HASH_SQL = "select coalesce(sum(hash(content)), 0)::varchar from {relation} content"


def content_hash(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """CONTENT_HASH_SQL of a table or ``read_parquet(...)`` relation, as the manifest records it."""
    return con.execute(CONTENT_HASH_SQL.format(relation=relation)).fetchone()[0]


def _table_summary(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> tuple:
    name = f"serving.{qualified(schema, table)}"
    if "as_of_date" in _columns(con, "serving", schema, table):
        count, low, high = con.execute(f"select count(*), min(as_of_date), max(as_of_date) from {name}").fetchone()
    else:
        (count,), low, high = con.execute(f"select count(*) from {name}").fetchone(), None, None
    return schema, table, int(count), low, high, content_hash(con, name)


def _write_manifest(con, publish_id: str, started: dt.datetime, as_of: dt.date, run_id: str,
                    options: ServingOptions, tables: pd.DataFrame) -> None:
    con.execute("create schema if not exists serving.serving")
    con.execute("create table serving.serving.publish (publish_id varchar, published_at timestamp, "
                "as_of_date date, dagster_run_id varchar, pseudonymised boolean, serving_days integer)")
    con.execute("insert into serving.serving.publish values (?, ?, ?, ?, ?, ?)",
                [publish_id, started.replace(tzinfo=None), as_of, run_id, options.pseudonymise, options.days])
    con.register("published_tables_frame", tables)
    con.execute("create table serving.serving.published_tables as select * from published_tables_frame")
    con.unregister("published_tables_frame")


def read_manifest(path: Path) -> tuple[dict, pd.DataFrame]:
    """(the publish row, the published tables) of a serving file, read-only."""
    with duckdb.connect(str(path), read_only=True) as con:
        publish_row = con.execute("select * from serving.publish").df().iloc[0].to_dict()
        tables = con.execute("select * from serving.published_tables order by 1, 2").df()
    return publish_row, tables


def verify(path: Path, parquet: Path | None = None) -> list[str]:
    """Problems of a serving file (and of its Parquet copies, when their folder is given): tables whose rows or
    content differ from what the manifest says. Empty when consistent."""
    problems = []
    with duckdb.connect(str(path), read_only=True) as con:
        recorded = {c for (c,) in con.execute(
            "select column_name from information_schema.columns where table_schema = 'serving' "
            "and table_name = 'published_tables'").fetchall()}
        hashed = "content_hash" in recorded  # a serving file published before the hash has counts only
        for schema, table, rows, expected in con.execute(
                f"select schema, table_name, rows, {'content_hash' if hashed else 'null'} "
                "from serving.published_tables").fetchall():
            relations = {"": qualified(schema, table)}
            if parquet is not None:
                relations["Parquet copy of "] = f"read_parquet({string_literal(parquet / f'{schema}.{table}.parquet')})"
            for what, relation in relations.items():
                (found,) = con.execute(f"select count(*) from {relation}").fetchone()
                if found != rows:
                    problems.append(f"{what}{schema}.{table}: {found} rows, the manifest says {rows}")
                elif hashed and (actual := content_hash(con, relation)) != expected:
                    problems.append(f"{what}{schema}.{table}: content hash {actual}, the manifest says {expected} "
                                    "(same row count, different rows)")
    return problems
