"""Foundation benchmark: generate → ingest → features → checks at given sizes, one fresh SHOPCAST_HOME each.

Writes benchmarks/results/foundation.md (and .json): seconds, peak memory (RSS of the process tree) and events per
second per stage. The features stage is one daily partition run (the daily cost: staging, the activity window,
feat_user_daily and the marts, with their checks); the backfill stage is the feature history a first training
run needs (12 weekly cutoffs).

    python benchmarks/foundation.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measure

RESULTS = Path(__file__).resolve().parent / "results"


def run_size(n_events: int, workdir: Path) -> list[dict]:
    home = workdir / f"home_{n_events}"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["SHOPCAST_HOME"] = str(home)
    from dagster_project import runs
    from dagster_project.generate.synthetic import GeneratorConfig, generate
    from dagster_project.settings import ensure_home

    paths = ensure_home().paths
    cfg = GeneratorConfig(n_events=n_events, seed=1, days=120)
    as_of = cfg.end_date
    stages = []
    with measure("generate") as m:
        generated = generate(cfg, paths.landing / "canonical")
    m.extra["events"] = generated.n_events
    stages.append(m)
    with measure("ingest") as m:
        runs.ingest("canonical", [str(paths.landing / "canonical")])
    stages.append(m)
    with measure("features + checks (one as-of date)") as m:
        runs.backfill_features(as_of, as_of)
    stages.append(m)
    first = as_of - dt.timedelta(days=7 * 12)
    with measure("features + checks (backfill, 84 as-of dates)") as m:
        runs.backfill_features(first, as_of - dt.timedelta(days=1))
    stages.append(m)
    size = sum(f.stat().st_size for f in home.rglob("*") if f.is_file())
    rows = []
    for s in stages:
        rows.append({"events": generated.n_events, "users": generated.n_users, "stage": s.stage,
                     "seconds": round(s.seconds, 2), "events_per_second": round(generated.n_events / s.seconds),
                     "peak_rss_mb": round(s.peak_rss_mb), "home_mb": round(size / 2**20)})
    return rows


def write_report(rows: list[dict]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Foundation benchmark",
        "",
        f"Machine: {os.cpu_count()} cores. Generated data: 120 days. One fresh SHOPCAST_HOME per size.",
        "Peak memory is the RSS of the whole process tree (Python, dbt subprocess), sampled every 100 ms.",
        "",
        "| events | users | stage | seconds | events/s | peak RSS MB | SHOPCAST_HOME MB |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['events']:,} | {r['users']:,} | {r['stage']} | {r['seconds']} | {r['events_per_second']:,} "
              f"| {r['peak_rss_mb']:,} | {r['home_mb']:,} |" for r in rows]
    path = RESULTS / "foundation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("SHOPCAST_BENCH_DIR", "/tmp/shopcast-bench")))
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows += run_size(n, args.workdir)
        print(write_report(rows).read_text(), flush=True)


if __name__ == "__main__":
    main()
