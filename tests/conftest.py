"""Shared fixtures: a temporary SHOPCAST_HOME per test, and one small pipeline built once per session."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

# One OpenMP thread per process: `make test` runs two workers on two cores, and OpenMP's spin-waiting threads
# (HistGradientBoosting's) then take turns with the other worker's: two trainings side by side took 90 s each
# instead of 8 s (measured here). Set before scikit-learn loads; subprocesses (the CLI in end-to-end tests) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from dagster_project.settings import ShopcastPaths, ensure_home, load_settings

# Small but real: 70 days of synthetic behaviour, 3 weekly training cutoffs.
DEMO = {"n_events": 40_000, "seed": 7, "days": 70, "end_date": dt.date(2026, 11, 1)}
DEMO_AS_OF = dt.date(2026, 11, 1)
# Small data: low eligibility floor; two model families end to end (every family is tested in test_models.py).
TEST_ENV = {"SHOPCAST_TRAINING_CUTOFFS": "3", "SHOPCAST_TRAINING_CADENCE_DAYS": "7", "SHOPCAST_BUSINESS_TZ": "UTC",
            "SHOPCAST_TRAINING_BUDGET_SECONDS": "30", "SHOPCAST_GATE_MARGIN": "0.0",
            "SHOPCAST_MIN_CLASS_EXAMPLES": "20", "SHOPCAST_MODEL_FAMILIES": "logistic_regression,gradient_boosting",
            "SHOPCAST_MIN_ROC_AUC": "0.6", "SHOPCAST_MIN_PR_AUC_SKILL": "0.05",
            # one feature set (the count features the gate decisions pinned here were learned on): each search fits
            # half as many configurations; the behaviour set and the choice between the sets are tested in
            # test_models.py, the behaviour features' point-in-time values in test_pipeline.py
            "SHOPCAST_FEATURE_SETS": "counts",
            # ~50 buyers per cutoff: a backtest fold trained on one cutoff says little. The gate decides on the
            # validation cutoff here; the backtest over several cutoffs is tested in test_feedback_loop.py.
            "SHOPCAST_BACKTEST_CUTOFFS": "1",
            # ~50 buyers on the validation cutoff: the expected/observed ratio's sampling noise alone is about
            # +-30 %, so the band is wide here; the default band is tested in test_calibration.py
            "SHOPCAST_MIN_EXPECTED_OVER_OBSERVED": "0.5", "SHOPCAST_MAX_EXPECTED_OVER_OBSERVED": "2.0"}


def _point_at(home: Path) -> ShopcastPaths:
    os.environ["SHOPCAST_HOME"] = str(home)
    os.environ.update(TEST_ENV)
    return ensure_home(load_settings()).paths


@pytest.fixture
def home(tmp_path, monkeypatch) -> ShopcastPaths:
    """An empty SHOPCAST_HOME for one test; the environment is restored afterwards."""
    for key in ("SHOPCAST_HOME", *TEST_ENV):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    return _point_at(tmp_path / "home")


@pytest.fixture(scope="session")
def built_home(tmp_path_factory, worker_id) -> Path:
    """Generate, ingest and materialize the whole graph once for the whole session, on whichever worker asks
    first (the xdist workers share the folder above their own temporary folders, and wait on a file lock while
    one builds); tests copy it before changing anything, so it is never written after the build."""
    from filelock import FileLock

    from dagster_project import dbt_in_process, runs
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    # under xdist each worker's base folder lies in the session's folder, which they share; without xdist the base
    # folder is the session's own (its parent holds older sessions, whose builds must never be reused)
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    home, built = shared / "built" / "home", shared / "built" / "complete"
    with FileLock(str(shared / "built.lock")):
        if not built.exists():
            saved = dict(os.environ)
            try:
                shutil.rmtree(home.parent, ignore_errors=True)  # what a worker that failed mid-build left
                paths = _point_at(home)
                # built as a new process builds it (`make demo`): without a parse held from another test's home
                dbt_in_process.forget_parse()
                generate(GeneratorConfig(**DEMO), paths.landing / "canonical")
                runs.ingest("canonical", [str(paths.landing / "canonical")])
                runs.run_graph(DEMO_AS_OF, progress=lambda _: None)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            built.touch()
    return home


@pytest.fixture
def pipeline(built_home, home, tmp_path) -> ShopcastPaths:
    """A private copy of the built pipeline, pointed at by the environment."""
    copy = tmp_path / "pipeline"
    shutil.copytree(built_home, copy, symlinks=True)
    return _point_at(copy)


# The longest work first (measured): xdist deals tests out in collection order, so the two cores finish together
# instead of one running the three real-sample runs alone at the end.
HEAVIEST_FIRST = ["test_crash_safety.py", "test_feedback_loop.py",
                  # (Spark's builds wait on its scheduler more than they use the cores: beside the others, early)
                  "test_spark.py",
                  "test_real_samples.py::test_each_sample_runs_end_to_end_and_produces_predictions[ga-merch]",
                  "test_real_samples.py::test_each_sample_runs_end_to_end_and_produces_predictions[online-retail]",
                  "test_real_samples.py::test_the_amazon_reviews_sample_trains_and_scores_the_90_day_target_with_review_features",
                  "test_serving_under_load.py", "test_sequence_signal.py", "test_review_signal.py", "test_browser.py", "test_pipeline.py",
                  "test_serving.py"]


def pytest_collection_modifyitems(config, items):
    """The heaviest tests first; the sort is stable, so a module's tests keep their order. (Under `make test`
    xdist deals single tests to the workers as they free up, except the modules marked with an xdist_group, whose
    tests go to one worker together so that their module fixture is built once.)"""
    def unit(item) -> str:
        return item.nodeid if item.nodeid.startswith("tests/test_real_samples.py") else item.nodeid.split("::")[0]

    def rank(item) -> int:
        name = unit(item).removeprefix("tests/")
        return HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST else len(HEAVIEST_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_call ...): fixtures read it to act on a failure (the browser
    tests' screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
