"""Apache Spark as the warehouse engine (issue 27, docs/scale_out.md): a local SparkSession set up as the dbt
project expects it, and the raw layer the loaders wrote to DuckDB published to it as Parquet tables.

dbt-spark's ``session`` method (dbt/profiles.yml, target ``spark``) runs every model in the SparkSession of the
process that runs dbt: the session is built here first, with these settings, and dbt's own ``getOrCreate`` finds it.
Needs the ``spark`` extra (``make install-spark``) and Java 17 or 21.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

SPARK_TARGET = "spark"  # the dbt target of dbt/profiles.yml
RAW_SCHEMA = "raw"


def local_session(folder: Path, cores: int = 2):
    """A local SparkSession whose tables and metastore live in ``folder`` (Spark's warehouse and its Derby
    metastore), in UTC like the DuckDB warehouse, sized for one machine."""
    from pyspark.sql import SparkSession

    folder.mkdir(parents=True, exist_ok=True)
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
            .enableHiveSupport()
            .getOrCreate())


def publish_raw_layer(spark, warehouse: Path, folder: Path) -> dict[str, int]:
    """Every table of the DuckDB warehouse's raw schema (validated, quarantined and reconciled by the loaders)
    written to ``folder`` as Parquet and registered as ``raw.<table>`` in the session's metastore, replacing an
    earlier copy. Returns the rows of each table as Spark reads them, which equal DuckDB's (checked: a difference
    raises)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = [t for (t,) in con.execute("select table_name from duckdb_tables() where schema_name = ? order by 1",
                                           [RAW_SCHEMA]).fetchall()]
        tables = {}
        for table in names:
            target = folder / table
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("*.parquet"):
                old.unlink()
            # a folder per table (a Hive table's location is a folder), written by DuckDB's own Parquet writer
            con.execute(f'copy {RAW_SCHEMA}."{table}" to \'{target / "part-0.parquet"}\' (format parquet)')
            tables[table] = con.execute(f'select count(*) from {RAW_SCHEMA}."{table}"').fetchone()[0]
    spark.sql(f"create database if not exists {RAW_SCHEMA}")
    counts = {}
    for table, rows in tables.items():
        spark.sql(f"drop table if exists {RAW_SCHEMA}.{table}")
        spark.sql(f"create table {RAW_SCHEMA}.{table} using parquet location '{folder / table}'")
        counts[table] = spark.table(f"{RAW_SCHEMA}.{table}").count()
        if counts[table] != rows:
            raise RuntimeError(f"raw.{table}: {rows} rows in DuckDB, {counts[table]} read by Spark from {folder / table}")
    return counts
