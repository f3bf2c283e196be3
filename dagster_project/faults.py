"""Failpoints: named places where a crash test kills the pipeline on purpose.

The ``failpoint`` setting (its environment variable, set by the crash tests) makes the process kill itself with SIGKILL (no cleanup, no ``finally``, like a power
cut or the OOM killer) when it reaches ``failpoint(<name>)``. A process that leads its own process group (started
with a new session, as the crash tests start it) kills the whole group, so a dbt subprocess dies with it. Unset,
a failpoint costs one read of the settings. The names are listed in FAILPOINTS; docs/serving.md explains the test.
"""

from __future__ import annotations

import os
import signal

from dagster_project.settings import env_name, load_settings

FAILPOINT_ENV = env_name("failpoint")
FAILPOINT_LOG = "failpoints.log"  # under <home>/logs: one line per failpoint that fired
FAILPOINTS = {
    "ingest.before_commit": "raw.events and raw.load_audit written, the load's transaction not committed",
    "dbt.mid_build": "dbt has built the first of the intermediate and mart models and is building the rest",
    "training.after_register": "the candidate is registered in MLflow; the gate has not decided",
    "scoring.mid_write": "the old predictions of the date deleted, the new ones inserted, not committed",
    "publish.tables_written": "the new serving file is half built (tables written, no manifest)",
    "publish.before_swap": "the new serving file is complete under its temporary name, not swapped in",
}


# Faults that change what the code does instead of killing it: tests use them to show that a check catches what it
# guards (a load that loses a row must be refused by the audit).
FAULTS = {
    "ingest.lose_row": "one accepted row is dropped before it is written (the audit must refuse the load)",
}


def fault(name: str) -> bool:
    """True when the ``failpoint`` setting names this fault (tests only)."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    return load_settings().failpoint == name


def failpoint(name: str) -> None:
    if name not in FAILPOINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(FAILPOINTS)}")
    settings = load_settings()
    if settings.failpoint != name:
        return
    # Dagster captures a step's stdout and stderr: the evidence goes to a file the test can read
    log = settings.paths.logs / FAILPOINT_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{name} pid {os.getpid()}\n")
        out.flush()
        os.fsync(out.fileno())
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
