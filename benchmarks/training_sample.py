"""Does a smaller training sample keep the metrics? (issue 9: "training on a bounded, documented sample of the
panel when it is large, if that keeps the metrics")

On the training set of a real SHOPCAST_HOME (e.g. the scale benchmark's 10M-event home), read as training reads it
(`training_sql`: the BG/NBD columns joined, at most SHOPCAST_TRAINING_ROWS_PER_CUTOFF users per cutoff), train the
candidates of each target with models fitted on at most N rows (`max_training_rows`), for several N, and report
each family's validation metric (the same validation cutoff, never sampled) and the time taken.

    python benchmarks/training_sample.py --home /tmp/shopcast-bench/home_10000000 --rows 30000 100000 300000

Writes benchmarks/results/training_sample.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--rows", type=int, nargs="+", default=[30_000, 100_000, 300_000])
    parser.add_argument("--targets", nargs="+", default=["purchase_propensity_7d", "churn_probability_7d",
                                                         "predicted_revenue_28d"])
    parser.add_argument("--rows-per-cutoff", type=int, default=200_000)
    parser.add_argument("--budget", type=float, default=300.0)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from dagster_project.defs.training import training_sql
    from ml.registry import Store
    from ml.targets import TARGETS
    from ml.train import NotEligible, train_candidates

    with duckdb.connect(str(args.home.resolve() / "warehouse.duckdb"), read_only=True) as con:
        frame = con.execute(training_sql(args.rows_per_cutoff)).df()
    rows = []
    for name in args.targets:
        target = TARGETS[name]
        for n in sorted(args.rows):
            work = Path(tempfile.mkdtemp(prefix="shopcast-sample-bench-"))
            store = Store(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
            started = time.perf_counter()
            try:
                outcome = train_candidates(frame, target, store, budget_seconds=args.budget, max_training_rows=n)
            except NotEligible as exc:
                print(f"{name}: not eligible: {exc}", flush=True)
                break
            seconds = time.perf_counter() - started
            metric = target.primary_metric
            rows.append({"target": name, "max_training_rows": n, "training_rows": len(outcome.split.train),
                         "validation_rows": len(outcome.split.valid), "metric": metric,
                         "best_family": outcome.best.family, "best": round(outcome.best.metrics[metric], 4),
                         "families": {c.family: round(c.metrics[metric], 4) for c in outcome.candidates},
                         "fit_seconds": {c.family: round(c.fit_seconds, 1) for c in outcome.candidates},
                         "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
            write(rows, args)


def write(rows: list[dict], args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training_sample.json").write_text(json.dumps(rows, indent=1) + "\n")
    families = sorted({f for r in rows for f in r["families"]})
    lines = ["# Training sample size against validation metrics", "",
             (f"Training set of `{args.home}` (at most {args.rows_per_cutoff:,} users per cutoff, BG/NBD columns "
              f"joined), models fitted on at most N rows (uniform sample), search budget {args.budget:.0f} s per "
              "target. The validation cutoff is the same and never sampled. Regenerate with "
              "`python benchmarks/training_sample.py --home HOME`."), "",
             "| target | N (max training rows) | training rows | validation rows | metric | best family | best | "
             + " | ".join(families) + " | seconds |",
             "|---|---:|---:|---:|---|---|---:|" + "---:|" * len(families) + "---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['max_training_rows']:,} | {r['training_rows']:,} | "
                     f"{r['validation_rows']:,} | {r['metric']} | {r['best_family']} | {r['best']:.4f} | "
                     + " | ".join(f"{r['families'].get(f, float('nan')):.4f}" for f in families)
                     + f" | {r['seconds']} |")
    (RESULTS / "training_sample.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
