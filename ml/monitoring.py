"""Monitoring: realised performance of past predictions, and drift between training data and a scoring date.

Plain functions over pandas frames; the Dagster assets (dagster_project/defs/monitoring.py) read and write the
warehouse around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ml.evaluate import regression_metrics, top_decile
from ml.registry import CHAMPION, version_by_alias

PSI_BINS = 10
PSI_EPSILON = 1e-4  # a bin empty on one side counts as this share, so that PSI stays finite
SCORE_FEATURE = "__score__"  # the row of monitoring.feature_drift that holds the score distribution's PSI


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: over deciles of the predicted probability, the user-weighted mean of
    |mean predicted - observed rate|."""
    frame = pd.DataFrame({"y": y, "p": p})
    frame["decile"] = np.ceil(frame.p.rank(method="first", ascending=False) * bins / len(frame)).clip(1, bins)
    per = frame.groupby("decile").agg(n=("y", "size"), p=("p", "mean"), y=("y", "mean"))
    return float((per.n * (per.p - per.y).abs()).sum() / per.n.sum())


def realised_classification(y, p) -> dict[str, float]:
    """What the scores of one date turned out to be worth once the label window closed."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    both = 0 < y.sum() < len(y)
    lift, capture = top_decile(y, p) if y.sum() > 0 else (float("nan"), float("nan"))
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "lift_top_decile": lift,
        "capture_top_decile": capture,
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
        "calibration_error": calibration_error(y, p),
    }


def realised_regression(y, predicted) -> dict[str, float]:
    m = regression_metrics(y, predicted)
    return {"normalized_gini": m["normalized_gini"], "spearman": m["spearman"], "mae": m["mae"],
            "rmse": m["rmse"], "capture_top_decile": m["capture_top_decile"],
            "mean_predicted": m["mean_predicted"], "observed_rate": m["mean_actual"],
            "calibration_error": m["decile_calibration_error"]}


PERFORMANCE_KEYS = ["target", "as_of_date", "model_name", "model_version"]


def realised_performance(outcomes: pd.DataFrame, regression_targets: set[str]) -> pd.DataFrame:
    """One row per (target, as_of_date, model_name, model_version) of ``outcomes`` (columns target, as_of_date,
    model_name, model_version, score, outcome): users, positives and the realised metrics."""
    rows = []
    for key, group in outcomes.groupby(PERFORMANCE_KEYS, sort=True):
        y, p = group["outcome"].to_numpy(dtype=float), group["score"].to_numpy(dtype=float)
        metrics = (realised_regression(y, p) if key[0] in regression_targets else realised_classification(y, p))
        rows.append({**dict(zip(PERFORMANCE_KEYS, key)), "users": len(group), "positives": int((y > 0).sum()),
                     **metrics,
                     # what the scores promised in total over what happened (buyers, or money): 1 when they add up
                     "expected_over_observed": float(p.sum() / y.sum()) if y.sum() > 0 else float("nan")})
    columns = [*PERFORMANCE_KEYS, "users", "positives", "roc_auc", "pr_auc", "lift_top_decile",
               "capture_top_decile", "normalized_gini", "spearman", "mae", "rmse", "mean_predicted",
               "observed_rate", "calibration_error", "expected_over_observed"]
    # typed even when no window has closed yet, so the table written from it has its real column types
    dtypes = {"target": "string", "as_of_date": "datetime64[ns]", "model_name": "string", "model_version": "string",
              "users": "int64", "positives": "int64", **{c: "float64" for c in columns[6:]}}
    return pd.DataFrame(rows, columns=columns).astype(dtypes)


def psi(reference, current, bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference``: sum over bins of
    (cur - ref) * ln(cur / ref), with bins at the reference's quantiles (distinct edges only, so a feature with
    few values gets a bin per value) and missing values as a bin of their own."""
    reference = pd.Series(reference, dtype=float)
    current = pd.Series(current, dtype=float)
    if reference.empty or current.empty:
        raise ValueError("PSI needs rows on both sides")
    present = reference.dropna()
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.array([])

    def shares(values: pd.Series) -> np.ndarray:
        binned = np.searchsorted(edges, values.dropna().to_numpy(), side="right")
        counts = np.bincount(binned, minlength=len(edges) + 1).astype(float)
        counts = np.append(counts, values.isna().sum())
        return np.maximum(counts / len(values), PSI_EPSILON)

    ref, cur = shares(reference), shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class DriftLimits:
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    null_rate_jump: float = 0.1  # an absolute rise in a feature's share of missing values
    # Features whose distribution moves by construction, not because behaviour changed: tenure grows with the
    # calendar, and the BG/NBD outputs come from a model refitted on every date (a young history gives P(alive)
    # = 1 for nearly everyone one day and not the next). Their PSI is reported with status "info" and never fails
    # the check or asks for a retrain; the score's PSI still shows whether they moved the model's output.
    informational: tuple[str, ...] = ("tenure_days", "clv_*")

    def status(self, value: float) -> str:
        return "fail" if value > self.psi_fail else "warn" if value > self.psi_warn else "ok"

    def is_informational(self, feature: str) -> bool:
        return any(fnmatchcase(feature, pattern) for pattern in self.informational)


def drift_table(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], limits: DriftLimits,
                reference_scores=None, current_scores=None) -> pd.DataFrame:
    """Per model feature (and the score, when given): PSI, null rates on both sides, and a status: ok, warn or
    fail by PSI (info for the limits' informational features), fail when the feature is missing from the scoring
    data, warn when its null rate jumped."""
    rows = []
    for feature in features:
        if feature not in current.columns:
            rows.append({"feature": feature, "psi": float("nan"), "null_rate_reference": float(
                reference[feature].isna().mean()), "null_rate_current": float("nan"), "status": "fail",
                         "problem": "missing from the scoring data"})
            continue
        value = psi(reference[feature], current[feature])
        null_ref, null_cur = float(reference[feature].isna().mean()), float(current[feature].isna().mean())
        status, problem = limits.status(value), ""
        if status != "ok":
            problem = f"PSI {value:.3f}"
        if limits.is_informational(feature):
            status, problem = "info", (f"PSI {value:.3f}, informational" if status != "ok" else "")
        if null_cur - null_ref > limits.null_rate_jump:
            status = "fail" if status == "fail" else "warn"
            problem = "; ".join(p for p in (problem, f"null rate {null_ref:.2f} -> {null_cur:.2f}") if p)
        rows.append({"feature": feature, "psi": value, "null_rate_reference": null_ref,
                     "null_rate_current": null_cur, "status": status, "problem": problem})
    if reference_scores is not None and current_scores is not None:
        value = psi(reference_scores, current_scores)
        rows.append({"feature": SCORE_FEATURE, "psi": value, "null_rate_reference": 0.0, "null_rate_current": 0.0,
                     "status": limits.status(value), "problem": "" if limits.status(value) == "ok"
                     else f"score PSI {value:.3f}"})
    table = pd.DataFrame(rows)
    table["reference_rows"], table["current_rows"] = len(reference), len(current)
    return table


def _champion_recent(table: pd.DataFrame, store, target, window_days: int):
    """(the target's champion entry or None, its rows of ``table`` over its last ``window_days`` closed dates)."""
    entry = version_by_alias(store, target.name, CHAMPION)
    rows = table[(table.target == target.name) & (table.model_version == (entry.version if entry else None))]
    if rows.empty:
        return entry, rows
    dates = pd.to_datetime(rows.as_of_date)
    return entry, rows[dates > dates.max() - pd.Timedelta(days=window_days)]


def performance_drops(table: pd.DataFrame, store, targets, drop: float, window_days: int = 7) -> dict[str, str]:
    """Of ``targets`` (ml.targets.Target), those whose champion's realised primary metric, averaged over its last
    ``window_days`` closed dates, is more than ``drop`` below the figure it was promoted on (a registry read)."""
    signals = {}
    for target in targets:
        entry, recent = _champion_recent(table, store, target, window_days)
        promised = entry.tags.get(target.primary_metric) if entry else None
        if promised is None or recent.empty:
            continue
        realised = float(recent[target.primary_metric].mean())
        if realised < float(promised) - drop:
            signals[target.name] = (f"realised {target.primary_metric} {realised:.3f} over {len(recent)} closed "
                                    f"date(s) is below the validation figure {float(promised):.3f} by more than "
                                    f"{drop}")
    return signals


def calibration_drifts(table: pd.DataFrame, store, targets, low: float, high: float,
                       window_days: int = 7) -> dict[str, str]:
    """Of ``targets``, those whose champion's scores over its last ``window_days`` closed dates, summed, are
    outside [low, high] times what then happened (buyers, churners, money): the probabilities stopped adding up."""
    signals = {}
    for target in targets:
        _, recent = _champion_recent(table, store, target, window_days)
        if recent.empty:
            continue
        observed = float((recent.observed_rate * recent.users).sum())
        expected = float((recent.mean_predicted * recent.users).sum())
        if observed <= 0:
            continue
        ratio = expected / observed
        if not low <= ratio <= high:
            signals[target.name] = (f"realised expected/observed {ratio:.2f} over {len(recent)} closed date(s) is "
                                    f"outside [{low}, {high}]: the published scores no longer add up")
    return signals


def drift_summary(latest: pd.DataFrame) -> pd.DataFrame:
    """Per target: the judged features' largest PSI and their warn/fail counts, apart from the informational
    features' (shown, never judged), and the score's PSI."""
    if not len(latest):
        return pd.DataFrame()
    rows = latest.assign(judged=latest.status != "info")

    def largest(frame: pd.DataFrame) -> float:
        return float(frame.psi.max()) if frame.psi.notna().any() else float("nan")

    return pd.DataFrame([{
        "target": target, "judged_features": int(group.judged.sum()),
        "max_psi_judged": largest(group[group.judged]),
        "warn": int((group.status == "warn").sum()), "fail": int((group.status == "fail").sum()),
        "score_psi": largest(group[group.feature == SCORE_FEATURE]),
        "informational_features": int((~group.judged).sum()),
        "max_psi_informational (not judged)": largest(group[~group.judged]),
    } for target, group in rows.groupby("target")])
