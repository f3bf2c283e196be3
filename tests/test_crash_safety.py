"""Crash safety (issue 8): the pipeline killed with SIGKILL at chosen points leaves every table as it was before or
as it is after, and the next run completes and equals an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import duckdb
import pytest

from dagster_project.faults import FAILPOINT_ENV, FAILPOINT_LOG, FAILPOINTS
from dagster_project.serving import SERVING_FILE, read_manifest, verify
from dagster_project.settings import ShopcastPaths
from tests.conftest import DEMO_AS_OF
from tests.support import served, shopcast, snapshot


def _assert_before_or_after(after: dict, before: dict, reference: dict, point: str) -> None:
    partial = {t: (after[t], before.get(t), reference.get(t)) for t in after
               if after[t] != before.get(t) and after[t] != reference.get(t)}
    assert partial == {}, f"killed at {point}: tables neither as before nor as after: {partial}"
    assert set(after) <= set(before) | set(reference), f"killed at {point}: unexpected tables"


def _fired(paths: ShopcastPaths) -> str:
    """The failpoint that fired last (dagster_project/faults.py logs it before the kill)."""
    return (paths.logs / FAILPOINT_LOG).read_text().splitlines()[-1].split()[0]


def _killed(paths: ShopcastPaths, args, point: str, env=None) -> subprocess.CompletedProcess:
    proc = shopcast(args, env={**(env or {}), FAILPOINT_ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, f"{point} not reached: {proc.returncode}\n{proc.stderr[-3000:]}"
    assert _fired(paths) == point
    return proc


# The whole graph (ingest → dbt → checks → training → scoring → publish) for the demo date. One model family with
# time to search its whole grid, so that a retrain after a crash trains the same model as the uninterrupted run.
GRAPH = ["run", "--as-of", DEMO_AS_OF.isoformat()]
DETERMINISTIC = {"SHOPCAST_MODEL_FAMILIES": "logistic_regression", "SHOPCAST_TRAINING_BUDGET_SECONDS": "600"}
# Registry versions differ between a home that crashed (a killed run registered a version) and one that did not;
# the backtest folds are JSON text with full-precision scores (compared rounded by _decisions instead).
VERSIONS = frozenset({"model_version", "candidate_version", "incumbent", "backtest_folds"})


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_killing_the_pipeline_at_any_point_leaves_tables_before_or_after_and_the_next_run_completes(
        pipeline, tmp_path):
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    assert set(FAILPOINTS) == {"ingest.before_commit", "dbt.mid_build", "training.after_register",
                               "scoring.mid_write", "publish.tables_written", "publish.before_swap"}
    # new events landed for the day: the run ingests them, rebuilds the marts, retrains, scores and publishes
    generate(GeneratorConfig(n_events=3_000, seed=99, days=14, end_date=DEMO_AS_OF), pipeline.landing / "canonical")
    reference_home = tmp_path / "reference"
    shutil.copytree(pipeline.home, reference_home, symlinks=True)
    start = snapshot(pipeline, VERSIONS)

    # the uninterrupted run, on a copy of the same state
    shopcast(GRAPH, env={**DETERMINISTIC, "SHOPCAST_HOME": str(reference_home)})
    reference = snapshot(ShopcastPaths(reference_home), VERSIONS)
    assert reference["warehouse:raw.events"][0] > start["warehouse:raw.events"][0]
    assert reference["warehouse:monitoring.model_decisions"] != start["warehouse:monitoring.model_decisions"]

    # the same run, killed at each point in turn; each kill leaves every table as before or as after
    outcomes = []
    for point in ("ingest.before_commit", "dbt.mid_build", "training.after_register", "scoring.mid_write"):
        before, champions = snapshot(pipeline, VERSIONS), _aliases(pipeline)
        _killed(pipeline, GRAPH, point, env=DETERMINISTIC)
        after = snapshot(pipeline, VERSIONS)
        _assert_before_or_after(after, before, reference, point)
        outcomes.append((point, sum(after[t] != before.get(t) for t in after)))
        if point == "training.after_register":  # registered, not decided: no alias moved, no decision recorded
            assert _aliases(pipeline) == champions
            assert after["warehouse:monitoring.model_decisions"] == before["warehouse:monitoring.model_decisions"]
    assert outcomes[0][1] == 0  # the killed ingest changed nothing at all
    # publishing, killed half-way and just before the swap: the served file stays the previous one, whole
    served_before = read_manifest(served(pipeline))[0]["publish_id"]
    for point in ("publish.tables_written", "publish.before_swap"):
        _killed_publish(pipeline, point)
        assert read_manifest(served(pipeline))[0]["publish_id"] == served_before and verify(served(pipeline)) == []
    # the next run completes and equals the uninterrupted one (the temporary files of the killed publishes go)
    shopcast(GRAPH, env=DETERMINISTIC)
    assert snapshot(pipeline, VERSIONS) == reference
    assert _decisions(pipeline) == _decisions(ShopcastPaths(reference_home))
    assert sorted(p.name for p in pipeline.serving.iterdir()) == ["parquet", SERVING_FILE]
    print("kill points (tables changed by the killed run):", outcomes)


def _killed_publish(paths: ShopcastPaths, point: str) -> None:
    """The publish step, killed at a failpoint: the code the serving asset runs, in its own process."""
    code = ("import datetime as dt, sys; from pathlib import Path; from dagster_project.serving import publish, "
            "ServingOptions; publish(Path(sys.argv[1]), Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3]), "
            "ServingOptions(), 'killed')")
    proc = subprocess.run([sys.executable, "-c", code, str(paths.warehouse), str(paths.serving),
                           DEMO_AS_OF.isoformat()], env={**os.environ, FAILPOINT_ENV: point}, capture_output=True,
                          text=True, timeout=300, start_new_session=True, check=False)
    assert proc.returncode == -signal.SIGKILL and _fired(paths) == point, proc.stderr[-3000:]


def _aliases(paths: ShopcastPaths) -> dict:
    """The gate's aliases of every target. (Not BG/NBD's: the run refits and registers it before training, by
    design, so whether its alias moved before a kill in training depends only on how far the run got.)"""
    from mlflow import MlflowClient

    from ml.targets import TARGETS

    client = MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}")
    return {m.name: dict(m.aliases) for m in client.search_registered_models() if m.name in TARGETS}


def _decisions(paths: ShopcastPaths) -> list[tuple]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute("select target, decision, promoted, candidate_family, round(candidate_score, 6), "
                           "round(incumbent_score, 6) from monitoring.model_decisions order by decided_at").fetchall()


