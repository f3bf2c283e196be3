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
from ml.targets import TARGETS
from tests.conftest import DEMO_AS_OF, TEST_ENV
from tests.support import run_as_group, served, shopcast, snapshot


def _assert_before_or_after(after: dict, before: dict, reference: dict, point: str) -> None:
    """Every table that existed before the killed run or after the uninterrupted one is, after the kill, exactly as
    it was before or as it is after (a table that vanished is neither)."""
    tables = set(before) | set(reference) | set(after)
    partial = {t: (after.get(t), before.get(t), reference.get(t)) for t in sorted(tables)
               if after.get(t) != before.get(t) and after.get(t) != reference.get(t)}
    assert partial == {}, f"killed at {point}: tables neither as before nor as after (rows, hash): {partial}"


def test_the_comparison_fails_a_table_that_vanished_or_is_half_written():
    before = {"predictions.churn": (10, "h1"), "serving.file": (3, "s1")}
    after_run = {"predictions.churn": (12, "h2"), "serving.file": (3, "s2"), "predictions.new": (5, "n1")}
    for survived in (before, after_run, {**before, "predictions.new": (5, "n1")}):
        _assert_before_or_after(survived, before, after_run, "test")  # as before, as after, or each its own
    for broken, table in (({"serving.file": (3, "s1")}, "predictions.churn"),  # vanished in the kill
                          ({**before, "predictions.churn": (11, "h3")}, "predictions.churn"),  # half written
                          ({**after_run, "predictions.new": (0, "e")}, "predictions.new")):  # created empty
        with pytest.raises(AssertionError, match=table):
            _assert_before_or_after(broken, before, after_run, "test")


def _fired(paths: ShopcastPaths) -> str:
    """The failpoint that fired last (dagster_project/faults.py logs it before the kill)."""
    return (paths.logs / FAILPOINT_LOG).read_text().splitlines()[-1].split()[0]


def _killed(paths: ShopcastPaths, args, point: str, env=None) -> subprocess.CompletedProcess:
    proc = shopcast(args, env={**(env or {}), FAILPOINT_ENV: point}, check=False)  # env names the home
    assert proc.returncode == -signal.SIGKILL, f"{point} not reached: {proc.returncode}\n{proc.stderr[-3000:]}"
    assert _fired(paths) == point
    return proc


# The whole graph (ingest → dbt → checks → training → scoring → publish) for the demo date. One model family with
# time to search its whole grid, so that a retrain after a crash trains the same model as the uninterrupted run.
GRAPH = ["run", "--as-of", DEMO_AS_OF.isoformat()]
# (With the settings the demo home was built with: TEST_ENV.)
DETERMINISTIC = {**TEST_ENV, "SHOPCAST_MODEL_FAMILIES": "logistic_regression",
                 "SHOPCAST_TRAINING_BUDGET_SECONDS": "600",
                 # recommenders whose fit is the same on every run (BPR's and ALS's threads are not), besides the
                 # naive ones that are always tried
                 "SHOPCAST_RECOMMENDATION_CANDIDATES": "item_knn,ease"}
# Registry versions differ between a home that crashed (a killed run registered a version) and one that did not;
# the backtest folds are JSON text with full-precision scores (compared rounded by _decisions instead).
VERSIONS = frozenset({"model_version", "candidate_version", "incumbent", "backtest_folds",
                      *(f"{t.short_name}_model_version" for t in TARGETS.values())})  # user_scores_latest


# The kill points fire in the propensity targets' training; the recommendations and the cold-start list (their own
# group, decided apart in the run) append their decisions independently, each row atomic: the comparisons read the
# propensity targets' rows.
PROPENSITY_DECISIONS = {"monitoring.model_decisions": "target not in ('next_items', 'cold_start_items')",
                        # the serving file's hash of the whole log (its propensity rows are compared above)
                        "serving.published_tables": "table_name <> 'model_decisions'"}
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("crash_safety")]  # one worker: the reference is built once
KILL_POINTS = ("ingest.before_commit", "dbt.mid_build", "training.after_register", "scoring.mid_write")
PUBLISH_POINTS = ("publish.tables_written", "publish.before_swap")


@pytest.fixture(scope="module")
def crashed_from(built_home, tmp_path_factory) -> dict:
    """The state every kill starts from (the demo home with a new day of events landed: the next run ingests
    them, rebuilds the marts, retrains, scores and publishes) and the uninterrupted run's result, built once."""
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    assert set(FAILPOINTS) == set(KILL_POINTS) | set(PUBLISH_POINTS)
    root = tmp_path_factory.mktemp("crash")
    start = root / "start"
    shutil.copytree(built_home, start, symlinks=True)
    generate(GeneratorConfig(n_events=3_000, seed=99, days=14, end_date=DEMO_AS_OF), start / "landing" / "canonical")
    reference_home = root / "reference"
    shutil.copytree(start, reference_home, symlinks=True)
    shopcast(GRAPH, env={**DETERMINISTIC, "SHOPCAST_HOME": str(reference_home)})
    reference = ShopcastPaths(reference_home)
    return {"start": start, "start_snapshot": snapshot(ShopcastPaths(start), VERSIONS, PROPENSITY_DECISIONS),
            "reference": snapshot(reference, VERSIONS, PROPENSITY_DECISIONS), "decisions": _decisions(reference)}


def _copy(crashed_from: dict, tmp_path) -> ShopcastPaths:
    home = tmp_path / "home"
    shutil.copytree(crashed_from["start"], home, symlinks=True)
    return ShopcastPaths(home)


@pytest.mark.timeout(2400)
def test_a_run_killed_at_each_point_in_turn_leaves_every_table_before_or_after_and_the_next_run_completes(
        crashed_from, tmp_path):
    """One home killed at each point in turn, in the order a run reaches them: each killed run starts from what the
    kill before it left, and must leave every table as it found it or as the uninterrupted run leaves it; then one
    run to the end equals the uninterrupted one. (One home rather than one per point: a full run after each kill
    was most of this module's time, and a run resuming after several kills is the harder case.)"""
    paths, reference = _copy(crashed_from, tmp_path), crashed_from["reference"]
    env = {**DETERMINISTIC, "SHOPCAST_HOME": str(paths.home)}
    assert reference["warehouse:raw.events"][0] > crashed_from["start_snapshot"]["warehouse:raw.events"][0]
    before = snapshot(paths, VERSIONS, PROPENSITY_DECISIONS)
    assert before == crashed_from["start_snapshot"]
    for point in KILL_POINTS:
        champions = _aliases(paths)
        _killed(paths, GRAPH, point, env=env)
        after = snapshot(paths, VERSIONS, PROPENSITY_DECISIONS)
        _assert_before_or_after(after, before, reference, point)
        if point == "ingest.before_commit":  # the killed ingest changed nothing at all
            assert after == before
        if point == "training.after_register":  # registered, not decided: no alias moved, no decision recorded
            assert _aliases(paths) == champions
            assert after["warehouse:monitoring.model_decisions"] == before["warehouse:monitoring.model_decisions"]
        before = after
    # the next run completes and equals the uninterrupted one
    shopcast(GRAPH, env=env)
    assert snapshot(paths, VERSIONS, PROPENSITY_DECISIONS) == reference
    assert _decisions(paths) == crashed_from["decisions"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("point", PUBLISH_POINTS)
def test_a_publish_killed_half_way_leaves_the_served_file_whole_and_the_next_publish_cleans_up(
        crashed_from, tmp_path, point):
    paths = _copy(crashed_from, tmp_path)
    served_before = read_manifest(served(paths))[0]["publish_id"]
    _killed_publish(paths, point)
    assert read_manifest(served(paths))[0]["publish_id"] == served_before and verify(served(paths)) == []
    # the next publish completes, and the temporary files of the killed one go
    _publish(paths)
    assert read_manifest(served(paths))[0]["publish_id"] != served_before and verify(served(paths)) == []
    assert sorted(p.name for p in paths.serving.iterdir()) == ["parquet", SERVING_FILE]


def _publish(paths: ShopcastPaths, env: dict | None = None) -> subprocess.CompletedProcess:
    code = ("import datetime as dt, sys; from pathlib import Path; from dagster_project.serving import publish, "
            "ServingOptions; publish(Path(sys.argv[1]), Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3]), "
            "ServingOptions(), 'killed')")
    return run_as_group([sys.executable, "-c", code, str(paths.warehouse), str(paths.serving), DEMO_AS_OF.isoformat()],
                        env={**os.environ, **TEST_ENV, "SHOPCAST_HOME": str(paths.home), **(env or {})}, timeout=300)


def _killed_publish(paths: ShopcastPaths, point: str) -> None:
    """The publish step, killed at a failpoint: the code the serving asset runs, in its own process."""
    proc = _publish(paths, {FAILPOINT_ENV: point})
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
                           "round(incumbent_score, 6) from monitoring.model_decisions where target not in ('next_items', 'cold_start_items') "
                           "order by decided_at").fetchall()


