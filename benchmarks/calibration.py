"""Do the published probabilities add up? Ranking and probability metrics of every candidate on the validation
cutoff, on the training sample of a built home (generated or a real sample), for the report in issue 22.

    python benchmarks/calibration.py --home data/ga-merch --label ga-merch --tag after
    python benchmarks/calibration.py --published --home data/ga-merch --label ga-merch   # after `make demo DATA=...`
    python benchmarks/calibration.py --report      # benchmarks/results/calibration.md from every results file
    python benchmarks/calibration.py --home data --label generated --tag newest --calibration-windows 1

``--calibration-windows`` overrides ml.calibration.WINDOWS, the numbers of newest training cutoffs the calibrator
may learn from (a backtest over the training cutoffs chooses among them): ``1`` is the newest alone (the code of
2026-12-06), ``4`` always four; the default chooses among 1, 2 and 4 (tag ``chosen``). The report compares every
candidate's sums across these. (Tag ``window28`` holds an older run: the cutoffs of 28 days, as ``4`` here.)

``--published`` reads, instead, what a home's run published: each target's champion in the home's registry and
the validation figures its training run logged (a `make demo DATA=...` run, all defaults).

Each run trains every target's candidates afresh on the home's training sample (the rows a run trains on) into a
temporary MLflow store, with the home's eligibility settings, and measures on the validation cutoff: PR-AUC,
ROC-AUC, log loss, Brier and expected over observed positives (the sum of the probabilities over the buyers seen);
for revenue, the predicted total over the realised total. Computed here, not read from the candidates' metrics, so
that the same script measures the code before a change (run it with PYTHONPATH pointing at a checkout of the older
commit) and after it.
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
import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "calibration"


def training_sample(home: Path) -> pd.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        tables = {t for (t,) in con.execute("select table_schema || '.' || table_name from information_schema.tables")
                  .fetchall()}
        table = "training.training_sample" if "training.training_sample" in tables else "marts.fct_training_set"
        return con.execute(f"select * from {table}").df()


def measure(home: Path, label: str, tag: str, budget: float, families: list[str] | None,
            windows: tuple[int, ...] | None = None) -> dict:
    os.environ["SHOPCAST_HOME"] = str(home)
    import ml.calibration

    if windows is not None:
        ml.calibration.WINDOWS = windows
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    from dagster_project.settings import load_settings
    from ml.evaluate import predict_scores
    from ml.features import to_matrix
    from ml.registry import Store
    from ml.targets import TARGETS, Eligibility
    from ml.train import NotEligible, train_candidates

    settings = load_settings()
    frame = training_sample(home)
    eligibility = Eligibility(settings.min_class_examples, settings.min_roc_auc, settings.min_pr_auc_skill,
                              settings.min_normalized_gini)
    work = Path(tempfile.mkdtemp(prefix="shopcast-calibration-"))
    store = Store(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
    rows = []
    for target in TARGETS.values():
        started = time.perf_counter()
        try:
            outcome = train_candidates(frame, target, store, families=families, budget_seconds=budget,
                                       eligibility=eligibility, max_training_rows=settings.max_training_rows)
        except NotEligible as exc:
            rows.append({"target": target.name, "family": "-", "note": f"not eligible: {exc}"})
            continue
        valid = outcome.split.valid
        y = valid[target.label].to_numpy(dtype=float)
        for candidate in outcome.candidates:
            # the model's own inputs (a checkout before feature sets fitted every candidate on outcome.columns)
            p = predict_scores(candidate.model, to_matrix(valid, list(candidate.model.feature_names_in_)),
                               target.is_regression)
            # the family with its feature set where the code has feature sets
            row = {"target": target.name, "family": getattr(candidate, "name", candidate.family), "best": candidate is outcome.best,
                   "validation_as_of": outcome.split.valid_as_of, "rows": len(y), "positives": int((y > 0).sum()),
                   "window_cutoffs": getattr(getattr(candidate, "calibration_window", None), "cutoffs", None),
                   "quality_problems": "; ".join(outcome.quality_problems) if candidate is outcome.best else ""}
            if target.is_regression:
                row |= {"predicted_over_realised_total": float(p.sum() / y.sum()) if y.sum() else float("nan")}
            else:
                clipped = np.clip(p, 1e-7, 1 - 1e-7)
                row |= {"pr_auc": float(average_precision_score(y, p)), "roc_auc": float(roc_auc_score(y, p)),
                        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
                        "brier": float(brier_score_loss(y, clipped)),
                        "expected_over_observed": float(p.sum() / y.sum())}
            rows.append(row)
        print(f"{label} {tag} {target.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    result = {"label": label, "tag": tag, "home": str(home), "budget_seconds": budget,
              "families": families or "all", "rows": rows,
              "calibration_windows": list(getattr(ml.calibration, "WINDOWS", ()))}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{label}.{tag}.json").write_text(json.dumps(result, indent=1))
    return result


PUBLISHED_METRICS = ("pr_auc", "roc_auc", "log_loss", "brier", "expected_over_observed",
                     "predicted_over_realised_total")


def published(home: Path, label: str) -> dict:
    """What a home's run published: each classification and amount target's champion (family, feature set, the
    calibration window it chose) and the validation figures logged with it."""
    os.environ["SHOPCAST_HOME"] = str(home)
    from dagster_project.settings import load_settings
    from ml.registry import CHAMPION, Store, version_by_alias
    from ml.targets import TARGETS

    paths = load_settings().paths
    store = Store(paths.mlflow_tracking_uri, paths.mlflow_artifacts)
    client = store.activate()
    rows = []
    for target in TARGETS.values():
        champion = version_by_alias(store, target.name, CHAMPION)
        if champion is None:
            rows.append({"target": target.name, "family": "-", "note": "nothing published"})
            continue
        run = client.get_run(champion.run_id)
        rows.append({"target": target.name, "version": champion.version,
                     "family": f"{run.data.tags.get('family')} ({run.data.tags.get('feature_set')})",
                     "window_cutoffs": run.data.params.get("calibration_window_cutoffs"),
                     "validation_as_of": run.data.params.get("calibration_as_of_date"),
                     **{k: run.data.metrics[k] for k in PUBLISHED_METRICS if k in run.data.metrics}})
    result = {"label": label, "tag": "published", "home": str(home), "rows": rows}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{label}.published.json").write_text(json.dumps(result, indent=1))
    return result


def published_table(table: pd.DataFrame) -> pd.DataFrame | None:
    table = table[table.code == "published"]
    if table.empty:
        return None
    shown = ["data", "target", "family", "window_cutoffs", "pr_auc", "roc_auc", "log_loss", "brier",
             "expected_over_observed", "predicted_over_realised_total", "note"]
    windows = pd.to_numeric(table.get("window_cutoffs"), errors="coerce")
    table = table.assign(window_cutoffs=[f"newest {w:.0f}" if pd.notna(w) else "" for w in windows],
                         note=table.get("note", pd.Series(index=table.index)).fillna(""))
    return table[[c for c in shown if c in table.columns]].sort_values(["data", "target"])


def report() -> str:
    frames = []
    for path in sorted(RUNS.glob("*.json")):
        result = json.loads(path.read_text())
        frames.append(pd.DataFrame(result["rows"]).assign(data=result["label"], code=result["tag"]))
    table = pd.concat(frames, ignore_index=True)
    best = table[table.get("best", pd.Series(False, index=table.index)).fillna(False).astype(bool)
                 & table.code.isin(["before", "after"])]
    shown = ["data", "target", "code", "family", "positives", "pr_auc", "roc_auc", "log_loss", "brier",
             "expected_over_observed", "predicted_over_realised_total", "quality_problems"]
    best = best[[c for c in shown if c in best.columns]].sort_values(["data", "target", "code"], ascending=[
        True, True, False])
    lines = ["# Calibration: do the published probabilities add up?", "",
             ("The best candidate of each target on its validation cutoff (benchmarks/calibration.py; `before` is "
             "the code before calibration, `after` with it), on the same training sample of each home."), "",
             best.to_markdown(index=False, floatfmt=".3f"), "",
             "Every candidate: benchmarks/results/calibration/*.json."]
    lines += section("The calibration window: every candidate", window_comparison(table), (
        "Each candidate's expected over observed positives on the validation cutoff (revenue: predicted over "
        "realised total), its calibrator learnt from the newest training cutoff alone (`newest`), from the four "
        "newest (`window28`: the training cutoffs of 28 days up to it) or from as many as a backtest over the "
        "training cutoffs chose among 1, 2 and 4 (`chosen`, the shipped code); same training sample, families and "
        "budget. `in_band`: the candidates within 0.9-1.1; `mean_abs_log`: the mean of |log ratio|."))
    lines += section("Published: what `make demo DATA=...` runs published", published_table(table), (
        "Each target's champion in a home's registry after a `make demo` run with every default (all families, the "
        "default budget), with the validation figures its training logged (`--published`): the probabilities and "
        "totals a marketer sums. `window_cutoffs`: the newest training cutoffs its calibrator learnt from, as the "
        "backtest over them chose."))
    text = "\n".join(lines) + "\n"
    (RESULTS / "calibration.md").write_text(text)
    return text


def section(title: str, frame: pd.DataFrame | None, text: str) -> list[str]:
    """A report section's lines: its title, what it shows and the table; none where nothing was measured."""
    if frame is None:
        return []
    return ["", f"## {title}", "", text, "", frame.to_markdown(index=False, floatfmt=".3f")]


def window_comparison(table: pd.DataFrame) -> pd.DataFrame | None:
    table = table[table.code.isin(["newest", "window28", "chosen"])]
    if table.empty:
        return None
    ratio = table.expected_over_observed.fillna(table.get("predicted_over_realised_total"))
    table = table.assign(ratio=ratio, abs_log=np.abs(np.log(ratio)), in_band=ratio.between(0.9, 1.1))
    return (table.groupby(["data", "target", "code"])
            .agg(candidates=("ratio", "size"), best_ratio=("ratio", lambda r: r[table.loc[r.index, "best"]
                                                                              .fillna(False).astype(bool)].mean()),
                 min_ratio=("ratio", "min"), max_ratio=("ratio", "max"), in_band=("in_band", "sum"),
                 mean_abs_log=("abs_log", "mean"), log_loss=("log_loss", "mean"))
            .reset_index())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--tag", default="after")
    parser.add_argument("--budget", type=float, default=120)
    parser.add_argument("--families", default=None, help="comma-separated (default: all)")
    parser.add_argument("--calibration-windows", default=None, help="comma-separated cutoff counts, e.g. 1 or 1,2,4")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--published", action="store_true", help="read what the home's run published")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.report:
        print(report())
        return
    if args.published:
        print(json.dumps(published(args.home.resolve(), args.label), indent=1))
        return
    measure(args.home.resolve(), args.label, args.tag, args.budget,
            args.families.split(",") if args.families else None,
            tuple(int(w) for w in args.calibration_windows.split(",")) if args.calibration_windows else None)


if __name__ == "__main__":
    main()
