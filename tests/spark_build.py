"""The dbt project built (or unit-tested) on Spark, for tests/test_spark.py: a process of its own (the JVM and
dbt-spark's session stay out of the test worker).

``python tests/spark_build.py WAREHOUSE FOLDER VARS_JSON RUNS_JSON``: the DuckDB warehouse's raw layer is published
to a local SparkSession in FOLDER (dagster_project/spark_engine.py), then one ``dbt build --target spark`` per entry
of RUNS_JSON (each run's values, as a run passes them), then every table of staging, intermediate and marts written
to FOLDER/out/<schema>.<table>.parquet, and the raw counts to FOLDER/out/raw_counts.json.

``python tests/spark_build.py unit HOME TARGET``: the dbt unit tests on Spark in a home that ran on it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dagster_project.settings import DBT_PROJECT_DIR, DBT_RUN_VARS_ENV
from dagster_project.spark_engine import SPARK_TARGET, publish_raw_layer, session_for

LAYERS = ("staging", "intermediate", "marts")


def main(warehouse: str, folder: str, settings_vars: str, runs: str) -> None:
    from dbt.cli.main import dbtRunner

    root, out = Path(folder), Path(folder) / "out"
    out.mkdir(parents=True, exist_ok=True)
    spark = session_for(root / "spark")
    (out / "raw_counts.json").write_text(json.dumps(publish_raw_layer(spark, Path(warehouse), root / "raw")))
    os.chdir(DBT_PROJECT_DIR)
    for run_vars in json.loads(runs):
        os.environ[DBT_RUN_VARS_ENV] = json.dumps(run_vars)
        result = dbtRunner().invoke(["build", "--target", SPARK_TARGET, "--select", *LAYERS, "--vars", settings_vars,
                                     "--exclude-resource-type", "unit_test", "--target-path", str(root / "target"),
                                     "--log-path", str(root / "logs")])
        if not result.success:
            failed = [f"{r.node.unique_id}: {r.message}" for r in (result.result or [])
                      if r.status not in ("success", "pass")]
            raise SystemExit(f"dbt build on Spark failed for {run_vars}: {result.exception or failed}")
    for layer in LAYERS:
        for row in spark.sql(f"show tables in {layer}").collect():
            if row.isTemporary:  # dbt-spark's session views (<model>__dbt_tmp), listed with every database
                continue
            spark.table(f"{layer}.{row.tableName}").toPandas().to_parquet(out / f"{layer}.{row.tableName}.parquet")


def unit_tests(home: str, target: str) -> None:
    """The dbt project's unit tests on Spark, in the session of a home that ran on it (its tables are the inputs'
    relations dbt reads the columns of); run_results.json lands in ``target``."""
    from dbt.cli.main import dbtRunner

    from dagster_project.settings import load_settings

    settings = load_settings(home=Path(home))
    session_for(settings.paths.spark)
    os.chdir(DBT_PROJECT_DIR)
    vars_ = {**settings.dbt_vars(), "training_cutoffs": 3, "training_cadence_days": 7}
    dbtRunner().invoke(["test", "--target", SPARK_TARGET, "--select", "test_type:unit", "--vars", json.dumps(vars_),
                        "--target-path", target, "--log-path", target])


if __name__ == "__main__":
    if sys.argv[1] == "unit":
        unit_tests(*sys.argv[2:4])
    else:
        main(*sys.argv[1:5])
