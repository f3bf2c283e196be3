"""Probabilities that add up: calibration fitted after the model, on a cutoff it did not train on, and its metrics.

Marketers sum published probabilities ("how many buyers does this audience hold?"), so a candidate's probability
must match observed rates, not only rank well. Class weights (kept where they help ranking) and the shift between
the training cutoffs and today make raw probabilities too high or too low; a calibrator maps them back.

How: the fitted pipeline is frozen (``FrozenEstimator``) and scikit-learn's ``CalibratedClassifierCV`` fits a
calibrator on its scores over the calibration cutoff: the newest closed cutoff before the validation one, which the
pipeline was not fitted on (ml/train.py). Sigmoid (Platt) or isotonic, whichever has the lower log loss out of fold
over that cutoff's users (5 stratified folds; the validation cutoff stays untouched for the gate's figures);
isotonic only with enough positives to fit a step function without overfitting. The calibrated model is what
MLflow stores and what scoring, reason codes and the gate use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logit
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict

METHODS = ("sigmoid", "isotonic")
MIN_ISOTONIC_POSITIVES = 200  # below this an isotonic step function follows noise (scikit-learn's guide: ~1000 rows)
FOLDS = 5
CLIP = 1e-7  # probabilities are clipped to [CLIP, 1 - CLIP] for log loss and the logit


@dataclass(frozen=True)
class CalibrationChoice:
    method: str
    log_loss: dict[str, float]  # out-of-fold log loss over the calibration cutoff, per method tried (and "none")
    rows: int
    positives: int
    as_of: str = ""

    def as_params(self) -> dict:
        return {"calibration_method": self.method, "calibration_rows": self.rows,
                "calibration_positives": self.positives, "calibration_as_of_date": self.as_of}


def calibrate(model, X: pd.DataFrame, y: np.ndarray, *, as_of: str = "",
              min_isotonic_positives: int = MIN_ISOTONIC_POSITIVES, seed: int = 0
              ) -> tuple[CalibratedClassifierCV, CalibrationChoice]:
    """``model`` (fitted, frozen) with a calibrator fitted on (X, y), the method chosen by out-of-fold log loss."""
    y = np.asarray(y, dtype=int)
    positives = int(y.sum())
    if positives < 2 or positives > len(y) - 2:
        raise ValueError(f"calibration needs both outcomes in the calibration cutoff {as_of or ''}: "
                         f"{positives} positive of {len(y)}")
    methods = [m for m in METHODS if m != "isotonic" or min(positives, len(y) - positives) >= min_isotonic_positives]
    folds = StratifiedKFold(n_splits=min(FOLDS, positives, len(y) - positives), shuffle=True, random_state=seed)
    losses = {"none": _log_loss(y, model.predict_proba(X)[:, 1])}
    for method in methods:
        out_of_fold = cross_val_predict(CalibratedClassifierCV(FrozenEstimator(model), method=method), X, y,
                                        cv=folds, method="predict_proba")[:, 1]
        losses[method] = _log_loss(y, out_of_fold)
    chosen = min(methods, key=lambda m: losses[m])
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=chosen).fit(X, y)
    return calibrated, CalibrationChoice(chosen, losses, len(y), positives, as_of)


class ScaledRegressor(RegressorMixin, BaseEstimator):
    """A fitted amount model whose predictions are scaled so that their total over the calibration cutoff equals
    what those users then spent: an amount summed over an audience must add up like a probability."""

    def __init__(self, model=None, scale: float = 1.0):
        self.model = model
        self.scale = scale

    def fit(self, X, y):
        raise TypeError("ScaledRegressor wraps a fitted model: build it with scale_total()")

    def predict(self, X) -> np.ndarray:
        return self.model.predict(X) * self.scale

    @property
    def feature_names_in_(self):
        return self.model.feature_names_in_


def scale_total(model, X: pd.DataFrame, y: np.ndarray, *, as_of: str = "") -> tuple[ScaledRegressor, float]:
    """``model`` scaled so that its predicted total over (X, y) is the realised total; (the model, the scale)."""
    predicted, realised = float(np.sum(model.predict(X))), float(np.sum(y))
    if not (predicted > 0 and realised > 0 and np.isfinite(predicted)):
        raise ValueError(f"cannot scale an amount model's total on the calibration cutoff {as_of}: predicted "
                         f"{predicted}, realised {realised}")
    scale = realised / predicted
    return ScaledRegressor(model, scale), scale


def uncalibrated(model):
    """The fitted pipeline inside a calibrated model (what a backtest refits); any other model as it is."""
    if isinstance(model, CalibratedClassifierCV) and isinstance(model.estimator, FrozenEstimator):
        return model.estimator.estimator
    if isinstance(model, ScaledRegressor):
        return model.model
    return model


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(log_loss(y, np.clip(p, CLIP, 1 - CLIP), labels=[0, 1]))


def calibration_metrics(y, p, bins: int = 10) -> dict[str, float]:
    """How well probabilities add up: expected over observed positives (1 = the sum is right), the expected
    calibration error over ``bins`` equal-width bins (the mean gap between predicted and observed, weighted by
    users), and the calibration slope and intercept (a logistic regression of the outcome on the logit of the
    probability: 1 and 0 when calibrated; a slope below 1 means too extreme, above 1 too timid)."""
    y, p = np.asarray(y, dtype=int), np.clip(np.asarray(p, dtype=float), CLIP, 1 - CLIP)
    observed = y.sum()
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any()) / len(y)
    slope, intercept = float("nan"), float("nan")
    if 0 < observed < len(y):
        fitted = LogisticRegression(C=np.inf, max_iter=1000).fit(logit(p).reshape(-1, 1), y)
        slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    return {"expected_over_observed": float(p.sum() / observed) if observed else float("inf"),
            "expected_positives": float(p.sum()), "ece": float(ece),
            "calibration_slope": slope, "calibration_intercept": intercept}


def reliability_table(y, p, bins: int = 10) -> pd.DataFrame:
    """Per decile of the probability (1 = highest): users, mean predicted probability, observed rate."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    frame["decile"] = np.ceil(frame.p.rank(method="first", ascending=False) * bins / len(frame)).clip(1, bins)
    table = frame.groupby("decile").agg(users=("y", "size"), mean_predicted=("p", "mean"),
                                        observed_rate=("y", "mean")).reset_index()
    table["decile"] = table.decile.astype(int)
    return table
