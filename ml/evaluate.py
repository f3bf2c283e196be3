"""Metrics and plots: binary propensity models (purchase, churn) and amount models (revenue)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display: plots are files logged to MLflow
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from ml.sequences import SEQUENCE_GROUP, is_token


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut that maximises F1; chosen on tuning data, never on the validation cutoff."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def top_decile(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(lift, capture rate) of the 10 % highest scores: their positive rate over the base rate, and the
    share of all positives they hold."""
    n_top = max(1, math.ceil(len(p) / 10))
    top = np.argsort(-p, kind="stable")[:n_top]
    base = y.mean()
    if base == 0:
        return float("nan"), float("nan")
    return float(y[top].mean() / base), float(y[top].sum() / y.sum())


def classification_metrics(y, p, threshold: float) -> dict[str, float]:
    """Ranking (ROC-AUC, PR-AUC, lift), thresholded (precision, recall, F1 at ``threshold``) and probability
    (log loss, Brier, and whether they add up: ml.calibration.calibration_metrics) metrics."""
    from ml.calibration import calibration_metrics

    y, p = np.asarray(y, dtype=int), np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    predicted = (p >= threshold).astype(int)
    lift, capture = top_decile(y, p)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "threshold": float(threshold),
        "lift_top_decile": lift,
        "capture_top_decile": capture,
        "base_rate": float(y.mean()),
        "rows": len(y),
        "positives": int(y.sum()),
        **calibration_metrics(y, p),
    }


def normalized_gini(y, predicted) -> float:
    """How well the prediction orders the actual amounts, from 0 (random) to 1 (the actual order itself):
    the Gini of the prediction's cumulative-capture curve over the Gini of the perfect one."""
    y, predicted = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)

    def gini(order_by):
        ordered = y[np.argsort(-order_by, kind="stable")]
        captured = np.cumsum(ordered) / ordered.sum()
        return captured.mean() - (len(y) + 1) / (2 * len(y))

    if y.sum() <= 0:
        return float("nan")
    return float(gini(predicted) / gini(y))


def decile_table(y, predicted) -> pd.DataFrame:
    """Per decile of the prediction (1 = highest): users, mean predicted and mean actual amount."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(predicted, dtype=float)})
    frame["decile"] = np.ceil(frame.p.rank(method="first", ascending=False) * 10 / len(frame)).clip(1, 10)
    return frame.groupby("decile").agg(users=("y", "size"), mean_predicted=("p", "mean"),
                                       mean_actual=("y", "mean")).reset_index()


def regression_metrics(y, predicted) -> dict[str, float]:
    """Normalized Gini (ranking), Spearman, MAE, RMSE and decile calibration (the share of the actual total that
    the deciles' mean predictions miss), plus the top decile's share of the actual amount."""
    from scipy.stats import spearmanr

    y, predicted = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)
    deciles = decile_table(y, predicted)
    total = max(float(y.sum()), 1e-12)
    calibration_error = float((deciles.users * (deciles.mean_predicted - deciles.mean_actual).abs()).sum() / total)
    return {
        "normalized_gini": normalized_gini(y, predicted),
        "spearman": float(spearmanr(y, predicted).statistic),
        "mae": float(np.mean(np.abs(y - predicted))),
        "rmse": float(np.sqrt(np.mean((y - predicted) ** 2))),
        "decile_calibration_error": calibration_error,
        "capture_top_decile": float(deciles.users.iloc[0] * deciles.mean_actual.iloc[0] / total),
        "mean_actual": float(y.mean()),
        "mean_predicted": float(predicted.mean()),
        # the forecast summed over everyone, over what they spent: 1 when the total adds up
        "predicted_over_realised_total": float(predicted.sum() / y.sum()) if y.sum() > 0 else float("nan"),
        "base_rate": float((y > 0).mean()),
        "rows": len(y),
        "positives": int((y > 0).sum()),
    }


def regression_plots(y, predicted) -> dict[str, plt.Figure]:
    """Decile calibration (mean predicted vs actual per decile) and cumulative capture of the actual amount."""
    y, predicted = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)
    figures = {}
    deciles = decile_table(y, predicted)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(deciles.decile - 0.2, deciles.mean_predicted, width=0.4, label="predicted")
    ax.bar(deciles.decile + 0.2, deciles.mean_actual, width=0.4, label="actual")
    ax.set(xlabel="decile of the prediction (1 = highest)", ylabel="mean amount", title="Decile calibration")
    ax.legend()
    figures["decile_calibration.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, order_by in (("model", predicted), ("perfect", y)):
        ordered = y[np.argsort(-order_by, kind="stable")]
        ax.plot(np.linspace(0, 1, len(y) + 1), np.concatenate([[0], np.cumsum(ordered) / max(y.sum(), 1e-12)]),
                label=name)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="share of users (highest predictions first)", ylabel="share of the actual amount",
           title=f"Capture (normalized Gini {normalized_gini(y, predicted):.3f})")
    ax.legend()
    figures["cumulative_capture.png"] = fig
    return figures


def plots(y, p, threshold: float, model=None, X: pd.DataFrame | None = None, max_rows: int = 4000,
          seed: int = 0) -> dict[str, plt.Figure]:
    """ROC, PR, calibration, cumulative gains, confusion matrix and (given the model) permutation importance."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    figures = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    figures["roc.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    precision, recall, _ = precision_recall_curve(y, p)
    ax.plot(recall, precision, label=f"AP {average_precision_score(y, p):.3f}")
    ax.axhline(y.mean(), ls="--", color="grey", label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    figures["precision_recall.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    ax.plot(predicted, observed, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (deciles)")
    figures["calibration.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    order = np.argsort(-p, kind="stable")
    gains = np.concatenate([[0], np.cumsum(y[order]) / max(y.sum(), 1)])
    share = np.linspace(0, 1, len(gains))
    ax.plot(share, gains, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="share of users contacted (highest scores first)", ylabel="share of buyers reached",
           title="Cumulative gains")
    ax.legend()
    figures["cumulative_gains.png"] = fig

    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix at {threshold:.3f}")
    figures["confusion_matrix.png"] = fig

    if model is not None and X is not None:
        rows = np.random.default_rng(seed).choice(len(X), size=min(max_rows, len(X)), replace=False)
        top = permutation_drops(model, X.iloc[rows].reset_index(drop=True), y[rows], seed=seed).sort_values().tail(15)
        fig, ax = plt.subplots(figsize=(6, 5))
        top.plot.barh(ax=ax)
        ax.set(xlabel="drop in PR-AUC when shuffled", title="Permutation importance (top 15)")
        fig.tight_layout()
        figures["permutation_importance.png"] = fig
    return figures


def permutation_drops(model, X: pd.DataFrame, y, n_repeats: int = 3, seed: int = 0,
                      rows_per_call: int = 50_000) -> pd.Series:
    """Mean drop in PR-AUC when one column's values are shuffled across the rows, per column; a sequence model's
    event sequence (its token columns) is shuffled as one, as a whole sequence per row: shuffling one position's
    token alone would measure nothing a user could act on, and cost a forward pass per token column.

    The shuffled copies are stacked and predicted together, up to ``rows_per_call`` rows a call: a model's
    per-call cost (its pipeline's, the calibrator's) was most of this on small validation sets (150 calls for 50
    features: a third of a demo target's training). Each row's score depends on that row alone: the same result.
    Not for a sequence model: its cost is the GRU's pass over the tokens, which it keeps for the tokens it last saw
    (ml/sequences.py), and only the sequence's own shuffle changes them: stacked, every copy would pass again."""
    groups = {c: [c] for c in X.columns if not is_token(c)}
    tokens = [c for c in X.columns if is_token(c)]
    if tokens:
        groups[SEQUENCE_GROUP] = tokens
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    base = average_precision_score(y, model.predict_proba(X)[:, 1])
    copies = 1 if tokens else max(1, rows_per_call // max(len(X), 1))  # shuffled copies per call
    shuffles = [(name, columns) for name, columns in groups.items() for _ in range(n_repeats)]
    scores: dict[str, list[float]] = {name: [] for name in groups}
    for start in range(0, len(shuffles), copies):
        stacked = []
        for _, columns in shuffles[start:start + copies]:
            shuffled = X.copy()
            shuffled[columns] = X[columns].to_numpy()[rng.permutation(len(X))]
            stacked.append(shuffled)
        predicted = model.predict_proba(pd.concat(stacked, ignore_index=True))[:, 1].reshape(len(stacked), len(X))
        for (name, _), p in zip(shuffles[start:start + copies], predicted, strict=True):
            scores[name].append(average_precision_score(y, p))
    return pd.Series({name: base - float(np.mean(values)) for name, values in scores.items()})


def predict_scores(model, X: pd.DataFrame, regression: bool) -> np.ndarray:
    """What a model publishes: an amount for regression, the positive class's probability otherwise."""
    return model.predict(X) if regression else model.predict_proba(X)[:, 1]


def target_metrics(regression: bool, y, scores, threshold: float = 0.5) -> dict[str, float]:
    return regression_metrics(y, scores) if regression else classification_metrics(y, scores, threshold)


def recommendation_plots(results: pd.DataFrame, candidate: str | None = None, k: int = 10) -> dict[str, plt.Figure]:
    """The recommenders' backtest (one row per candidate and cutoff, ml.recommendations.backtest): for one
    candidate, Recall@k and new-item Recall@k per cutoff; for all, the mean of each per candidate, best first."""
    recall, new_recall = f"recall_at_{k}", f"new_item_recall_at_{k}"
    figures = {}
    if candidate is not None:
        rows = results[results.candidate == candidate].sort_values("cutoff")
        fig, ax = plt.subplots(figsize=(5, 4))
        labels = rows.cutoff.astype(str).to_numpy()
        ax.plot(labels, rows[recall], marker="o", label=f"Recall@{k}")
        ax.plot(labels, rows[new_recall], marker="o", label=f"new-item Recall@{k}")
        ax.set(xlabel="cutoff", ylabel="recall", ylim=(0, 1), title=f"{candidate} per cutoff")
        ax.legend()
        figures["folds.png"] = fig
        return figures
    means = results.groupby("candidate")[[recall, new_recall]].mean().sort_values(recall)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(means) + 1.5))
    positions = np.arange(len(means))
    ax.barh(positions + 0.2, means[recall], height=0.4, label=f"Recall@{k}")
    ax.barh(positions - 0.2, means[new_recall], height=0.4, label=f"new-item Recall@{k}")
    ax.set_yticks(positions, means.index)
    ax.set(xlabel="mean over the cutoffs", title="Candidates on the backtest")
    ax.legend()
    fig.tight_layout()
    figures["candidates.png"] = fig
    return figures
