"""What the behaviour features add: each target trained on the `counts` feature set alone, on `behaviour` alone and
on both (as shipped: the tuning cutoff keeps the better set per family), on the training sample of a built home,
then backtested like the gate does, against the target's baseline (BG/NBD or the recency/frequency ranking), for the
report in issue 22.

    python benchmarks/features.py --home data/ga-merch --label ga-merch
    python benchmarks/features.py --report      # benchmarks/results/features.md from every results file
    python benchmarks/features.py --home data/ga-merch --label ga-merch --groups   # each behaviour group alone

``--groups`` adds each group of behaviour columns to the counts set on its own (one family, default the logistic
regression, each grid configuration): which group, if any, carries the signal the whole set does not show.

``--variants reviews`` (issue 25) trains on the `reviews` set (the behaviour set plus each user's review features
before the cutoff, fitted as the candidates asset fits them): against the `behaviour` row of the same home, what
the reviews and their text add.

``--variants sequence`` (issue 24) trains the GRU on the `sequence` set (the behaviour set plus each user's last
events as tokens; the deep extra needed), after materializing the home's training_sequences asset for its sample:
against the shipped row of the same home, whether the order of events adds what the aggregates miss.

The home's marts must have been built by a version with the behaviour features (`shopcast run` rebuilds older
ones). Families, budget and eligibility are the home's settings unless given; every run trains into a temporary
MLflow store. The backtest is ml/backtest.py's: the best candidate's configuration refit per fold on the older
cutoffs, the baseline scored on the same rows, the mean over the folds (the two newest reuse training's scores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.calibration import training_sample

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "features"
VARIANTS = {"counts": ["counts"], "behaviour": ["behaviour"], "both (shipped)": None, "sequence": ["sequence"],
            "reviews": ["reviews"]}
OPT_IN = ("sequence", "reviews")  # measured only when named
# the sequence set is the GRU's alone (issue 24): the behaviour set and each user's last events as tokens
SEQUENCE_FAMILIES = ["gru"]


def with_sequences(home: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The training sample with its users' event sequences at each cutoff as tokens: the training_sequences asset
    materialized for the home's sample first (the dbt build of the sequence mart for its dates), as a run with
    the GRU among its families does."""
    from dagster_project import runs
    from dagster_project.defs.resources import WarehouseResource
    from dagster_project.defs.sequences import load_tokens_for_training
    from dagster_project.defs.training import TRAINING_SEQUENCES

    os.environ["SHOPCAST_MODEL_FAMILIES"] = ",".join(SEQUENCE_FAMILIES)  # the asset builds tokens only for a GRU
    last = pd.Timestamp(frame["as_of_date"].max()).date().isoformat()
    runs._execute("weekly_training", partition_key=last, asset_selection=[TRAINING_SEQUENCES])
    return load_tokens_for_training(WarehouseResource(path=str(home / "warehouse.duckdb")), frame)


def with_reviews(home: Path, frame: pd.DataFrame):
    """The training sample with its users' review features at each cutoff (issue 25), fitted as the candidates
    asset fits them: on the reviews before the sample's newest cutoff; and the fitted ReviewFeatures."""
    from dagster_project.defs.resources import WarehouseResource
    from dagster_project.defs.reviews import training_review_features
    from dagster_project.settings import load_settings

    data, fitted, done = training_review_features(WarehouseResource(path=str(home / "warehouse.duckdb")), frame,
                                                  str(load_settings(home=home).text_model_dir or ""))
    print(done, file=sys.stderr)
    if fitted is None:
        raise SystemExit(f"{home}: {done}")
    return data, fitted


def measure(home: Path, label: str, budget: float | None, families: list[str] | None, folds: int,
            targets: list[str] | None = None, variants: list[str] | None = None, where: str | None = None) -> dict:
    os.environ["SHOPCAST_HOME"] = str(home)
    from dagster_project.settings import load_settings
    from dagster_project.targets import TARGETS  # the home's: the default ones and its extra_targets
    from ml.backtest import backtest
    from ml.registry import Store
    from ml.targets import Eligibility
    from ml.train import NotEligible, train_candidates

    settings = load_settings()
    frame = training_sample(home)
    reviewed = None   # the sample with its review features, on the first reviews variant (or for --where)
    if where:  # every variant on the same rows: those the condition (on the review features too) keeps
        with_review_columns, fitted = with_reviews(home, frame)
        kept = with_review_columns.query(where).index
        print(f"{where}: {len(kept)} of {len(frame)} rows", file=sys.stderr)
        frame, reviewed = frame.loc[kept], (with_review_columns.loc[kept], fitted)
    eligibility = Eligibility(settings.min_class_examples, settings.min_roc_auc, settings.min_pr_auc_skill,
                              settings.min_normalized_gini, settings.min_expected_over_observed,
                              settings.max_expected_over_observed)
    budget = budget or settings.training_budget_seconds
    families = families or settings.family_list
    measured = set(targets or TARGETS)
    path = RUNS / f"{label}.json"
    # a run for some targets keeps the other targets' rows of an earlier run of the same home
    chosen = [v for v in VARIANTS if (v.split(" ")[0] in variants if variants else v not in OPT_IN)]
    # a run keeps the rows of the targets and variants it does not measure, from an earlier run of the same home
    rows = [r for r in json.loads(path.read_text())["rows"]
            if r["target"] not in measured or r.get("features") not in chosen] if path.exists() else []
    result = {"label": label, "home": str(home), "budget_seconds": budget, "families": families or "all",
              "folds": folds, "where": where, "rows": rows}
    RUNS.mkdir(parents=True, exist_ok=True)
    sequences = None  # the sample with its tokens, built on the first sequence variant
    for target in TARGETS.values():
        if target.name not in measured:
            continue
        for variant in chosen:
            sets = VARIANTS[variant]
            data, variant_families, fitted = frame, families, None
            if variant == "sequence":
                if sequences is None:
                    sequences = with_sequences(home, frame)
                data, variant_families = sequences, SEQUENCE_FAMILIES
            if variant == "reviews":
                if reviewed is None:
                    reviewed = with_reviews(home, frame)
                data, fitted = reviewed
            work = Path(tempfile.mkdtemp(prefix="shopcast-features-"))
            store = Store(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
            started = time.perf_counter()
            try:
                outcome = train_candidates(data, target, store, families=variant_families, budget_seconds=budget,
                                           feature_set_names=sets, eligibility=eligibility, review_features=fitted,
                                           max_training_rows=settings.max_training_rows)
            except NotEligible as exc:
                rows.append({"target": target.name, "features": variant, "note": f"not eligible: {exc}"})
                break
            best = outcome.best
            tested = backtest(data, target, best.model, best.family, folds=folds,
                              min_examples_per_class=eligibility.min_examples_per_class,
                              max_training_rows=settings.max_training_rows, candidate_scores=best.fold_scores)
            metrics = best.metrics
            rows.append({
                "target": target.name, "home": str(home), "features": variant, "best": best.name,
                "columns": len(best.columns),
                "metric": target.primary_metric, "validation": metrics[target.primary_metric],
                "log_loss": metrics.get("log_loss"), "expected_over_observed": metrics.get("expected_over_observed"),
                "backtest": tested.candidate_score, "baseline": tested.incumbent_name,
                "baseline_backtest": tested.incumbent_score,
                "margin": tested.candidate_score - tested.incumbent_score, "folds": tested.summary,
                "quality_problems": "; ".join(outcome.quality_problems), "seconds": time.perf_counter() - started})
            path.write_text(json.dumps(result, indent=1))  # each row as it comes: runs are long
            print(f"{label} {target.name} {variant}: {best.name} backtest {tested.candidate_score:.4f} vs "
                  f"{tested.incumbent_score:.4f} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    path.write_text(json.dumps(result, indent=1))
    return result


# The behaviour columns (ml/features.BEHAVIOUR_COLUMNS and the 14-day windows) by what they describe.
GROUPS = {
    "hour/weekday habits": lambda c: c.endswith("share_90d") or c == "mean_event_hour_90d",
    "item prices": lambda c: "price" in c,
    "distinct purchase days, revenue all": lambda c: c.startswith("purchase_days") or c == "revenue_all",
    "open cart, hours since view/cart/checkout": lambda c: c.startswith(("hours_since_", "open_cart_")),
    "14-day windows": lambda c: c.endswith("_14d"),
    "gaps between active days": lambda c: "between" in c or "overdue" in c,
}


def measure_groups(home: Path, label: str, family_name: str, folds: int, target_name: str) -> dict:
    """Each group of behaviour columns added to the counts set alone, ``family_name`` fitted per fold on the cutoffs
    whose labels are closed at it and scored on it (PR-AUC or the target's metric), every grid configuration."""
    os.environ["SHOPCAST_HOME"] = str(home)
    import numpy as np

    from ml.evaluate import predict_scores, target_metrics
    from ml.features import feature_columns, feature_sets, is_behaviour, to_matrix
    from ml.models import FAMILIES
    from ml.targets import TARGETS
    from ml.train import _fit

    frame, target, family = training_sample(home), TARGETS[target_name], FAMILIES[family_name]
    columns = feature_columns(frame)
    counts = feature_sets(columns, ["counts"])["counts"]
    variants = {"counts": counts} | {
        f"counts + {name}": counts + [c for c in columns if is_behaviour(c) and keep(c)]
        for name, keep in GROUPS.items()} | {"behaviour (every group)": feature_sets(columns, ["behaviour"])["behaviour"]}
    dates = sorted(pd.to_datetime(frame["as_of_date"]).unique())
    rows = []
    for variant, used in variants.items():
        for params in family.grid:
            scores = {}
            for fold in dates[-folds:]:
                closed = pd.to_datetime(frame["as_of_date"]) <= fold - pd.Timedelta(days=target.horizon_days)
                test = frame[pd.to_datetime(frame["as_of_date"]) == fold]
                model = _fit(family, used, params, frame[closed], target)
                p = predict_scores(model, to_matrix(test, used), target.is_regression)
                scores[str(fold.date())] = float(target_metrics(target.is_regression,
                                                                test[target.label].to_numpy(dtype=float), p)
                                                 [target.primary_metric])
            rows.append({"variant": variant, "columns": len(used), "params": json.dumps(params),
                         "mean": float(np.mean(list(scores.values()))), "folds": scores})
            print(f"{label} {variant} {params}: {rows[-1]['mean']:.4f}", file=sys.stderr)
    result = {"label": label, "home": str(home), "target": target_name, "family": family_name,
              "metric": target.primary_metric, "rows": rows}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{label}.groups.json").write_text(json.dumps(result, indent=1))
    return result


def groups_report() -> list[str]:
    lines = []
    for path in sorted(RUNS.glob("*.groups.json")):
        result = json.loads(path.read_text())
        table = pd.DataFrame(result["rows"])
        table["folds"] = table["folds"].map(lambda f: ", ".join(f"{v:.4f}" for v in f.values()))
        lines += [f"## {result['label']}, {result['target']}: each behaviour group alone ({result['family']})", "",
                  (f"The counts set plus one group; {result['metric']} on each of the newest cutoffs, fitted on the "
                   "cutoffs whose labels are closed at it; `mean` over them."), "",
                  table.to_markdown(index=False, floatfmt=".4f"), ""]
    return lines


def report() -> str:
    frames = [pd.DataFrame(json.loads(path.read_text())["rows"]).assign(data=json.loads(path.read_text())["label"])
              for path in sorted(RUNS.glob("*.json")) if not path.name.endswith(".groups.json")]
    table = pd.concat(frames, ignore_index=True)
    measured = table[table["best"].notna()] if "best" in table else table.iloc[:0]
    shown = ["data", "target", "features", "best", "columns", "metric", "validation", "backtest", "baseline",
             "baseline_backtest", "margin", "log_loss", "expected_over_observed", "quality_problems"]
    lines = ["# What the behaviour features add", "",
             ("Each target's best candidate trained on the `counts` set, the `behaviour` set and both (as shipped), "
              "and (issue 24) the GRU on the `sequence` set (the behaviour set and each user's last events), "
              "on the same training sample of each home, with the home's families, budget and eligibility "
              "(benchmarks/features.py; a home's rows of one run share its training sample). `backtest` is the mean of the target's primary metric over the newest "
              "closed cutoffs, the configuration refit on the older ones each time; `baseline_backtest` the "
              "baseline's on the same rows; `margin` their difference."), "",
             measured[[c for c in shown if c in measured.columns]].to_markdown(index=False, floatfmt=".4f"), ""]
    skipped = table[table["best"].isna()] if "best" in table else table
    if len(skipped):
        lines += ["Not measured:", ""] + [f"- {r.data} {r.target}: {r.note}" for r in skipped.itertuples()] + [""]
    lines += groups_report()
    lines.append("Folds and timings: benchmarks/results/features/*.json.")
    text = "\n".join(lines) + "\n"
    (RESULTS / "features.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--budget", type=float, default=None, help="seconds per target search (default: the home's)")
    parser.add_argument("--families", default=None, help="comma-separated (default: the home's)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--targets", default=None, help="comma-separated target names (default: every target)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated: counts, behaviour, both, sequence (the GRU: needs the deep extra), "
                             "reviews (the home must hold reviews) (default: all but sequence and reviews)")
    parser.add_argument("--groups", action="store_true", help="each behaviour group added to counts alone")
    parser.add_argument("--where", default=None,
                        help="train and backtest every variant on the rows this pandas condition keeps (it may name "
                             "review features: the home must hold reviews), e.g. 'review_count >= 5'")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.report:
        print(report())
        return
    if args.groups:
        measure_groups(args.home.resolve(), args.label, (args.families or "logistic_regression").split(",")[0],
                       args.folds, (args.targets or "purchase_propensity_7d").split(",")[0])
        return
    measure(args.home.resolve(), args.label, args.budget,
            args.families.split(",") if args.families else None, args.folds,
            args.targets.split(",") if args.targets else None, args.variants.split(",") if args.variants else None,
            args.where)


if __name__ == "__main__":
    main()
