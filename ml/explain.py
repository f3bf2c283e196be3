"""Why a user got a score: per-row reason codes and global importance, for every model family alike.

A feature's effect on a user's score is the change when that feature alone is set back to a reference user (the
population's median): f(x) - f(x with x_j = median_j). For a linear model on the logit this is the familiar
coefficient x deviation (through the link); for trees and networks it is the exact one-feature counterfactual. The
reason codes are the three features that push the score up the most, with the user's value; features that push it
down are not reasons. Global importance is the mean absolute effect over a sample.

Cost: one prediction pass per feature over the scored rows (columns set in place, no copies of the frame).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.evaluate import predict_scores

TOP_REASONS = 3


def effects(model, X: pd.DataFrame, regression: bool, reference: pd.Series | None = None) -> pd.DataFrame:
    """Per row and feature: the score minus the score with that feature at the reference value."""
    X = X.copy()
    reference = X.median() if reference is None else reference
    base = predict_scores(model, X, regression)
    out = np.zeros((len(X), X.shape[1]))
    for j, column in enumerate(X.columns):
        saved = X[column].to_numpy(copy=True)
        X[column] = reference[column]
        out[:, j] = base - predict_scores(model, X, regression)
        X[column] = saved
    return pd.DataFrame(out, index=X.index, columns=X.columns)


def reason_codes(model, X: pd.DataFrame, regression: bool, top: int = TOP_REASONS) -> pd.DataFrame:
    """reason_k (feature name), reason_k_value (the user's value) and reason_k_effect (how much it raises the
    score), k = 1 .. top, strongest first; NULL where fewer features raise the score."""
    contributions = effects(model, X, regression)
    # rounded, so that effects equal but for floating-point noise (which varies with the batch's size in BLAS)
    # rank the same way in every batch: a range of dates gets the reasons the days one by one would
    values = np.round(contributions.to_numpy(), 9)
    order = np.argsort(-values, axis=1, kind="stable")[:, :min(top, X.shape[1])]
    names = np.asarray(X.columns)
    rows = np.arange(len(X))[:, None]
    strongest = values[rows, order]
    raw = X.to_numpy(dtype=float)[rows, order]
    out = {}
    for k in range(top):
        if k >= order.shape[1]:  # fewer features than reasons
            out[f"reason_{k + 1}"], out[f"reason_{k + 1}_value"], out[f"reason_{k + 1}_effect"] = None, np.nan, np.nan
            continue
        pushes_up = strongest[:, k] > 0
        out[f"reason_{k + 1}"] = np.where(pushes_up, names[order[:, k]], None)
        out[f"reason_{k + 1}_value"] = np.where(pushes_up, raw[:, k], np.nan)
        out[f"reason_{k + 1}_effect"] = np.where(pushes_up, strongest[:, k], np.nan)
    return pd.DataFrame(out, index=X.index)


def global_importance(model, X: pd.DataFrame, regression: bool, max_rows: int = 2000, seed: int = 0) -> pd.Series:
    """Mean absolute effect per feature on a sample of X, largest first."""
    sample = X.sample(n=min(max_rows, len(X)), random_state=seed) if len(X) > max_rows else X
    return effects(model, sample, regression).abs().mean().sort_values(ascending=False)
