"""One pipeline run at a time per SHOPCAST_HOME.

Two runs that interleave (the daily schedule and a manual run, say) could mix one run's ingest with the other's
scoring even though each DuckDB write is atomic. So every run holds an exclusive lock on
``SHOPCAST_HOME/locks/pipeline.lock`` from its first step to its last. A second run waits for it up to
``SHOPCAST_RUN_LOCK_TIMEOUT_SECONDS`` and then fails with a message naming the holder. The kernel releases the lock
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


class RunLocked(RuntimeError):
    """Another run holds this SHOPCAST_HOME."""


def _holder(folder: Path) -> str:
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
            f"{_holder(folder)}; waited {timeout_seconds:g} s (SHOPCAST_RUN_LOCK_TIMEOUT_SECONDS). "
            "Wait for it to finish, or stop it in the Dagster UI.") from None
    try:
        (folder / HOLDER_FILE).write_text(json.dumps({
            "run_id": run_id, "job": job, "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))
        yield
    finally:
        lock.release()
