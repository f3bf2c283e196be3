"""Helpers the serving, load and crash tests share: the shopcast CLI as a subprocess, and table snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from dagster_project.serving import serving_path
from dagster_project.settings import REPO_ROOT, ShopcastPaths
from dagster_project.warehouse import quote_identifier
from tests.conftest import DEMO_AS_OF

BIN = Path(sys.executable).parent
DAILY = ["backfill", DEMO_AS_OF.isoformat(), DEMO_AS_OF.isoformat(), "--job", "daily_scoring"]


def run_as_group(cmd: list[str], env: dict, timeout: float, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """A command as its own process group, returned once every process of the group has gone. (A failpoint kills
    the whole group, but the leader can be reaped while a child still holds the warehouse's lock: the next
    connection would then fail with "Conflicting lock is held".)"""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    _wait_until_group_gone(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _wait_until_group_gone(pgid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (alive := _live_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"processes {alive} of group {pgid} still alive {timeout:.0f} s after its leader exited"


def _live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (a zombie holds no file lock)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def shopcast(args, env=None, timeout=1800, check=True) -> subprocess.CompletedProcess:
    """The shopcast CLI as its own process group (a failpoint kills the group: dbt too)."""
    proc = run_as_group([str(BIN / "shopcast"), *args], timeout=timeout,
                        env={**os.environ, "SHOPCAST_LOG_LEVEL": "WARNING", **(env or {})})
    if check:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def materialize(selection, as_of) -> None:
    """The selected assets of the pipeline's definitions, with their checks, for one as-of date, in this process on
    the home's Dagster instance (as a run materializes them); a failed step fails the test."""
    import dagster as dg

    from dagster_project import runs

    defs = runs.definitions()
    with runs.instance() as instance:
        assert dg.materialize([*defs.assets, *defs.asset_checks], partition_key=as_of.isoformat(), instance=instance,
                              resources=defs.resources, selection=selection).success


def served(paths: ShopcastPaths) -> Path:
    return serving_path(paths.serving)


# Columns that differ between any two runs by design: times, run ids, load ids, and the CLV model version (BG/NBD
# is registered anew at every scoring run).
VOLATILE = {"scored_at", "computed_at", "loaded_at", "load_id", "decided_at", "dagster_run_id", "published_at",
            "publish_id"}
VOLATILE_BY_TABLE = {"predictions.clv": {"model_version"},
                     # a hash of every column of a published table, the volatile ones (scored_at...) included
                     "serving.published_tables": {"content_hash"},
                     # absolute paths: a copied home loads the same file (same checksum) from another folder
                     "raw.load_audit": {"source_file"}, "raw.rejected_events": {"source_file"},
                     "raw.rejected_reviews": {"source_file"}}


ROUNDING_OFFSET = 3.14159e-9


def snapshot(paths: ShopcastPaths, extra_volatile: frozenset = frozenset(), where: dict | None = None) -> dict:
    """Every base table of the warehouse and the serving file: (rows, an order-free hash of its stable columns);
    ``where`` limits a table (schema.table) to some of its rows."""
    out = {}
    for label, file in (("warehouse", paths.warehouse), ("serving", served(paths))):
        if not file.exists():
            continue
        with duckdb.connect(str(file), read_only=True) as con:
            tables = con.execute("select table_schema, table_name from information_schema.tables "
                                 "where table_type = 'BASE TABLE' order by 1, 2").fetchall()
            for schema, table in tables:
                name = f"{schema}.{table}"
                skip = VOLATILE | VOLATILE_BY_TABLE.get(name, set()) | extra_volatile
                # DuckDB sums in parallel, so a double can differ in its last bits between two identical runs. Money
                # averaged over days often lands exactly on a rounding half (66.7340625), where that noise flips the
                # 6th decimal: the offset moves the halves off decimal values, where such data never fall.
                columns = [f"round({quote_identifier(c)} + {ROUNDING_OFFSET}, 6)" if kind in ("DOUBLE", "FLOAT")
                           else quote_identifier(c)
                           for c, kind in con.execute(
                               "select column_name, data_type from information_schema.columns where table_schema = ? "
                               "and table_name = ? order by ordinal_position", [schema, table]).fetchall()
                           if c not in skip]
                digest = f"sum(hash({', '.join(columns)})::hugeint)" if columns else "0"
                rows = f" where {where[name]}" if where and name in where else ""
                out[f"{label}:{name}"] = con.execute(f"select count(*), {digest} from {schema}.{table}{rows}").fetchone()
    return out


