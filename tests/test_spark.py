"""Scale-out (issue 27): the same dbt project built on Apache Spark equals the DuckDB build, table for table and
row for row (keys equal, numbers within 1e-9 relative), over a first build, an incremental build of training cutoffs
and a daily build that prunes the older dates. Needs the spark extra (make install-spark) and Java."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from dagster_project.settings import DBT_PROJECT_DIR, DBT_RUN_VARS_ENV, REPO_ROOT, load_settings
from tests.conftest import DEMO_AS_OF

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None or shutil.which("java") is None,
    reason="the spark extra (make install-spark) or Java is not installed")]

# A run's values, as a run passes them (defs/resources.py): the first build of the demo date; the weekly training
# cutoffs of the same date, built incrementally on it; the next day's daily build, which prunes the older dates
# but the kept ones (the recommenders' and sequence models' cutoffs).
RUNS = [
    {"as_of_date": "2026-11-01", "min_as_of_date": "2026-11-01", "as_of_dates": None},
    {"as_of_date": "2026-11-01", "min_as_of_date": "2026-10-11",
     "as_of_dates": ["2026-10-11", "2026-10-18", "2026-10-25", "2026-11-01"]},
    {"as_of_date": "2026-11-02", "min_as_of_date": "2026-11-02", "as_of_dates": None,
     "interaction_dates_kept": ["2026-10-18"], "sequence_dates_kept": ["2026-10-25"]},
]
KEYS = ("as_of_date", "activity_date", "purchase_date", "cutoff_rank", "user_id", "item_id", "position", "event_id")


@pytest.fixture(scope="module")
def both_engines(built_home, tmp_path_factory) -> dict:
    """The demo's raw layer built by the same dbt project on DuckDB (a warehouse of its own) and on Spark."""
    root = tmp_path_factory.mktemp("engines")
    assert DEMO_AS_OF.isoformat() == RUNS[0]["as_of_date"]
    warehouse = root / "duckdb.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{built_home / 'warehouse.duckdb'}' as built (read_only)")
        con.execute("create schema raw")
        for (table,) in con.execute("select table_name from duckdb_tables() where database_name = 'built' "
                                    "and schema_name = 'raw'").fetchall():
            con.execute(f'create table raw."{table}" as select * from built.raw."{table}"')
    settings = load_settings(home=built_home)
    settings_vars = {**settings.dbt_vars(), "warehouse_path": str(warehouse)}
    cadence = {"training_cutoffs": 3, "training_cadence_days": 7}
    runs = [{**cadence, **r} for r in RUNS]
    # Spark reads the built home's raw layer (never written after its build: the DuckDB builds below write theirs)
    spark = subprocess.Popen([sys.executable, str(REPO_ROOT / "tests" / "spark_build.py"),
                              str(built_home / "warehouse.duckdb"),
                              str(root / "spark"), json.dumps(settings_vars), json.dumps(runs)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for run_vars in runs:  # DuckDB meanwhile, as dbt's own process
        proc = subprocess.run([str(Path(sys.executable).parent / "dbt"), "build", "--select", "staging",
                               "intermediate", "marts", "--exclude-resource-type", "unit_test", "--vars",
                               json.dumps(settings_vars), "--target-path", str(root / "duckdb-target")],
                              cwd=DBT_PROJECT_DIR, env={**settings.subprocess_env(),
                                                        DBT_RUN_VARS_ENV: json.dumps(run_vars)},
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
    output = spark.communicate(timeout=1800)[0]
    assert spark.returncode == 0, output[-5000:]
    return {"duckdb": warehouse, "spark": root / "spark" / "out"}


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates and times as text, whatever type each engine's reader gives them; rows in key order."""
    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]) or column.endswith(("_date", "_ts")):
            frame[column] = pd.to_datetime(frame[column]).astype(str).where(frame[column].notna(), None)
    keys = [k for k in KEYS if k in frame.columns] or list(frame.columns)
    return frame.sort_values(keys).reset_index(drop=True)


def _differences(duck: pd.DataFrame, spark: pd.DataFrame) -> list[str]:
    problems = []
    if set(duck.columns) != set(spark.columns):
        return [(f"columns only in DuckDB {sorted(set(duck.columns) - set(spark.columns))}, "
                 f"only in Spark {sorted(set(spark.columns) - set(duck.columns))}")]
    if len(duck) != len(spark):
        return [f"{len(duck)} rows in DuckDB, {len(spark)} in Spark"]
    duck, spark = _canonical(duck), _canonical(spark[duck.columns])
    for column in duck.columns:
        x, y = duck[column], spark[column]
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            a, b = x.astype(float).to_numpy(), pd.to_numeric(y).astype(float).to_numpy()
            bad = ~((np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=0))
        else:
            bad = x.astype(object).where(x.notna(), None).to_numpy() != y.astype(object).where(y.notna(), None).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            problems.append(f"{column}: {int(bad.sum())} rows differ, e.g. {x.iloc[i]!r} against {y.iloc[i]!r}")
    return problems


def test_every_staging_intermediate_and_mart_table_built_on_spark_equals_the_duckdb_build(both_engines):
    with duckdb.connect(str(both_engines["duckdb"]), read_only=True) as con:
        tables = con.execute("select schema_name || '.' || table_name from duckdb_tables() where schema_name in "
                             "('staging', 'intermediate', 'marts') union all select schema_name || '.' || view_name "
                             "from duckdb_views() where schema_name in ('staging', 'intermediate', 'marts') "
                             "order by 1").fetchall()
        built = {t: con.execute(f"select * from {t}").df() for (t,) in tables}
        raw = dict(con.execute("select table_name, estimated_size from duckdb_tables() "
                               "where schema_name = 'raw'").fetchall())
    on_spark = {p.stem: pd.read_parquet(p) for p in both_engines["spark"].glob("*.parquet")}
    assert set(on_spark) == set(built)
    # the raw layer Spark read holds the loaders' rows, table by table
    assert json.loads((both_engines["spark"] / "raw_counts.json").read_text()).keys() == raw.keys()
    differences = {t: d for t in sorted(built) if (d := _differences(built[t], on_spark[t]))}
    assert differences == {}
    # what the three builds leave, so that the comparison is not of empty tables: the training set of the cutoffs,
    # the pruned dates gone but the kept ones
    assert len(built["marts.feat_user_daily"]) > 1000 and len(built["marts.fct_user_labels"]) > 1000
    assert sorted(built["marts.fct_user_item_interactions"].as_of_date.astype(str).str[:10].unique()) \
        == ["2026-10-18", "2026-11-02"]
    assert sorted(built["marts.fct_user_event_sequences"].as_of_date.astype(str).str[:10].unique()) \
        == ["2026-10-25", "2026-11-02"]
