"""What a person sees of a run started from the command line: one line per step with its elapsed time, a progress
bar over the run's steps on a terminal, the warnings and errors the run logs; and the whole log in a file.

Dagster's own console logger prints every INFO event (hundreds of lines: dbt's output, MLflow's notices) and the
libraries print their warnings beside it; dagster-dbt copies dbt's output to stdout. For CLI runs the console logger
is silenced and the run's stdout goes to the log file; a watcher follows the run's events in the instance's event log
(the store the UI reads) from a thread, writes every one to ``<home>/logs/cli/<started>-<command>.log`` and prints
what matters. The libraries' logging and Python warnings
go to the same file, not to the console. Runs started by the tests or the UI are not affected.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

# dagster-dbt's notice on every source test dbt runs by indirect selection (no Dagster check is attached to a
# source): true and harmless, one per test and run; kept in the log file
NOT_FOR_THE_CONSOLE = ("Logging an `AssetObservation` instead of an `AssetCheckResult`",)
STEP_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"}
# each poll opens the run's event log (SQLite: a connection and a schema check each time): every 2 s is enough for a
# person watching, and cheap beside the run
POLL_SECONDS = 2.0
LOCKED_RETRIES = 10
LOCKED_RETRY_SECONDS = 0.5  # between reads of an event log the run is writing (SQLite: "database is locked")
# the libraries whose loggers print to the console on their own (each adds a stream handler at import)
CHATTY_LOGGERS = ("mlflow", "alembic", "py.warnings", "pytensor", "pymc", "pymc_marketing", "great_expectations",
                  "urllib3", "httpx", "dagster", "dagster_dbt", "numexpr", "matplotlib")


def keep_libraries_quiet(log_file: Path) -> None:
    """Send the libraries' logging and Python's warnings to ``log_file`` instead of the console."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in CHATTY_LOGGERS:
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True


class RunWatcher:
    """Follows one run's events from a thread (``start`` .. ``stop``): each event to the log file, each step's end
    and every event at or above ``console_level`` to ``say``."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, job_name: str, total_steps: int, log_file: Path,
                 console_level: int = logging.WARNING, say: Callable[[str], None] = print,
                 progress_bar: bool | None = None):
        self.instance, self.run_id, self.job_name, self.total = instance, run_id, job_name, total_steps
        self.log_file, self.console_level, self.say = log_file, console_level, say
        self.started: dict[str, float] = {}
        self.done = 0
        self.cursor = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"watch-{run_id[:8]}", daemon=True)
        self._bar = None
        if progress_bar if progress_bar is not None else sys.stdout.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # bound to the terminal now: while the run executes, sys.stdout is the log file
            self._bar = Progress(TextColumn(f"{job_name}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("steps"), TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=Console(file=sys.stdout), transient=True)
            self._task = self._bar.add_task("", total=total_steps)
            self.say = self._bar.console.print

    def start(self) -> RunWatcher:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log_file.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        if self._bar is not None:
            self._bar.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # what the run wrote after the last poll
        if self._bar is not None:
            self._bar.stop()
        self._file.close()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read()

    def _read(self) -> None:
        if not self.instance.has_run(self.run_id):
            return
        while True:
            batch = self._records()
            for record in batch.records:
                self._record(record.event_log_entry)
            self.cursor = batch.cursor
            if not batch.has_more:
                return

    def _records(self):
        """The next events after the cursor. The run writes its event log while this thread reads it: SQLite may
        answer "database is locked" for a moment; a read is tried again (then the error is raised)."""
        import sqlite3

        import sqlalchemy.exc

        for attempt in range(LOCKED_RETRIES):
            try:
                return self.instance.get_records_for_run(self.run_id, cursor=self.cursor, limit=1000)
            except (sqlite3.OperationalError, sqlalchemy.exc.OperationalError):
                if attempt == LOCKED_RETRIES - 1:
                    raise
                time.sleep(LOCKED_RETRY_SECONDS)
        raise AssertionError("unreachable")

    def _record(self, entry) -> None:
        event = entry.dagster_event
        kind = event.event_type_value if event is not None else None
        stamp = dt.datetime.fromtimestamp(entry.timestamp).isoformat(timespec="seconds")
        message = entry.user_message or (event.message if event is not None else "") or ""
        self.write(f"{stamp} {logging.getLevelName(entry.level)} {entry.step_key or '-'} {kind or 'log'}: {message}\n")
        step = entry.step_key
        if kind == "STEP_START":
            self.started[step] = entry.timestamp
            if self._bar is not None:
                self._bar.update(self._task, description=step)
        elif kind in STEP_EVENTS and step:
            self.done += 1
            seconds = entry.timestamp - self.started.get(step, entry.timestamp)
            status = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}[kind]
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done)
            self.say(f"  {status:7} {step} ({seconds:.1f} s) [{self.done}/{self.total}]")
        elif kind is None and entry.level >= self.console_level and not message.startswith(NOT_FOR_THE_CONSOLE):
            self.say(f"  {logging.getLevelName(entry.level).lower()}: {step or self.job_name}: {message}")

    def write(self, text: str) -> int:
        """Append to the log file (the watcher's thread and the run's own output share it: whole writes only)."""
        with self._lock:
            self._file.write(text)
            self._file.flush()
        return len(text)

    def flush(self) -> None:  # a stream for contextlib.redirect_stdout: what dbt prints during the run
        pass


def log_file_for(logs: Path, command: str) -> Path:
    """One file per CLI command: its runs' events and the libraries' logging and warnings."""
    return logs / "cli" / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
