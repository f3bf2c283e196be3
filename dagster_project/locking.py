"""One pipeline run at a time per home.

Two runs that interleave (the daily schedule and a manual run, say) could mix one run's ingest with the other's
scoring even though each DuckDB write is atomic. So every run holds an exclusive lock on
``<home>/locks/pipeline.lock`` from its first step to its last. A second run waits for it up to
``run_lock_timeout_seconds`` and then fails with a message naming the holder. The kernel releases the lock
when its process dies, even by SIGKILL, so a crashed run never leaves a stale lock behind.

Runs the Dagster daemon launches are also queued (``max_concurrent_runs: 1`` in dagster.yaml); this lock covers the
CLI and in-process runs that bypass the queue.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = "pipeline.lock"
HOLDER_FILE = "pipeline.holder.json"


PID_TAG = "shopcast/pid"  # set on a run once it holds the lock: the process to check when it looks stuck


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def recover_crashed_runs(instance, current_run_id: str) -> list[str]:
    """Runs that held the lock and whose process is gone (killed, out of memory, a power cut) still show as
    started and still hold their steps' slots of the ``duckdb`` pool, which would make every later run wait forever.
    Called by the lock holder, so no other run can be writing: each such run is reported failed and its slots are
    freed. A run that never got the lock (it is waiting for it) has no pid tag and is left alone."""
    import dagster as dg

    recovered = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        pid = run.tags.get(PID_TAG)
        if run.run_id == current_run_id or pid is None or pid_alive(int(pid)):
            continue
        instance.report_run_failed(run, message=f"the process of this run (pid {pid}) died while it held the run "
                                                f"lock; run {current_run_id} found it and freed its pool slots")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered


class RunLocked(RuntimeError):
    """Another run holds this home."""


def holder(folder: Path) -> str:
    """Who holds the lock in ``folder``, as recorded by the holder (a run id, job, pid and since when)."""
    try:
        info = json.loads((folder / HOLDER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "an unknown process"
    return f"run {info.get('run_id')} (job {info.get('job')}, pid {info.get('pid')}, since {info.get('since')})"


@contextmanager
def run_lock(folder: Path, run_id: str, job: str, timeout_seconds: float) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=timeout_seconds)
    except Timeout:
        raise RunLocked(
            f"run {run_id} (job {job}) did not start: another shopcast run is writing {folder.parent}: "
            f"{holder(folder)}; waited {timeout_seconds:g} s (run_lock_timeout_seconds). "
            "Wait for it to finish, or stop it in the Dagster UI.") from None
    try:
        (folder / HOLDER_FILE).write_text(json.dumps({
            "run_id": run_id, "job": job, "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))
        yield
    finally:
        lock.release()
