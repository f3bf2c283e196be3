"""Training and scoring time at a given number of users.

The panel is built from a real run's marts (the training set and scoring population of a SHOPCAST_HOME, e.g. the
one `make demo` writes): its rows are replicated, with new user ids, until each cutoff holds N users. The
timings are what matter here; metrics on replicated rows are not a model-quality measure.

    python benchmarks/training.py --home data --users 100000 1000000

Writes benchmarks/results/training.md (and .json): seconds and peak memory for training all candidate
families (3 cutoffs: one validates, two train; at most 300,000 training rows, sampled) and for scoring
(load by alias, predict, deciles, write to DuckDB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measure

RESULTS = Path(__file__).resolve().parent / "results"


def replicate(frame: pd.DataFrame, users_per_date: int) -> pd.DataFrame:
    per_date = frame.groupby("as_of_date").size().max()
    copies = int(np.ceil(users_per_date / per_date))
    parts = [frame.assign(user_id=frame["user_id"] + f"~{i}") for i in range(copies)]
    out = pd.concat(parts, ignore_index=True)
    return out.groupby("as_of_date", group_keys=False).head(users_per_date).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SHOPCAST_HOME", "data")))
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from ml.gate import apply, backtest_candidate, decide, register
    from ml.predict import score
    from ml.registry import CHAMPION, Store, load_by_alias
    from ml.targets import PURCHASE_PROPENSITY_7D as TARGET
    from ml.train import train_candidates

    with duckdb.connect(str(args.home.resolve() / "warehouse.duckdb"), read_only=True) as con:
        training = con.execute("select * from marts.fct_training_set where cutoff_rank <= 3").df()
        population = con.execute("select * from marts.fct_scoring_population").df()
    rows = []
    for users in args.users:
        work = Path(tempfile.mkdtemp(prefix="shopcast-train-bench-"))
        store = Store(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
        panel = replicate(training, users)
        scoring = replicate(population, users)
        with measure("train 6 families + log + register + gate") as m:
            outcome = train_candidates(panel, TARGET, store, budget_seconds=300)
            entry = register(store, TARGET, outcome.best.run_id, {"as_of_date": "bench", "family": outcome.best.family,
                                                                  "fold_scores": json.dumps(outcome.best.fold_scores)})
            tested = backtest_candidate(store, TARGET, entry, panel, folds=1, min_examples_per_class=20,
                                        max_training_rows=300_000)
            apply(store, decide(TARGET, entry.version, tested, margin=0.0))
        rows.append({"users": users, "stage": m.stage, "rows": len(panel), "seconds": round(m.seconds, 1),
                     "peak_rss_mb": round(m.peak_rss_mb), "best": outcome.best.family,
                     "per_family_fit_seconds": {c.family: round(c.fit_seconds, 1) for c in outcome.candidates}})
        with measure("score (load champion, predict, deciles, write)") as m:
            model, champion = load_by_alias(store, TARGET.name, CHAMPION)
            scored = score(scoring, model, TARGET.name, champion.version)
            with duckdb.connect(str(work / "w.duckdb")) as con:
                from dagster_project.warehouse import replace_dates

                replace_dates(con, "predictions", TARGET.name, scored)
        rows.append({"users": users, "stage": m.stage, "rows": len(scored), "seconds": round(m.seconds, 1),
                     "peak_rss_mb": round(m.peak_rss_mb), "best": outcome.best.family,
                     "users_per_minute": round(len(scored) / m.seconds * 60)})
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "training.json").write_text(json.dumps(rows, indent=2))
        lines = ["# Training and scoring benchmark", "",
                 (f"Panel replicated from the marts of `{args.home}` to N users per as-of date; 3 cutoffs; "
                  "training sampled to at most 300,000 rows; search budget 300 s over six families."), "",
                 "| users | stage | rows | seconds | peak RSS MB | notes |", "|---:|---|---:|---:|---:|---|"]
        for r in rows:
            note = (f"best {r['best']}; fit s: {r['per_family_fit_seconds']}" if "per_family_fit_seconds" in r
                    else f"{r['users_per_minute']:,} users/min")
            lines.append(f"| {r['users']:,} | {r['stage']} | {r['rows']:,} | {r['seconds']} | {r['peak_rss_mb']:,} | {note} |")
        (RESULTS / "training.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
