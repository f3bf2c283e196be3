"""Engines benchmark (issue 27): the dbt project's marts built on DuckDB and on a local Spark session from the same
raw layer, at 1M and 10M generated events, on this machine.

    make bench-engines                               # 1M and 10M: writes benchmarks/results/engines.md
    python benchmarks/engines.py --sizes 1000000     # one size (the report keeps the other sizes' last figures)

Per size: the scale benchmark's generated events (benchmarks/scale.py, 120 days, kept in SHOPCAST_BENCH_DIR) are
ingested once into a DuckDB home; then, each engine in a process of its own (its peak memory is that process
tree's: Python, and Spark's JVM), the three dbt builds a first run makes, in its order:
1. the staged events of the as-of date (dbt_staging);
2. the features of the training cutoffs (three weekly cutoffs before it), built incrementally as the graph's
   training_cutoff_features step builds them (every day of history into the incremental intermediate tables);
3. the intermediate tables and marts of the as-of date (dbt_marts; the sequences aside, as the daily graph builds
   them).
On Spark the raw layer is first published as Parquet (dagster_project/spark_engine.py), and after each build the
tables are mirrored into the DuckDB warehouse as views, as a run with engine=spark does: both are timed apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measure
from benchmarks.scale import END, land_events

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = [1_000_000, 10_000_000]
ENGINES = ("duckdb", "spark")
CUTOFFS = [END - dt.timedelta(days=d) for d in (21, 14, 7)]


def builds() -> list[tuple[str, list[str], dict]]:
    """(name, dbt selection, the run's values) of the three builds a first run makes, in a run's order
    (defs/dbt_assets.py): the staged events of the as-of date, the features of its training cutoffs, then the
    intermediate tables and marts of the date."""
    from dagster_project.defs.dbt_assets import CUTOFF_FEATURE_MODELS

    windows = {"training_cutoffs": len(CUTOFFS), "training_cadence_days": 7}
    as_of = {**windows, "as_of_date": END.isoformat(), "min_as_of_date": END.isoformat(), "as_of_dates": None}
    return [
        ("staging", ["staging"], as_of),
        ("training cutoffs", CUTOFF_FEATURE_MODELS.split(),
         {**windows, "as_of_date": CUTOFFS[-1].isoformat(), "min_as_of_date": CUTOFFS[0].isoformat(),
          "as_of_dates": [d.isoformat() for d in CUTOFFS]}),
        ("marts", ["intermediate", "marts", "--exclude", "tag:sequences"], as_of),
    ]


def child(engine: str, home: str) -> None:
    """One engine's builds in this process; prints {stage: seconds} as JSON on its last line."""
    from dbt.cli.main import dbtRunner

    from dagster_project.settings import DBT_PROJECT_DIR, DBT_RUN_VARS_ENV, load_settings

    settings = load_settings(home=Path(home))
    warehouse, timings = settings.paths.warehouse, {}
    target = []
    if engine == "spark":
        from dagster_project import spark_engine

        started = time.perf_counter()
        spark = spark_engine.session_for(settings.paths.spark)
        timings["session start"] = time.perf_counter() - started
        started = time.perf_counter()
        spark_engine.publish_raw_layer(spark, warehouse, settings.paths.spark / "published")
        timings["raw layer published"] = time.perf_counter() - started
        target = ["--target", spark_engine.SPARK_TARGET]
    os.chdir(DBT_PROJECT_DIR)
    for name, selection, run_vars in builds():
        os.environ[DBT_RUN_VARS_ENV] = json.dumps(run_vars)
        started = time.perf_counter()
        result = dbtRunner().invoke(["build", *target, "--select", *selection, "--vars", json.dumps(settings.dbt_vars()),
                                     "--exclude-resource-type", "unit_test", "--log-level", "warn",
                                     "--target-path", str(Path(home) / "dbt" / engine),
                                     "--log-path", str(Path(home) / "dbt" / engine)])
        if not result.success:
            raise SystemExit(f"{engine}: dbt {name} failed: {result.exception or result.result}")
        timings[name] = time.perf_counter() - started
        if engine == "spark":
            started = time.perf_counter()
            spark_engine.mirror_to_duckdb(spark, warehouse)
            timings[f"{name}: mirrored to DuckDB"] = time.perf_counter() - started
    print(json.dumps({k: round(v, 1) for k, v in timings.items()}))


def run_size(n_events: int, workdir: Path) -> dict:
    from dagster_project import runs
    from dagster_project.settings import ensure_home, load_settings

    events = land_events(n_events, workdir)
    root = workdir / f"engines_{n_events}"
    shutil.rmtree(root, ignore_errors=True)
    homes = {engine: root / engine for engine in ENGINES}
    os.environ["SHOPCAST_HOME"] = str(homes["duckdb"])
    paths = ensure_home().paths
    landing = paths.landing / "canonical"
    landing.mkdir(parents=True)
    for day in sorted(events["days"]):
        os.symlink(events["days"][day], landing / Path(events["days"][day]).name)
    started = time.perf_counter()
    runs.ingest("canonical", [str(landing)])
    ingest_seconds = time.perf_counter() - started
    ensure_home(load_settings(home=homes["spark"], engine="spark"))
    shutil.copy(paths.warehouse, homes["spark"] / "warehouse.duckdb")  # the same raw layer, loads and all
    result = {"events": events["events"], "users": events["users"], "ingest_seconds": round(ingest_seconds, 1),
              "engines": {}}
    for engine in ENGINES:
        env = {**os.environ, "SHOPCAST_HOME": str(homes[engine]), "SHOPCAST_ENGINE": engine}
        with measure(engine) as measured:
            proc = subprocess.run([sys.executable, __file__, "--child", engine, str(homes[engine])], env=env,
                                  capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{engine} at {n_events:,} events failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        stages = json.loads(proc.stdout.strip().splitlines()[-1])
        result["engines"][engine] = {"seconds": round(measured.seconds, 1), "peak_rss_mb": round(measured.peak_rss_mb),
                                     "stages": stages}
        print(f"{n_events:,} events, {engine}: {measured.seconds:.0f} s, peak {measured.peak_rss_mb:.0f} MB, {stages}",
              flush=True)
    result["rows_equal"] = same_marts(homes)
    return result


def same_marts(homes: dict[str, Path]) -> dict[str, bool]:
    """Row counts of each mart on both engines (the full comparison is tests/test_spark.py's): equal or not."""
    import duckdb

    counts = {}
    for engine, home in homes.items():
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            names = [n for (n,) in con.execute(
                "select schema_name || '.' || table_name from duckdb_tables() where schema_name in ('intermediate', "
                "'marts') union all select schema_name || '.' || view_name from duckdb_views() where schema_name in "
                "('intermediate', 'marts')").fetchall()]
            counts[engine] = {n: con.execute(f"select count(*) from {n}").fetchone()[0] for n in names}
    return {n: counts["spark"].get(n) == c for n, c in sorted(counts["duckdb"].items())}


def report(results: dict) -> str:
    lines = ["# Engines: the marts on DuckDB and on Spark", "",
             ("`make bench-engines` (benchmarks/engines.py): the three dbt builds of a first run in its order (the "
             "as-of date's staging; the features of three training cutoffs; the date's intermediate tables and "
             "marts) from the same ingested raw "
             f"layer, each engine in a process of its own on this machine ({os.cpu_count()} cores). Spark is a local "
             "session (one JVM); its figures include publishing the raw layer to it as Parquet and mirroring its "
             "tables into the DuckDB warehouse as views, which a run with engine=spark does. Peak memory is the "
             "engine process tree's (Python and the JVM)."), "",
             "| events | users | engine | total (s) | peak RSS (MB) | stages (s) | marts' row counts equal |",
             "|---|---|---|---|---|---|---|"]
    for size in sorted(results, key=int):
        r = results[size]
        for engine, e in r["engines"].items():
            stages = "; ".join(f"{k} {v}" for k, v in e["stages"].items())
            equal = f"{sum(r['rows_equal'].values())} of {len(r['rows_equal'])}"
            lines.append(f"| {r['events']:,} | {r['users']:,} | {engine} | {e['seconds']} | {e['peak_rss_mb']:,} | "
                         f"{stages} | {equal} |")
    differing = sorted({f"{n} ({int(size):,} events)" for size, r in results.items()
                        for n, equal in r["rows_equal"].items() if not equal})
    lines += ["", ("Row counts: every intermediate table and mart of the Spark home against the DuckDB home's "
                   "(the full comparison, row for row, is tests/test_spark.py's); "
                   + (f"differing: {', '.join(differing)}." if differing else "all equal.")),
              "", (f"Measured at commit {results[max(results, key=int)].get('commit', '?')}, "
              f"{results[max(results, key=int)].get('date', '?')}.")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=DEFAULT_SIZES)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("SHOPCAST_LOG_LEVEL", "WARNING")
    workdir = Path(os.environ.get("SHOPCAST_BENCH_DIR", "/tmp/shopcast-bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "engines.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent, check=False).stdout.strip()
    for size in args.sizes:
        results[str(size)] = {**run_size(size, workdir), "commit": commit, "date": dt.date.today().isoformat()}
        out.write_text(json.dumps(results, indent=1))
        (RESULTS / "engines.md").write_text(report(results))
    print((RESULTS / "engines.md").read_text())


if __name__ == "__main__":
    main()
