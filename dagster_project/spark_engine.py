"""Apache Spark as the warehouse engine (issue 27, docs/scale_out.md): a local SparkSession set up as the dbt
project expects it, and the raw layer the loaders wrote to DuckDB published to it as Parquet tables.

dbt-spark's ``session`` method (dbt/profiles.yml, target ``spark``) runs every model in the SparkSession of the
process that runs dbt: the session is built here first, with these settings, and dbt's own ``getOrCreate`` finds it.
Needs the ``spark`` extra (``make install-spark``) and Java 17 or 21.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import duckdb

from dagster_project.warehouse import connect, qualified, quote_identifier, string_literal

SPARK_TARGET = "spark"  # the dbt target of dbt/profiles.yml
RAW_SCHEMA = "raw"


def local_session(folder: Path, cores: int = 2):
    """A local SparkSession whose tables and metastore live in ``folder`` (Spark's warehouse and its Derby
    metastore), in UTC like the DuckDB warehouse, sized for one machine."""
    from pyspark.sql import SparkSession

    folder.mkdir(parents=True, exist_ok=True)
    # the Python workers that score (mapInPandas) run this interpreter, where shopcast and its models are installed
    # (pyspark reads only the environment for it, and defaults to whatever `python3` is on the PATH)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (SparkSession.builder.master(f"local[{cores}]").appName("shopcast")
            .config("spark.sql.warehouse.dir", str(folder / "warehouse"))
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={folder / 'metastore'}")
            # raw timestamps are UTC; business days are derived in SQL (macros/as_of.sql), never from the session
            .config("spark.sql.session.timeZone", "UTC")
            # Spark's default of 200 shuffle partitions is for clusters: on one machine each becomes a tiny task
            .config("spark.sql.shuffle.partitions", str(2 * cores))
            # insert_overwrite replaces only the partitions (dates) a run wrote, as delete+insert does on DuckDB
            .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
            .config("spark.ui.enabled", "false")
            # no stage progress bars on the console: the CLI prints one line per step (console.py)
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .enableHiveSupport()
            .getOrCreate())


def spark_missing() -> str | None:
    """What this machine lacks to run Spark (the extra, or Java), said with what to install; None when nothing."""
    if importlib.util.find_spec("pyspark") is None or importlib.util.find_spec("dbt.adapters.spark") is None:
        return "the spark extra is not installed: make install-spark (or pip install 'shopcast[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java is found (neither `java` on the PATH nor JAVA_HOME): Spark needs Java 17 or 21"
    return None


def session_for(folder: Path, cores: int | None = None):
    """This process's SparkSession for the home whose Spark folder is ``folder``: started here on first use
    (``local_session``), refused when the process already runs one for another home (a JVM keeps its first
    metastore and warehouse)."""
    if missing := spark_missing():
        raise RuntimeError(f"the setting engine is spark, but {missing}")
    # getOrCreate: the process's session where one runs (whichever thread started it), else a new one
    session = local_session(folder, cores or os.cpu_count() or 2)
    wanted, has = str(folder / "warehouse"), session.conf.get("spark.sql.warehouse.dir")
    if has.removeprefix("file:") != wanted:
        raise RuntimeError(f"this process's SparkSession keeps its tables in {has}, not in {wanted}: one process "
                           "runs one home on Spark (start another process for this home)")
    session.sparkContext.setLogLevel("ERROR")
    return session


def _fingerprint(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list:
    """What tells a table's rows apart from an earlier copy's: its rows, and (append-only raw tables aside) the
    newest scoring time where it has one. The raw layer changes only by loads, which the load audit records."""
    name = qualified(schema, table)
    columns = {c for (c,) in con.execute("select column_name from duckdb_columns() where schema_name = ? "
                                         "and table_name = ?", [schema, table]).fetchall()}
    stamp = [str(v) for v in con.execute(f"select count(*){', max(scored_at)' if 'scored_at' in columns else ''} "
                                         f"from {name}").fetchone()]
    if schema == RAW_SCHEMA:
        stamp += [str(v) for v in con.execute(f"select count(*), max(loaded_at) from {RAW_SCHEMA}.load_audit").fetchone()]
    return stamp


def publish_schema(spark, warehouse: Path, folder: Path, schema: str) -> dict[str, int]:
    """Every table of the DuckDB warehouse's ``schema`` (the raw layer the loaders validated, quarantined and
    reconciled; the prediction tables the scoring assets wrote) written to ``folder/<schema>/<table>`` as Parquet
    and registered as ``<schema>.<table>`` in the session's metastore, replacing an earlier copy; a table whose rows
    did not change since its last copy is not copied again. Returns the rows of each table as Spark reads them, which
    equal DuckDB's (checked: a difference raises)."""
    root = folder / schema
    root.mkdir(parents=True, exist_ok=True)
    stamps_file = root / "_published.json"
    stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
    spark.sql(f"create database if not exists {schema}")
    existing = {t.name for t in spark.catalog.listTables(schema) if not t.isTemporary}
    counts = {}
    with connect(warehouse, read_only=True) as con:
        names = [t for (t,) in con.execute("select table_name from duckdb_tables() where schema_name = ? order by 1",
                                           [schema]).fetchall()]
        for table in names:
            target, stamp = root / table, _fingerprint(con, schema, table)
            if stamps.get(table) == stamp and table in existing:
                counts[table] = int(stamp[0])
                continue
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("*.parquet"):
                old.unlink()
            # a folder per table (a Hive table's location is a folder), written by DuckDB's own Parquet writer
            con.execute(f"copy {qualified(schema, table)} to {string_literal(target / 'part-0.parquet')} (format parquet)")
            spark.sql(f"drop table if exists {schema}.{table}")
            spark.sql(f"create table {schema}.{table} using parquet location '{target}'")
            counts[table] = spark.table(f"{schema}.{table}").count()
            if counts[table] != int(stamp[0]):
                raise RuntimeError(f"{schema}.{table}: {stamp[0]} rows in DuckDB, {counts[table]} read by Spark from "
                                   f"{target}")
            stamps[table] = stamp
    stamps_file.write_text(json.dumps(stamps, indent=1))
    return counts


def publish_raw_layer(spark, warehouse: Path, folder: Path) -> dict[str, int]:
    """The raw layer published to Spark (``publish_schema``), where the dbt project's sources read it."""
    return publish_schema(spark, warehouse, folder, RAW_SCHEMA)


_SIMPLE_TYPES = {"string": "varchar", "int": "integer", "bigint": "bigint", "smallint": "smallint",
                 "tinyint": "tinyint", "double": "double", "float": "float", "boolean": "boolean", "date": "date",
                 "timestamp": "timestamp", "timestamp_ntz": "timestamp", "binary": "blob", "void": "varchar"}


def duckdb_type(spark_type) -> str:
    """The DuckDB type that reads a Spark type from Parquet unchanged (Spark's timestamps are UTC instants, kept as
    the warehouse's naive UTC timestamps)."""
    from pyspark.sql import types as T

    if isinstance(spark_type, T.DecimalType):
        return f"decimal({spark_type.precision},{spark_type.scale})"
    if isinstance(spark_type, T.ArrayType):
        return f"{duckdb_type(spark_type.elementType)}[]"
    if isinstance(spark_type, T.StructType):
        return "struct(" + ", ".join(f'"{f.name}" {duckdb_type(f.dataType)}' for f in spark_type.fields) + ")"
    if isinstance(spark_type, T.MapType):
        return f"map({duckdb_type(spark_type.keyType)}, {duckdb_type(spark_type.valueType)})"
    name = spark_type.simpleString()
    if name not in _SIMPLE_TYPES:
        raise TypeError(f"no DuckDB type for Spark's {name}")
    return _SIMPLE_TYPES[name]


def table_location(spark, name: str) -> Path:
    """Where a Parquet table of the session's metastore keeps its files."""
    for row in spark.sql(f"describe table extended {name}").collect():
        if row.col_name == "Location":
            return Path(row.data_type.removeprefix("file:"))
    raise RuntimeError(f"Spark gives no location for {name}")


# The schemas dbt builds (dbt_project.yml; user_scores_latest lands in predictions beside the scoring assets' tables)
DBT_SCHEMAS = ("staging", "intermediate", "marts", "audiences", "monitoring", "predictions")


def mirror_to_duckdb(spark, warehouse: Path, schemas=DBT_SCHEMAS) -> list[str]:
    """Every table dbt built on Spark in ``schemas`` (the metastore's managed tables) as a view of the DuckDB
    warehouse over the table's Parquet files, with Spark's columns and types: the assets, checks and BI exports read
    the marts where they read them on DuckDB, while Spark builds them. Returns the tables' names."""
    views = []
    with connect(warehouse) as con:
        for schema in schemas:
            if not spark.catalog.databaseExists(schema):
                continue
            con.execute(f"create schema if not exists {quote_identifier(schema)}")
            duckdb_tables = {t for (t,) in con.execute("select table_name from duckdb_tables() where schema_name = ?",
                                                       [schema]).fetchall()}
            for table in spark.catalog.listTables(schema):
                if table.isTemporary or table.tableType != "MANAGED":
                    continue
                name = f"{schema}.{table.name}"
                if table.name in duckdb_tables:
                    raise RuntimeError(f"{name} is a table of the DuckDB warehouse {warehouse}, built when this home "
                                       "ran on DuckDB: a home runs on one engine (start a new home for engine=spark)")
                location = table_location(spark, name)
                has_files = any(location.rglob("*.parquet"))
                # no rows, no files: the columns alone
                columns = ", ".join(f'cast({quote_identifier(f.name) if has_files else "null"} as {duckdb_type(f.dataType)}) '
                                    f'as {quote_identifier(f.name)}' for f in spark.table(name).schema.fields)
                source = (f"read_parquet({string_literal(f'{location}/**/*.parquet')}, hive_partitioning = true, union_by_name = true)"
                          if has_files else "(select 1) as empty where false")
                con.execute(f"create or replace view {qualified(schema, table.name)} as select {columns} from {source}")
                views.append(name)
    return views


def spark_rows_scorer(spark):
    """An ``ml.predict.RowsScorer`` that scores the rows on Spark: the population goes to the session as a
    DataFrame, each partition is scored by ``ml.predict.score_rows`` in Spark's Python workers (``mapInPandas``,
    the model and the reasons' plans shipped with the function), and the scored rows come back in their order. What
    needs the whole population (the plans, the deciles) stays with ``ml.predict.score``: the result equals the
    scoring in this process."""

    def scorer(frame, model, plans, score_column: str, regression: bool):
        import pandas as pd

        from ml.predict import REASON_COLUMNS, score_rows

        reasons = [f"{c} {'string' if c.count('_') == 1 else 'double'}" for c in REASON_COLUMNS] if plans else []
        schema = ", ".join(["_row bigint", "user_id string", "as_of_date date", f"{score_column} double", *reasons])
        rows = frame.assign(_row=range(len(frame)))

        def score_partition(batches):
            for batch in batches:
                scored = score_rows(batch.reset_index(drop=True), model, plans, score_column, regression)
                yield scored.assign(_row=batch["_row"].to_numpy())

        scored = (spark.createDataFrame(rows).mapInPandas(score_partition, schema).toPandas()
                  .sort_values("_row").drop(columns="_row").reset_index(drop=True))
        scored["as_of_date"] = pd.to_datetime(scored["as_of_date"]).dt.date
        return scored

    return scorer
