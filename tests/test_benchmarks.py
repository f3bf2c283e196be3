"""The benchmark's yardsticks compute exactly what the pipeline computes: the DuckDB floor query and the pandas peer
(benchmarks/feature_floor.py) give marts.feat_user_daily's rows and values for one as-of date, from the raw files.
A yardstick that computed less would flatter it; one that computed more would flatter the pipeline."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from benchmarks.feature_floor import FEATURE_COLUMNS, floor_features, pandas_features
from dagster_project import runs
from dagster_project.generate.synthetic import GeneratorConfig, generate

AS_OF = dt.date(2026, 10, 20)
pytestmark = pytest.mark.xdist_group("benchmarks")  # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def features_and_files(tmp_path_factory):
    import os

    from tests.conftest import _point_at

    saved = dict(os.environ)
    try:
        paths = _point_at(tmp_path_factory.mktemp("floor") / "home")
        generated = generate(GeneratorConfig(n_events=30_000, seed=3, days=100, end_date=dt.date(2026, 11, 1)),
                             paths.landing / "canonical")
        runs.ingest("canonical", [str(paths.landing / "canonical")])
        runs.backfill_features(AS_OF, AS_OF)
        with duckdb.connect(str(paths.warehouse), read_only=True) as con:
            pipeline = con.execute("select * from marts.feat_user_daily where as_of_date = ?", [AS_OF]).df()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return pipeline, [str(f) for f in generated.files]


def _aligned(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[FEATURE_COLUMNS].copy()
    frame["as_of_date"] = pd.to_datetime(frame.as_of_date)
    return frame.sort_values("user_id").reset_index(drop=True).astype({c: float for c in FEATURE_COLUMNS[2:]})


def _assert_same(yardstick: pd.DataFrame, pipeline: pd.DataFrame) -> None:
    ours, theirs = _aligned(pipeline), _aligned(yardstick)
    assert len(ours) > 150, "the fixture should have a real population"
    assert theirs.user_id.tolist() == ours.user_id.tolist()
    for column in FEATURE_COLUMNS[2:]:
        np.testing.assert_allclose(theirs[column].to_numpy(), ours[column].to_numpy(), rtol=1e-9, equal_nan=True,
                                   err_msg=column)


def test_the_floor_query_computes_the_pipelines_features(features_and_files):
    pipeline, files = features_and_files
    with duckdb.connect() as con:
        _assert_same(floor_features(con, files, AS_OF), pipeline)


def test_the_pandas_peer_computes_the_pipelines_features(features_and_files):
    pipeline, files = features_and_files
    _assert_same(pandas_features(files, AS_OF), pipeline)
