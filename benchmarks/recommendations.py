"""Recommendations on the protocol of issue 23: every candidate of the recommendations target (ml/recommendations.py)
fitted on marts.fct_user_item_interactions at fixed cutoffs of a built home and measured on what the users bought in
the horizon after each (Recall@10, new-item Recall@10, NDCG@10, HitRate@10, catalogue coverage, fit time).

    python benchmarks/recommendations.py --home /path/to/online-retail-home --label online-retail \\
        --cutoffs 2011-09-01,2011-10-01,2011-11-01 --horizon 28
    python benchmarks/recommendations.py --home /path/to/ga-merch-home --label ga-merch \\
        --cutoffs 2016-10-04,2016-10-11,2016-10-18 --horizon 14
    python benchmarks/recommendations.py --report   # benchmarks/results/recommendations.md from every results file

The script builds the interactions at the cutoffs (and at the earlier snapshots the reranker learns from) with dbt
in the home's warehouse, as the pipeline does, then reads them. The home must hold the events (any `shopcast
ingest` or `shopcast sample` home).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measure as measured

if TYPE_CHECKING:
    import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "recommendations"


def build_interactions(home: Path, dates: list[dt.date], truth_until: dt.date) -> float:
    """dbt builds the item days (and the staged events they read) up to ``truth_until`` (the truth of the last cutoff) and the interactions of
    ``dates`` in the home's warehouse, keeping them all; returns seconds."""
    os.environ["SHOPCAST_HOME"] = str(home)
    from dagster_project.settings import DBT_PROJECT_DIR, load_settings

    settings = load_settings()
    iso = [d.isoformat() for d in sorted(dates)]
    base = {**settings.dbt_vars(), "training_cutoffs": 2, "training_cadence_days": 7}
    builds = [("+int_user_item_daily", {"min_as_of_date": iso[0], "as_of_date": truth_until.isoformat()}),
              ("fct_user_item_interactions", {"min_as_of_date": iso[0], "as_of_date": iso[-1], "as_of_dates": iso,
                                              "interaction_dates_kept": iso})]
    started = time.perf_counter()
    for model, dates_vars in builds:
        subprocess.run([str(Path(sys.executable).parent / "dbt"), "build", "--exclude-resource-type", "unit_test",
                        "--select", model, "--vars", json.dumps({**base, **dates_vars})],
                       cwd=DBT_PROJECT_DIR, env={**os.environ, **settings.subprocess_env()}, check=True,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def read_interactions(home: Path, dates: list[dt.date]) -> tuple[dict[dt.date, pd.DataFrame], pd.DataFrame]:
    """({date: the interactions at it}, the item days with a purchase) of a home built by build_interactions."""
    import duckdb

    from ml.recommend import INTERACTION_COLUMNS

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        interactions = {d: con.execute(f"select {', '.join(INTERACTION_COLUMNS)} from marts.fct_user_item_interactions "
                                       "where as_of_date = ?", [d]).df() for d in dates}
        item_days = con.execute("select user_id, item_id, activity_date, n_purchase from intermediate.int_user_item_daily "
                                "where n_purchase > 0").df()
    return interactions, item_days


def run(home: Path, label: str, cutoffs: list[dt.date], horizon: int, candidates: list[str] | None) -> dict:

    from ml.recommend import Snapshot
    from ml.recommendations import (
        CANDIDATES,
        PRIMARY_METRIC,
        Fold,
        backtest,
        snapshot_cutoffs,
        summarise,
        truth_after,
    )

    names = candidates or list(CANDIDATES)
    snapshots = {c: snapshot_cutoffs(c, horizon) for c in cutoffs}
    dates = sorted(set(cutoffs) | {s for dates in snapshots.values() for s in dates})
    build_seconds = build_interactions(home, dates, max(cutoffs) + dt.timedelta(days=horizon))
    interactions, item_days = read_interactions(home, dates)
    empty = [d for d, rows in interactions.items() if rows.empty]
    if empty:
        raise SystemExit(f"no interactions before {', '.join(map(str, empty))}: the home's events start later")

    def truth(d):
        return truth_after(item_days, d, horizon, interactions[d])

    folds = [Fold(c, interactions[c], truth(c), [Snapshot(interactions[s], truth(s)) for s in snapshots[c]])
             for c in cutoffs]
    with measured("candidates") as stage:
        results = backtest(names, folds, progress=lambda line: print(line, flush=True))
    table = summarise(results)
    result = {
        "label": label, "home": str(home), "cutoffs": [c.isoformat() for c in cutoffs], "horizon_days": horizon,
        "interaction_rows": {d.isoformat(): len(rows) for d, rows in interactions.items()},
        "test_users": {f.cutoff.isoformat(): int(f.truth.user_id.nunique()) for f in folds},
        "build_seconds": round(build_seconds, 1), "candidates_seconds": round(stage.seconds, 1),
        "peak_rss_mb": round(stage.peak_rss_mb), "primary_metric": PRIMARY_METRIC,
        "per_fold": json.loads(results.to_json(orient="records", date_format="iso")),
        "summary": json.loads(table.to_json(orient="records")),
    }
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{label}.json").write_text(json.dumps(result, indent=2))
    print(table.to_string(index=False))
    return result


def report() -> str:
    from ml.recommendations import NAIVE

    lines = ["# Recommendations: candidates on the issue 23 protocol", "",
             ("Generated by `benchmarks/recommendations.py` from `results/recommendations/*.json`. Means over the "
             "cutoffs; Recall@10 = hits / min(10, |truth|) over the users with interactions before the cutoff who "
             "bought in the horizon; new-item Recall@10 is the cross-sell list against the items the user had not "
             "bought before. Naive candidates are marked *."), ""]
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        lines += [f"## {r['label']}", "",
                  (f"Cutoffs {', '.join(r['cutoffs'])}, horizon {r['horizon_days']} days; test users per cutoff "
                  f"{', '.join(map(str, r['test_users'].values()))}; interactions built in {r['build_seconds']} s "
                  f"(rows per date: {', '.join(f'{k}: {v:,}' for k, v in r['interaction_rows'].items())}); "
                  f"candidates measured in {r['candidates_seconds']} s, peak RSS {r['peak_rss_mb']} MB."), "",
                  "| candidate | Recall@10 | new-item Recall@10 | NDCG@10 | HitRate@10 | coverage@10 | fit s |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["summary"]:
            name = row["candidate"] + (" *" if row["candidate"] in NAIVE else "")
            lines.append(f"| {name} | {row['recall_at_10']:.3f} | {row['new_item_recall_at_10']:.3f} | "
                         f"{row['ndcg_at_10']:.3f} | {row['hit_rate_at_10']:.3f} | {row['coverage_at_10']:.3f} | "
                         f"{row['fit_seconds']:.1f} |")
        lines.append("")
    notes = Path(__file__).resolve().parent / "recommendations_notes.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    text = "\n".join(lines)
    (RESULTS / "recommendations.md").write_text(text)
    return text


def protocol_arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] = lambda _: None,
                       report_of: Callable[[], str] | None = None) -> tuple[argparse.Namespace, list[dt.date]] | None:
    """The arguments of a benchmark on the cutoffs protocol (--home, --label, --cutoffs, --horizon, --report, and
    what ``extra`` adds): (arguments, cutoffs), or None after printing ``report_of()`` for --report."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--home", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--cutoffs", help="comma-separated ISO dates")
    parser.add_argument("--horizon", type=int, default=28)
    parser.add_argument("--report", action="store_true")
    extra(parser)
    args = parser.parse_args()
    if args.report:
        print((report_of or report)())
        return None
    if not (args.home and args.label and args.cutoffs):
        parser.error("--home, --label and --cutoffs are needed (or --report)")
    return args, [dt.date.fromisoformat(c) for c in args.cutoffs.split(",")]


def main() -> None:
    parsed = protocol_arguments(__doc__, lambda parser: parser.add_argument(
        "--candidates", help="comma-separated names (default: every candidate)"))
    if parsed is None:
        return
    args, cutoffs = parsed
    run(args.home.resolve(), args.label, cutoffs, args.horizon,
        args.candidates.split(",") if args.candidates else None)


if __name__ == "__main__":
    main()
