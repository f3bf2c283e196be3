"""Metrics and plots for a binary propensity model."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display: plots are files logged to MLflow
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.inspection import permutation_importance
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
    }


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
        importance = permutation_importance(model, X.iloc[rows], y[rows], scoring="average_precision",
                                            n_repeats=3, random_state=seed, n_jobs=1)
        top = pd.Series(importance.importances_mean, index=X.columns).sort_values().tail(15)
        fig, ax = plt.subplots(figsize=(6, 5))
        top.plot.barh(ax=ax)
        ax.set(xlabel="drop in PR-AUC when shuffled", title="Permutation importance (top 15)")
        fig.tight_layout()
        figures["permutation_importance.png"] = fig
    return figures
