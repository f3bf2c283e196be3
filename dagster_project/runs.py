"""Start Dagster runs of the asset graph from Python (the CLI and the tests use these).

Runs go through the Dagster instance in DAGSTER_HOME, so they appear in the UI's run history, and through
the same job definitions the schedule uses: nothing here bypasses the graph.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from dagster_project.locking import run_lock
from dagster_project.settings import Settings, ensure_home, load_settings
from dagster_project.warehouse import connect, event_day_bounds, history_end, history_start, table_exists


class RunFailed(RuntimeError):
    """A Dagster run did not succeed; the message names the failed steps and checks."""

    def __init__(self, message: str, result: dg.ExecuteInProcessResult | None = None):
        super().__init__(message)
        self.result = result


_console: Callable[[str], None] | None = None  # set by the CLI: runs are followed step by step (console.py)
_log_file: Path | None = None


def follow_runs_on_console(log_file: Path, say: Callable[[str], None] = print) -> None:
    """Runs started from now on print one line per step through ``say`` instead of Dagster's console log, and
    write every event to ``log_file``."""
    global _console, _log_file
    _console, _log_file = say, log_file


def definitions() -> dg.Definitions:
    """The code location's definitions, with resources configured from the current settings."""
    return _definitions(load_settings())


@cache
def _definitions(settings: Settings) -> dg.Definitions:
    """(Keyed by the settings: a process that moves to another home, as the tests do, gets resources for it; each
    load builds the resources from the settings of that moment, which are ``settings``.)"""
    from dagster_project.definitions import defs

    return defs()


# Every asset check of the definitions, stored in the Dagster home with what they were derived from: `shopcast
# status` lists each check's latest result, and loading the definitions only to learn their names took ~8 s of its
# ~10 (measured on the GA sample's home).
CHECK_KEYS_FILE = "asset_check_keys.json"
CODE_PACKAGES = ("dagster_project", "ml", "expectations")


def _definitions_fingerprint(settings: Settings) -> str:
    """What the definitions are built from: the settings (the targets, the checks' thresholds; not where the home
    lies, so that a moved or copied home keeps its list), the code, and the dbt project's files (dbt's tests are
    checks too; their files, not the manifest, which every parse rewrites with its own time stamp)."""
    import hashlib
    import json

    from dagster_project.settings import REPO_ROOT, dbt_source_stamps, file_stamps

    code = sorted(f for package in CODE_PACKAGES for f in (REPO_ROOT / package).rglob("*.py"))
    stamps = [*file_stamps(code), *dbt_source_stamps()]
    payload = json.dumps([settings.model_dump(mode="json", exclude={"home"}), stamps], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def asset_check_keys() -> list[dg.AssetCheckKey]:
    """Every asset check of the definitions: stored beside the Dagster instance when the definitions they were
    read from are unchanged, read from the definitions (and stored) otherwise."""
    import json

    settings = load_settings()  # (the entry points made the home: ensure_home)
    stored = settings.paths.dagster_home / CHECK_KEYS_FILE
    fingerprint = _definitions_fingerprint(settings)
    if stored.is_file():
        saved = json.loads(stored.read_text())
        if saved.get("fingerprint") == fingerprint:
            return [dg.AssetCheckKey(dg.AssetKey(path), name) for path, name in saved["checks"]]
    keys = sorted(definitions().resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())
    stored.parent.mkdir(parents=True, exist_ok=True)
    written = stored.with_suffix(f".{uuid.uuid4().hex}.tmp")  # whole or not at all: a reader may be starting
    written.write_text(json.dumps({"fingerprint": fingerprint,
                                   "checks": [[list(k.asset_key.path), k.name] for k in keys]}))
    written.replace(stored)
    return keys


def instance() -> dg.DagsterInstance:
    """The home's Dagster instance (what `make ui` shows), whatever DAGSTER_HOME this process was given."""
    settings = ensure_home()
    return dg.DagsterInstance.from_config(str(settings.paths.dagster_home))


def _execute(job_name: str, *, run_config: dict | None = None, partition_key: str | None = None,
             partition_range: tuple[str, str] | None = None, tags: dict | None = None,
             asset_selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    job = definitions().resolve_job_def(job_name)
    asset_check_keys()  # stored for `shopcast status` while the definitions are loaded
    settings = load_settings()
    # Without a console watcher (tests, Python callers), Dagster's console logger prints at the log level; the CLI
    # silences it and prints one line per step instead, the whole log going to a file (console.py). Either way the
    # full event stream, DEBUG included, is in the Dagster UI's run view.
    level = "CRITICAL" if _console is not None else settings.log_level
    run_config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": level}}}}
    tags = dict(tags or {})
    if partition_range:
        tags |= {ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[1]}
    run_id = str(uuid.uuid4())
    with instance() as inst:
        watcher = None
        if _console is not None:
            from dagster_project.console import RunWatcher

            steps = job.get_subset(asset_selection=set(asset_selection)) if asset_selection else job
            _console(f"{job_name} run {run_id}")
            watcher = RunWatcher(inst, run_id, job_name, len(steps.graph.node_dict), _log_file,
                                 logging.getLevelName(settings.log_level), say=_console).start()
        try:
            # what the run prints itself (dagster-dbt copies dbt's output to stdout, MLflow its registry notices to
            # stderr) goes to the log file
            with (contextlib.redirect_stdout(watcher) if watcher is not None else contextlib.nullcontext(),
                  contextlib.redirect_stderr(watcher) if watcher is not None else contextlib.nullcontext()):
                result = job.execute_in_process(run_config=run_config, instance=inst, partition_key=partition_key,
                                                tags=tags, raise_on_error=False, asset_selection=asset_selection,
                                                run_id=run_id)
        finally:
            if watcher is not None:
                watcher.stop()
    if not result.success:
        raise RunFailed(_failure_message(job_name, result), result)
    return result


def _failure_message(job_name: str, result: dg.ExecuteInProcessResult) -> str:
    lines = [f"run {result.run_id} of job {job_name} failed"]
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            lines.append(f"  step {event.step_key}: {_innermost(event.step_failure_data.error)}")
        if event.event_type_value == "RESOURCE_INIT_FAILURE":  # e.g. the warehouse's run lock held by another run
            lines.append(f"  {event.message.rstrip('.')}: {_innermost(event.event_specific_data.error)}")
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines += _explain_check(evaluation)
    return "\n".join(lines)


def _innermost(error) -> str:
    """The error's own message, not Dagster's wrappers around it."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error else "failed"


def _explain_check(evaluation) -> list[str]:
    """A failed check as the CLI shows it: its name and partition, the one-line explanation, and each failed
    expectation with its batch, observed value and bound, then where the Data Docs are (defs/quality.py)."""
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    partition = f" for partition {evaluation.partition}" if getattr(evaluation, "partition", None) else ""
    blocking = " (blocking: what is downstream was not run)" if evaluation.blocking else ""
    lines = [f"  check {evaluation.asset_check_key.to_user_string()} failed{partition}{blocking}"]
    if meta.get("explanation"):
        lines.append(f"    {meta['explanation']}")
    lines += [f"    {problem}" for problem in meta.get("problems") or []]  # the checks that list what they found
    for failed in meta.get("failed_expectations") or []:
        column = f" on column {failed['column']}" if failed.get("column") else ""
        bound = f", allowed {failed['bound']}" if failed.get("bound") else ""
        lines.append(f"    {failed['batch']}: {failed['expectation']}{column}: observed {failed['observed']}{bound}")
    if meta.get("data_docs"):
        lines.append(f"    Data Docs: {meta['data_docs']} (served by `shopcast ui`)")
    return lines


def ingest(fmt: str, paths: list[str], mapping: str | None = None) -> dg.ExecuteInProcessResult:
    config = {"ops": {"raw__events": {"config": {"format": fmt, "paths": [str(p) for p in paths],
                                                 "mapping": str(mapping) if mapping else None}}}}
    return _execute("ingest", run_config=config)


@dataclass(frozen=True)
class EventSpan:
    first_date: dt.date
    last_date: dt.date
    history_start: dt.date   # the first day of the history proper (warehouse.history_start: stray events left out)
    history_end: dt.date     # the last complete day (warehouse.history_end: an export's cut-short last day left out)
    end_note: str | None = None  # why history_end is before last_date


@contextmanager
def _read_between_runs():
    """A read-only connection to the warehouse once no run is writing it: DuckDB refuses a reader while another
    process writes, so the reads that plan a run wait for the run lock like a run would (and release it at once)."""
    settings = load_settings()
    paths = settings.paths
    with (run_lock(paths.locks, f"cli-{os.getpid()}", "planning a run", settings.run_lock_timeout_seconds),
          connect(paths.warehouse, read_only=True) as con):
        yield con


def event_span() -> EventSpan:
    """First and last business day with events (in the business time zone)."""
    tz = load_settings().business_tz
    with _read_between_runs() as con:
        if not table_exists(con, "raw", "events"):
            raise RunFailed("raw.events does not exist yet: load events first (shopcast ingest)")
        first, last = event_day_bounds(con, tz)
        start = history_start(con, tz) if first is not None else None
        end, end_note = history_end(con, tz)
    if first is None:
        raise RunFailed("raw.events is empty: load events first (shopcast ingest)")
    return EventSpan(first, last, start, end, end_note)


def run_partition(as_of: dt.date) -> dg.ExecuteInProcessResult:
    """The whole graph for one as-of date (what the daily schedule runs)."""
    return _execute("shopcast_graph", partition_key=as_of.isoformat())


def backfill_features(first: dt.date, last: dt.date, only: list[dt.date] | None = None) -> dg.ExecuteInProcessResult:
    """Features and their checks for the as-of dates first .. last, as one run; with ``only``, for those dates of
    the range alone (named in the run's AS_OF_DATES_TAG), e.g. the weekly cutoffs of one training date."""
    from dagster_project.defs.resources import AS_OF_DATES_TAG

    tags = {AS_OF_DATES_TAG: ",".join(d.isoformat() for d in sorted(only))} if only else None
    return _execute("feature_backfill", partition_range=(first.isoformat(), last.isoformat()), tags=tags)


def run_job(job_name: str, as_of: dt.date, tags: dict | None = None) -> dg.ExecuteInProcessResult:
    """One job (daily_scoring, weekly_training, shopcast_graph) for one as-of date, as the schedules run it."""
    return _execute(job_name, partition_key=as_of.isoformat(), tags=tags)


def backfill(job_name: str, first: dt.date, last: dt.date, *, per_day: bool = False, progress=print) -> list[str]:
    """A job over the as-of dates first .. last: one run over the range (the default; every asset handles a
    range and gives the same rows as the daily runs), or one run per date, in date order (per_day)."""
    if last < first:
        raise RunFailed(f"backfill: the last date {last} is before the first {first}")
    if not per_day:
        progress(f"{job_name} for as-of dates {first} .. {last} (one run)")
        return [_execute(job_name, partition_range=(first.isoformat(), last.isoformat())).run_id]
    run_ids = []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        progress(f"{job_name} for as-of date {day}")
        run_ids.append(run_job(job_name, day).run_id)
    return run_ids


def evaluate_retraining_sensor(cursor: str | None = None) -> tuple[list[dg.RunRequest], str | None]:
    """One tick of the retraining sensor, as the daemon would evaluate it: (its run requests, its new cursor)."""
    from dagster_project.defs.automation import retraining_sensor

    with instance() as inst:
        context = dg.build_sensor_context(instance=inst, cursor=cursor, definitions=definitions())
        requests = list(retraining_sensor(context))
        return requests, context.cursor


def launch(request: dg.RunRequest, job_name: str = "weekly_training") -> dg.ExecuteInProcessResult:
    """Carry out a sensor's run request in this process (what the daemon would launch)."""
    return _execute(job_name, partition_key=request.partition_key, tags=dict(request.tags),
                    asset_selection=list(request.asset_selection) if request.asset_selection else None)


def explore(as_of: dt.date | None = None) -> dict:
    """The data exploration report for ``as_of`` (default: the date a run would take), materialized as its asset
    (defs/exploration.py) from the marts the last run built; returns the asset's metadata."""
    from dagster_project.defs.exploration import EXPLORATION

    if as_of is None:
        as_of = event_span().history_end + dt.timedelta(days=1)
    result = _execute("shopcast_graph", partition_key=as_of.isoformat(), asset_selection=[EXPLORATION])
    (materialization,) = result.asset_materializations_for_node("reports__exploration")
    return {"as_of_date": as_of.isoformat(), **{k: v.value for k, v in materialization.metadata.items()}}


def run_graph(as_of: dt.date | None = None, *, progress=print) -> dict:
    """Materialize the whole graph for ``as_of`` (default: the day after the history's last complete day, which is
    the day of the latest event unless that day was cut short by the export). On a fresh warehouse
    this trains on a full history too: the graph computes the features of the training cutoffs it lacks
    (marts/training_cutoff_features), not every day before ``as_of``."""
    from dagster_project.training_windows import choose_windows

    span = event_span()
    if as_of is None:
        as_of = span.history_end + dt.timedelta(days=1)
        if span.end_note:
            progress(span.end_note)
    settings = load_settings()
    windows = choose_windows(as_of, span.history_start, settings.training_cutoffs, settings.training_cadence_days)
    progress(f"materializing the whole graph for as-of date {as_of}")
    progress(f"training windows: {windows.describe()}")
    return {"as_of_date": as_of.isoformat(), "training_windows": windows.describe(),
            "runs": {"shopcast_graph": run_partition(as_of).run_id}}
