"""Probabilities that add up: calibration fitted on predictions for users the model did not train on.

Marketers sum published probabilities ("how many buyers does this audience hold?"), so a candidate's probability
must match observed rates, not only rank well. Class weights (kept where they help ranking) and the shift between
the training cutoffs and today make raw probabilities too high or too low; a calibrator maps them back.

How (ml/train.py): the published model is the chosen configuration fitted on every training cutoff. Its
calibrator is fitted by cross-fitting: the same configuration is fitted three more times, each time without a third
of the users (all their cutoffs), and predicts the users left out; the calibrator learns from those out-of-fold
predictions on the newest training cutoffs (one, two or four of them, chosen per candidate by a backtest over the
training cutoffs: ``choose_window``), which no model that predicted them has seen. Platt's
sigmoid (a logistic regression on the logit of the probability) or isotonic regression, whichever has the lower log
loss out of fold over those users (5 stratified folds), isotonic only with enough of each class. ``CalibratedModel`` is the
published model behind that calibrator: what MLflow stores and scoring, reason codes and the gate use. The
validation cutoff, which none of these fits saw, measures the published probabilities, and the quality floor
refuses a candidate whose sum there is outside the expected/observed band.

Why not calibrate on the cutoff before validation with a model fitted on the older ones only: the published model
would then lose the newest training cutoff (up to 0.25 of PR-AUC lost on short histories, measured), and a
calibrator learned from a fit on fewer, older cutoffs did not carry over to the refit on all of them (summed
probabilities 0.35 of the buyers; a ranking inverted where the older fit had no signal).

The logit of the clipped probability, not a raw decision function, is the calibrator's input: the same for every
family, and bounded (a logistic regression's decision values reached 1e4 on rows whose features left their
training range, and Platt's fit on them went flat and inverted the ranking).

Amount models are scaled instead (``ScaledRegressor``): their out-of-fold predicted total over the newest training
cutoffs (the window chosen the same way) is set to what those users then spent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ml.evaluate import decile_table

METHODS = ("sigmoid", "isotonic")
MIN_ISOTONIC_POSITIVES = 200  # below this an isotonic step function follows noise (scikit-learn's guide: ~1000 rows)
FOLDS = 5
CLIP = 1e-7  # probabilities are clipped to [CLIP, 1 - CLIP] for log loss and the logit


# How many of the newest training cutoffs the calibrator learns from, chosen per candidate by a backtest over the
# training cutoffs themselves (``choose_window``): one cutoff follows a trend at once but carries that week's
# sampling noise into every published probability (demo churn: its newest cutoff's rate 0.273 against 0.237-0.257
# around it, summed to 1.108 of the churners); four smooth the noise but lag a trend by weeks (GA purchase in a
# holiday season: 1.017 -> 1.155 of the buyers). Which error is larger differs by shop and target, so it is measured.
WINDOWS = (1, 2, 4)
WINDOW_BACKTEST_STEPS = 3  # newest training cutoffs each predicted from the window before it


@dataclass(frozen=True)
class WindowChoice:
    cutoffs: int  # the newest training cutoffs the calibrator learns from
    errors: dict[int, float]  # per window tried: mean |log(expected / observed)| over the backtest steps
    steps: int


def choose_window(dates: pd.Series, predictions: np.ndarray, y: np.ndarray, *, amounts: bool = False,
                  windows: tuple[int, ...] | None = None, steps: int = WINDOW_BACKTEST_STEPS) -> WindowChoice:
    """How many of the newest cutoffs to calibrate on, chosen by what would have made the sums right before: each
    of the ``steps`` newest cutoffs in turn is calibrated on the ``w`` cutoffs before it (Platt's sigmoid; amounts:
    the total's scale) and its summed predictions compared with what happened; the window with the smallest mean
    |log(expected / observed)| wins, ties to the shorter. ``predictions`` are out-of-fold (no model predicted a user
    it was fitted on). A window that cannot be backtested on every step (too few cutoffs; a step or window without
    both outcomes) is not tried; with none left, the newest cutoff alone."""
    dates = pd.to_datetime(pd.Series(dates)).reset_index(drop=True)
    order = sorted(dates.unique())
    y, predictions = np.asarray(y, dtype=float), np.asarray(predictions, dtype=float)
    scores = logit(np.clip(predictions, CLIP, 1 - CLIP)) if not amounts else predictions
    positions = dates.map({d: i for i, d in enumerate(order)}).to_numpy()
    steps = min(steps, len(order) - 1)
    errors: dict[int, float] = {}
    for w in windows or WINDOWS:
        step_errors = []
        for judged_at in range(len(order) - steps, len(order)):
            fit_on, judged = (positions >= judged_at - w) & (positions < judged_at), positions == judged_at
            usable = y[fit_on].sum() > 0 and predictions[fit_on].sum() > 0 if amounts else \
                0 < (y[fit_on] > 0).sum() < fit_on.sum()
            if judged_at - w < 0 or not usable or not y[judged].sum() > 0:
                break
            if amounts:
                expected = predictions[judged].sum() * y[fit_on].sum() / predictions[fit_on].sum()
            else:
                platt = _calibrator("sigmoid").fit(scores[fit_on].reshape(-1, 1), y[fit_on] > 0)
                expected = platt.predict_proba(scores[judged].reshape(-1, 1))[:, 1].sum()
            step_errors.append(abs(np.log(expected / y[judged].sum())))
        if steps > 0 and len(step_errors) == steps:
            errors[w] = float(np.mean(step_errors))
    chosen = min(errors, key=lambda w: (round(errors[w], 6), w)) if errors else 1
    return WindowChoice(chosen, errors, steps if errors else 0)


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


def logit_scores(model, X) -> np.ndarray:
    """The calibrator's input: the logit of the model's clipped probability of the positive class."""
    return logit(np.clip(model.predict_proba(X)[:, 1], CLIP, 1 - CLIP))


def _calibrator(method: str):
    if method == "sigmoid":  # Platt: a logistic regression on the score, unpenalised
        return LogisticRegression(C=np.inf, max_iter=1000)
    return IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")


def _apply(calibrator, scores: np.ndarray) -> np.ndarray:
    if isinstance(calibrator, LogisticRegression):
        return calibrator.predict_proba(scores.reshape(-1, 1))[:, 1]
    return calibrator.predict(scores)


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted classifier behind a calibrator fitted on the logit of its configuration's probabilities over a
    cutoff that configuration was not fitted on: what MLflow stores and scoring, reason codes and the gate use."""

    def __init__(self, model=None, calibrator=None, method: str = ""):
        self.model = model
        self.calibrator = calibrator
        self.method = method

    def fit(self, X, y):
        raise TypeError("CalibratedModel joins a fitted model and a fitted calibrator: build it with calibrate()")

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self):
        return self.model.classes_

    @property
    def feature_names_in_(self):
        return self.model.feature_names_in_

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability of logit scores (ml/explain.py applies it after its own linear map)."""
        return np.clip(_apply(self.calibrator, scores), 0.0, 1.0)

    def predict_proba(self, X) -> np.ndarray:
        p = self.calibrated(logit_scores(self.model, X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def calibrate(published_model, probabilities: np.ndarray, y: np.ndarray, *, as_of: str = "",
              min_isotonic_positives: int = MIN_ISOTONIC_POSITIVES, seed: int = 0
              ) -> tuple[CalibratedModel, CalibrationChoice]:
    """``published_model`` behind a calibrator fitted on ``probabilities``: the predictions of (models like) it for
    rows none of them was fitted on, with their outcomes ``y``; the method chosen by out-of-fold log loss."""
    y = np.asarray(y, dtype=int)
    positives = int(y.sum())
    if positives < 2 or positives > len(y) - 2:
        raise ValueError(f"calibration needs both outcomes in the calibration rows {as_of}: "
                         f"{positives} positive of {len(y)}")
    probabilities = np.asarray(probabilities, dtype=float)
    scores = logit(np.clip(probabilities, CLIP, 1 - CLIP))
    methods = [m for m in METHODS if m != "isotonic" or min(positives, len(y) - positives) >= min_isotonic_positives]
    folds = StratifiedKFold(n_splits=min(FOLDS, positives, len(y) - positives), shuffle=True, random_state=seed)
    losses = {"none": _log_loss(y, probabilities)}
    for method in methods:
        if method == "sigmoid":
            out_of_fold = cross_val_predict(_calibrator(method), scores.reshape(-1, 1), y, cv=folds,
                                            method="predict_proba")[:, 1]
        else:
            out_of_fold = cross_val_predict(_calibrator(method), scores, y, cv=folds)
        losses[method] = _log_loss(y, out_of_fold)
    chosen = min(methods, key=lambda m: losses[m])
    calibrator = _calibrator(chosen)
    calibrator.fit(scores.reshape(-1, 1) if chosen == "sigmoid" else scores, y)
    return CalibratedModel(published_model, calibrator, chosen), CalibrationChoice(chosen, losses, len(y), positives,
                                                                                   as_of)


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


def scale_total(published_model, predictions: np.ndarray, y: np.ndarray, *,
                as_of: str = "") -> tuple[ScaledRegressor, float]:
    """``published_model`` scaled by the realised total ``y`` over the total of ``predictions`` (of models like it,
    for rows none of them was fitted on); (the model, the scale)."""
    predicted, realised = float(np.sum(predictions)), float(np.sum(y))
    if not (predicted > 0 and realised > 0 and np.isfinite(predicted)):
        raise ValueError(f"cannot scale an amount model's total on the calibration cutoff {as_of}: predicted "
                         f"{predicted}, realised {realised}")
    scale = realised / predicted
    return ScaledRegressor(published_model, scale), scale


def uncalibrated(model):
    """The fitted pipeline inside a calibrated model (what a backtest refits); any other model as it is."""
    if isinstance(model, (CalibratedModel, ScaledRegressor)):
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


def reliability_table(y, p) -> pd.DataFrame:
    """Per decile of the probability (1 = highest): users, mean predicted probability, observed rate."""
    table = decile_table(y, p).rename(columns={"mean_actual": "observed_rate"})
    table["decile"] = table.decile.astype(int)
    return table
