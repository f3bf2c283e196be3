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

from dagster_project.faults import FAILPOINT_ENV, FAILPOINTS
from dagster_project.serving import SERVING_FILE, read_manifest, verify
from dagster_project.settings import ShopcastPaths
from tests.conftest import DEMO_AS_OF
from tests.support import DAILY, TRAINING, served, shopcast, snapshot


def _assert_before_or_after(after: dict, before: dict, reference: dict, point: str) -> None:
    partial = {t: (after[t], before.get(t), reference.get(t)) for t in after
               if after[t] != before.get(t) and after[t] != reference.get(t)}
    assert partial == {}, f"killed at {point}: tables neither as before nor as after: {partial}"
    assert set(after) <= set(before) | set(reference), f"killed at {point}: unexpected tables"


def _killed(args, point: str) -> subprocess.CompletedProcess:
    proc = shopcast(args, env={FAILPOINT_ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, f"{point} not reached: {proc.returncode}\n{proc.stderr[-3000:]}"
    assert f"failpoint {point}" in proc.stderr
    return proc


@pytest.mark.slow
def test_killing_the_pipeline_at_any_point_leaves_tables_before_or_after_and_the_next_run_completes(
        pipeline, tmp_path):
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    assert set(FAILPOINTS) == {"ingest.before_commit", "dbt.mid_build", "training.after_register",
                               "scoring.mid_write", "publish.tables_written", "publish.before_swap"}
    # new events landed for the day: the daily run ingests them, rebuilds the marts, scores and publishes
    generate(GeneratorConfig(n_events=3_000, seed=99, days=14, end_date=DEMO_AS_OF), pipeline.landing / "canonical")
    reference_home = tmp_path / "reference"
    shutil.copytree(pipeline.home, reference_home, symlinks=True)
    start = snapshot(pipeline)

    # the uninterrupted run, on a copy of the same state
    env_reference = {"SHOPCAST_HOME": str(reference_home)}
    shopcast(DAILY, env=env_reference)
    reference = snapshot(ShopcastPaths(reference_home))
    assert reference["warehouse:raw.events"][0] > start["warehouse:raw.events"][0]

    # the same run, killed at each point in turn; each kill leaves every table as before or as after
    outcomes = []
    for point in ("ingest.before_commit", "dbt.mid_build", "scoring.mid_write"):
        before = snapshot(pipeline)
        _killed(DAILY, point)
        after = snapshot(pipeline)
        _assert_before_or_after(after, before, reference, point)
        outcomes.append((point, sum(after[t] != before.get(t) for t in after)))
    assert outcomes[0][1] == 0  # the killed ingest changed nothing at all
    # publishing, killed half-way and just before the swap: the path file stays the previous one, whole
    served_before = read_manifest(served(pipeline))[0]["publish_id"]
    for point in ("publish.tables_written", "publish.before_swap"):
        _killed_publish(pipeline, point)
        assert read_manifest(served(pipeline))[0]["publish_id"] == served_before and verify(served(pipeline)) == []
    # the next run completes and equals the uninterrupted one (the temporary files of the killed publishes go)
    shopcast(DAILY)
    assert snapshot(pipeline) == reference
    assert sorted(p.name for p in pipeline.serving.iterdir()) == ["parquet", SERVING_FILE]

    # training, killed after the candidate is registered and before the gate decides. One family with time to
    # search its whole grid, so that the retrain and the reference train the same model.
    training = {"SHOPCAST_MODEL_FAMILIES": "logistic_regression", "SHOPCAST_TRAINING_BUDGET_SECONDS": "600"}
    champions = _aliases(pipeline)
    decisions = snapshot(pipeline)["warehouse:monitoring.model_decisions"]
    proc = shopcast(TRAINING, env={**training, FAILPOINT_ENV: "training.after_register"}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _aliases(pipeline) == champions and snapshot(pipeline)["warehouse:monitoring.model_decisions"] == decisions
    shopcast(TRAINING, env=training)
    shopcast(TRAINING, env={**training, **env_reference})
    stable = frozenset({"model_version", "candidate_version", "incumbent"})
    assert _decisions(pipeline) == _decisions(ShopcastPaths(reference_home))
    assert snapshot(pipeline, stable) == snapshot(ShopcastPaths(reference_home), stable)
    print("kill points:", outcomes)


def _killed_publish(paths: ShopcastPaths, point: str) -> None:
    """The publish step, killed at a failpoint: the code the serving asset runs, in its own process."""
    code = ("import datetime as dt, sys; from pathlib import Path; from dagster_project.serving import publish, "
            "ServingOptions; publish(Path(sys.argv[1]), Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3]), "
            "ServingOptions(), 'killed')")
    proc = subprocess.run([sys.executable, "-c", code, str(paths.warehouse), str(paths.serving),
                           DEMO_AS_OF.isoformat()], env={**os.environ, FAILPOINT_ENV: point}, capture_output=True,
                          text=True, timeout=300, start_new_session=True, check=False)
    assert proc.returncode == -signal.SIGKILL and f"failpoint {point}" in proc.stderr, proc.stderr[-3000:]


def _aliases(paths: ShopcastPaths) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}")
    return {m.name: dict(m.aliases) for m in client.search_registered_models()}


def _decisions(paths: ShopcastPaths) -> list[tuple]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute("select target, decision, promoted, candidate_family, round(candidate_score, 9), "
                           "round(incumbent_score, 9) from monitoring.model_decisions order by decided_at").fetchall()


