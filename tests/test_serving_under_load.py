"""Readers under load (issue 8): three BI readers query the serving file in a loop while two pipeline runs are
started at the same moment; one waits for the other (the run lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dagster_project.serving import read_manifest
from dagster_project.settings import REPO_ROOT
from tests.support import BIN, DAILY, served


def _materialization_span(instance, run_id: str) -> tuple[float, float]:
    times = [r.timestamp for r in instance.all_logs(run_id)
             if r.dagster_event and r.dagster_event.event_type_value == "ASSET_MATERIALIZATION"]
    return min(times), max(times)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readers_under_load_see_whole_publishes_while_two_runs_start_at_once(pipeline, tmp_path):
    """Three BI readers query the serving file in a loop while two daily jobs (the schedule's and a manual
    backfill of the same day) are started at the same moment: one run waits for the other; no reader error, no
    reader sees tables of two publishes; both runs succeed. (Every job takes the run lock the same way, in the
    warehouse resource; the daily job, not the whole graph, keeps the test to a minute or two: the graph's
    training adds nothing to what the readers see.)"""
    from dagster_project import runs as shopcast_runs

    path, stop, started = served(pipeline), tmp_path / "stop", time.time()
    initial = read_manifest(path)[0]["publish_id"]
    readers = [subprocess.Popen([sys.executable, str(REPO_ROOT / "tests" / "serving_reader.py"), str(path),
                                 str(tmp_path / f"reader{i}.json"), str(stop), "900", "50000"])
               for i in range(3)]
    env = {**os.environ, "SHOPCAST_LOG_LEVEL": "WARNING"}
    runs = [subprocess.Popen([str(BIN / "shopcast"), *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            for args in (DAILY, DAILY)]
    outputs = [r.communicate(timeout=2400)[0] for r in runs]
    stop.touch()
    for reader in readers:
        assert reader.wait(timeout=60) == 0
    assert [r.returncode for r in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    reads = [json.loads((tmp_path / f"reader{i}.json").read_text()) for i in range(3)]
    assert [r["errors"] for r in reads] == [[], [], []]
    assert [r["inconsistent"] for r in reads] == [[], [], []]
    seen = set().union(*(r["publishes"] for r in reads))
    assert sum(r["reads"] for r in reads) >= 100 and initial in seen and len(seen) >= 3, reads
    # the run lock: what one run wrote all came before what the other wrote
    with shopcast_runs.instance() as instance:
        ids = [r.dagster_run.run_id for r in instance.get_run_records(limit=10)
               if r.create_timestamp.timestamp() >= started]
        spans = sorted(_materialization_span(instance, run_id) for run_id in ids)
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    print(f"reader load: {sum(r['reads'] for r in reads)} reads, {len(seen)} publishes seen, 0 errors")


