"""Scale-out (issue 27): the same dbt project built on Apache Spark equals the DuckDB build, table for table and
row for row (keys equal, numbers within 1e-9 relative), over a first build, an incremental build of training cutoffs
and a daily build that prunes the older dates. Needs the spark extra (make install-spark) and Java."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from dagster_project.settings import DBT_PROJECT_DIR, DBT_RUN_VARS_ENV, REPO_ROOT, load_settings
from dagster_project.spark_engine import spark_missing
from tests.conftest import DEMO_AS_OF, TEST_ENV

SPARK_MISSING = spark_missing()
if os.environ.get("CI") and SPARK_MISSING:  # `make test` installs the extra and CI machines have Java: a failure
    raise RuntimeError(f"CI: the Spark tests cannot run: {SPARK_MISSING}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SPARK_MISSING is not None, reason=str(SPARK_MISSING))]

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


# What differs between two runs of the same graph on the same data, whatever the engine: when things happened,
# which MLflow runs and publishes they were (and the serving file's hash of each table, which covers its times)
RUN_COLUMNS = {"decided_at", "scored_at", "mlflow_run_id", "run_id", "dagster_run_id", "trained_at", "published_at",
               "computed_at", "created_at", "observed_at", "publish_id", "content_hash"}

_SECONDS = r'"seconds": [-+.0-9eE]+'


@pytest.fixture(scope="module")
def spark_home(built_home, tmp_path_factory) -> Path:
    """The demo's raw layer (the built home's loads, load ids and all) in a home of its own set to engine=spark, and
    the whole graph run there for the demo's date by `shopcast run`, as the built home ran it on DuckDB."""
    home = tmp_path_factory.mktemp("spark-engine") / "home"
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute(f"attach '{built_home / 'warehouse.duckdb'}' as built (read_only)")
        con.execute("create schema raw")
        for (table,) in con.execute("select table_name from duckdb_tables() where database_name = 'built' "
                                    "and schema_name = 'raw'").fetchall():
            con.execute(f'create table raw."{table}" as select * from built.raw."{table}"')
    env = {**os.environ, **TEST_ENV, "SHOPCAST_HOME": str(home), "SHOPCAST_ENGINE": "spark"}
    proc = subprocess.run([sys.executable, "-m", "dagster_project.cli", "run", "--as-of", DEMO_AS_OF.isoformat()],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "[Stage " not in proc.stdout + proc.stderr  # the CLI's one line per step, no Spark progress bars
    return home


def _relations(warehouse: Path) -> dict[str, pd.DataFrame]:
    """Every table and view of a warehouse but the raw layer, as frames without the run's own columns."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = con.execute("select schema_name || '.' || table_name from duckdb_tables() where schema_name <> 'raw' "
                            "union all select schema_name || '.' || view_name from duckdb_views() where not internal "
                            "order by 1").fetchall()
        frames = {n: con.execute(f"select * from {n}").df() for (n,) in names}
    out = {}
    for name, frame in frames.items():
        frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
        for column in frame.columns[frame.dtypes.astype(str).isin(["object", "str", "string"])]:
            # what a step measured of itself, inside the JSON of a decision's folds
            frame[column] = frame[column].str.replace(_SECONDS, '"seconds": null', regex=True)
        out[name] = frame
    return out


@pytest.mark.xdist_group("spark_home")  # one worker for the tests of the Spark home: its run is made once
def test_the_whole_graph_on_spark_equals_the_graph_on_duckdb(built_home, spark_home):
    """engine=spark: dbt builds every model on Spark and the assets read them there (views of the DuckDB warehouse
    over Spark's Parquet files); the marts, the predictions scored from them, the audiences and monitoring built
    from the predictions, and the serving file published from all of it equal the DuckDB home's."""
    duck, spark = _relations(built_home / "warehouse.duckdb"), _relations(spark_home / "warehouse.duckdb")
    assert set(spark) == set(duck)
    differences = {t: d for t in sorted(duck) if (d := _differences(duck[t], spark[t]))}
    assert differences == {}
    # built by Spark, read through views: the DuckDB file of the Spark home holds no mart of its own
    with duckdb.connect(str(spark_home / "warehouse.duckdb"), read_only=True) as con:
        tables = {s for (s,) in con.execute("select distinct schema_name from duckdb_tables()").fetchall()}
        assert not tables & {"staging", "intermediate", "marts", "audiences"}
        view = con.execute("select sql from duckdb_views() where schema_name = 'marts' "
                           "and view_name = 'feat_user_daily'").fetchone()[0]
    assert str(spark_home / "spark" / "warehouse" / "marts.db" / "feat_user_daily") in view
    # what the graph produced, so that the comparison is not of empty tables
    assert len(duck["predictions.purchase_propensity_7d"]) > 300 and len(duck["predictions.next_items"]) > 1000
    assert len(duck["audiences.aud_likely_purchasers_7d"]) > 10
    published = {p.name for p in (spark_home / "serving").glob("*.duckdb")}
    assert published, "the Spark home published no serving file"
    for name in published:
        served, expected = _relations(spark_home / "serving" / name), _relations(built_home / "serving" / name)
        assert set(served) == set(expected)
        differences = {t: d for t in sorted(expected) if (d := _differences(expected[t], served[t]))}
        assert differences == {}


def test_scoring_on_spark_partitions_equals_scoring_in_this_process(tmp_path):
    """engine=spark scores on Spark's Python workers (mapInPandas): each partition's rows get the probability and
    the reasons they get here (the reasons' plan and the deciles come from the whole population either way)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from dagster_project.spark_engine import session_for, spark_rows_scorer
    from ml.explain import REASON_CANDIDATES
    from ml.predict import score

    rng = np.random.default_rng(7)
    columns = [f"f{j:02d}" for j in range(REASON_CANDIDATES + 4)]  # more than may be named: the plan chooses
    X = pd.DataFrame(rng.poisson(2.0, (3000, len(columns))).astype(float), columns=columns)
    y = (X.f00 + 2 * X.f03 - X.f07 + rng.normal(0, 1.5, len(X)) > 3).astype(int)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    frame = X.assign(user_id=[f"u{i:05d}" for i in range(len(X))],
                     as_of_date=np.where(np.arange(len(X)) % 3 == 0, dt.date(2026, 11, 1), dt.date(2026, 11, 2)))
    frame = frame.sample(frac=1.0, random_state=3)  # rows in no order
    here = score(frame, model, "purchase_propensity_7d", "4")
    spark = session_for(tmp_path / "spark")
    assert spark.sparkContext.defaultParallelism >= 2
    # the same session for the same home, from any thread; another home's is refused (a JVM keeps its metastore)
    elsewhere: list = []
    thread = threading.Thread(target=lambda: elsewhere.append(session_for(tmp_path / "spark")))
    thread.start()
    thread.join()
    assert elsewhere == [spark] or elsewhere[0]._jsparkSession.equals(spark._jsparkSession)
    with pytest.raises(RuntimeError, match="one process runs one home on Spark"):
        session_for(tmp_path / "another-home")
    on_spark = score(frame, model, "purchase_propensity_7d", "4", rows_scorer=spark_rows_scorer(spark))
    assert list(on_spark.columns) == list(here.columns) and len(on_spark) == len(frame)
    assert _differences(here.drop(columns="scored_at"), on_spark.drop(columns="scored_at")) == []
    assert on_spark.user_id.tolist() == frame.user_id.tolist()  # in the population's order
    assert on_spark.reason_1.notna().mean() > 0.5 and on_spark.decile.nunique() == 10


@pytest.mark.xdist_group("spark_home")
def test_the_dbt_unit_tests_pass_on_spark(spark_home, tmp_path):
    """The unit tests on hand-made rows (window logic, labels, business days, interactions, sequences) pass on Spark
    as on DuckDB (tests/test_dbt_and_cli.py), every one of them."""
    from dagster_project.dbt_project import dbt_project

    target = tmp_path / "unit"
    env = {**os.environ, **TEST_ENV, "SHOPCAST_HOME": str(spark_home), "SHOPCAST_ENGINE": "spark"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "spark_build.py"), "unit", str(spark_home),
                           str(target)], env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert (target / "run_results.json").exists(), (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"].split(".")[-1]: r["status"] for r in results}
    unit_tests = {t["name"] for t in json.loads(Path(dbt_project.manifest_path).read_text())["unit_tests"].values()}
    assert len(unit_tests) >= 17
    assert statuses == dict.fromkeys(unit_tests, "pass"), {k: r["message"] for r in results
                                                            if r["status"] != "pass"
                                                            for k in [r["unique_id"].split(".")[-1]]}
