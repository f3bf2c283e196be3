"""Shared fixtures: a temporary SHOPCAST_HOME per test, and one small pipeline built once per session."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from dagster_project.settings import ShopcastPaths, configure_environment

DERIVED = ("SHOPCAST_WAREHOUSE_PATH", "DAGSTER_HOME", "MLFLOW_TRACKING_URI", "DBT_LOG_PATH")
# Small but real: 70 days of synthetic behaviour, 3 weekly training cutoffs.
DEMO = {"n_events": 40_000, "seed": 7, "days": 70, "end_date": dt.date(2026, 11, 1)}
DEMO_AS_OF = dt.date(2026, 11, 1)
# Small data: low eligibility floor; two model families end to end (every family is tested in test_models.py).
TEST_ENV = {"SHOPCAST_TRAINING_CUTOFFS": "3", "SHOPCAST_TRAINING_CADENCE_DAYS": "7", "SHOPCAST_BUSINESS_TZ": "UTC",
            "SHOPCAST_TRAINING_BUDGET_SECONDS": "30", "SHOPCAST_GATE_MARGIN": "0.0",
            "SHOPCAST_MIN_CLASS_EXAMPLES": "20", "SHOPCAST_MODEL_FAMILIES": "logistic_regression,gradient_boosting",
            "SHOPCAST_MIN_ROC_AUC": "0.6", "SHOPCAST_MIN_PR_AUC_SKILL": "0.05",
            # ~50 buyers per cutoff: a backtest fold trained on one cutoff says little. The gate decides on the
            # validation cutoff here; the backtest over several cutoffs is tested in test_feedback_loop.py.
            "SHOPCAST_BACKTEST_CUTOFFS": "1"}


def _point_at(home: Path) -> ShopcastPaths:
    os.environ["SHOPCAST_HOME"] = str(home)
    os.environ.update(TEST_ENV)
    return configure_environment(ShopcastPaths(home))


@pytest.fixture
def home(tmp_path, monkeypatch) -> ShopcastPaths:
    """An empty SHOPCAST_HOME for one test; the environment is restored afterwards."""
    for key in ("SHOPCAST_HOME", *DERIVED, *TEST_ENV):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    return _point_at(tmp_path / "home")


@pytest.fixture(scope="session")
def built_home(tmp_path_factory) -> Path:
    """Generate, ingest and materialize the whole graph once; tests copy it before changing anything."""
    from dagster_project import runs
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("built") / "home"
    try:
        paths = _point_at(home)
        generate(GeneratorConfig(**DEMO), paths.landing / "canonical")
        runs.ingest("canonical", [str(paths.landing / "canonical")])
        runs.run_graph(DEMO_AS_OF, progress=lambda _: None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return home


@pytest.fixture
def pipeline(built_home, home, tmp_path) -> ShopcastPaths:
    """A private copy of the built pipeline, pointed at by the environment."""
    copy = tmp_path / "pipeline"
    shutil.copytree(built_home, copy, symlinks=True)
    return _point_at(copy)
