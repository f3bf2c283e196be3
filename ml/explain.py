"""Why a user got a score: per-row reason codes and global importance, for every model family alike.

A feature's effect on a user's score is the change when that feature alone is set back to a reference user (the
population's median): f(x) - f(x with x_j = median_j). For a linear model on the logit this is the familiar
coefficient x deviation (through the link); for trees and networks it is the exact one-feature counterfactual. The
reason codes are the three features that push the score up the most, with the user's value; features that push it
down are not reasons. Global importance is the mean absolute effect over a sample.

Cost: one prediction per candidate feature for each scored row whose value of that feature differs from the
reference (a row at the reference cannot move: for behaviour counts, whose median is mostly zero, that is most
rows), the changed rows of all features stacked into a few large calls. Where the estimator begins with a linear map of
features transformed column by column (logistic regression, the calibrated linear SVM, the linear hurdle model, a
network's first layer), the transform and that map run once and only the rest of the estimator runs on the changed
rows (ml/explain._TransformedForm; the same effects, tested per family); trees and boosting predict them whole. The candidates are the REASON_CANDIDATES
features with the largest global importance, measured on a sample of the same rows (every feature, but over 2,000
rows): a feature that barely moves any score is rarely among a user's three strongest, and scoring a million users
then predicts a dozen features' changed rows instead of sixty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.neural_network._base import ACTIVATIONS
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC

from ml.calibration import CLIP, CalibratedModel, ScaledRegressor
from ml.evaluate import predict_scores
from ml.features import _signed_log1p
from ml.models import HurdleRegressor
from ml.sequences import EVENT_GROUPS, GRUClassifier, event_counts, is_token, occlusion_effects

TOP_REASONS = 3
REASON_CANDIDATES = 12


# Rows per prediction call when the changed copies of several features are stacked (memory: rows x features x 8 B)
MAX_STACKED_ROWS = 500_000


class _TransformedForm:
    """A fitted Pipeline(column-by-column ColumnTransformer, estimator) whose estimator begins with a linear map
    ``a = z @ W + b`` of the transformed features z: logistic regression, the calibrated linear SVM's folds, the
    linear hurdle model's two parts, a network's first layer. Each transformed column is made from one input column
    (imputed, its missing indicator, log, scaled), so setting input j to the reference moves ``a`` by
    (z_j - z_reference_j) @ W_j: the transform and the linear map run once, and only the rest of the estimator
    (``link``: the sigmoid, the calibrators, the hurdle's product, the network's later layers) runs on the changed
    rows. The same effects as predicting the changed rows through the whole pipeline, at a fraction of the cost."""

    def __init__(self, prep: ColumnTransformer, weights: np.ndarray, bias: np.ndarray, link, offset=None):
        self.prep, self.weights, self.bias, self.link = prep, weights, bias, link
        self.offset = offset  # rows -> a per-row addition to the linear map (the GRU's sequence state), or None

    @classmethod
    def of(cls, model) -> _TransformedForm | None:
        calibrated = _calibrated_pipeline(model)
        if calibrated is not None:
            return calibrated
        if isinstance(model, Pipeline) and len(model.steps) == 1 and isinstance(model[-1], GRUClassifier):
            final = model[-1]
            # the output layer is linear in the standardised features: the sequence state (run once) is an offset
            form = cls(_GRUFeatures(final), np.zeros((len(final.feature_columns_), 1)), np.zeros(1),
                       lambda a: expit(a[:, 0]), offset=lambda X: final.head(X)[2][:, None])
            return form._with_head_weights(final)
        if not (isinstance(model, Pipeline) and len(model.steps) == 2 and _columnwise(model[0])):
            return None
        prep, final = model[0], model[-1]
        if isinstance(final, LogisticRegression) and len(final.classes_) == 2:
            return cls(prep, *_linear(final), lambda a: expit(a[:, 0]))
        if isinstance(final, MLPClassifier) and final.n_outputs_ == 1:
            return cls(prep, final.coefs_[0], final.intercepts_[0], lambda a: _network_from_first_layer(final, a))
        if (isinstance(final, CalibratedClassifierCV) and len(final.classes_) == 2
                and all(isinstance(c.estimator, LinearSVC) and c.method in ("sigmoid", "isotonic")
                        for c in final.calibrated_classifiers_)):
            folds = final.calibrated_classifiers_
            weights, bias = (np.concatenate(parts, axis=-1) for parts in zip(*(_linear(c.estimator) for c in folds)))
            # CalibratedClassifierCV's probability: the mean over its folds of each calibrator on its decision
            return cls(prep, weights, bias,
                       lambda a: np.mean([c.calibrators[0].predict(a[:, f]) for f, c in enumerate(folds)], axis=0))
        if (isinstance(final, HurdleRegressor) and isinstance(final.classifier_, LogisticRegression)
                and isinstance(final.regressor_, Ridge)):
            weights, bias = (np.concatenate(parts, axis=-1)
                             for parts in zip(_linear(final.classifier_), _linear(final.regressor_)))
            # HurdleRegressor.predict: P(spends) x the amount from the regressor's log amount
            return cls(prep, weights, bias, lambda a: expit(a[:, 0]) * final.amount(a[:, 1]))
        # trees and boosting: their prediction is the cost, which skipping the transform does not change
        # (measured on HistGradientBoosting): they predict the changed rows through the whole pipeline
        return None

    def _with_head_weights(self, gru) -> _TransformedForm:
        network = gru._fitted_network()
        self.weights = network.head.weight.detach().numpy()[0, gru.hidden_size:].astype(np.float64)[:, None]
        return self

    def effects(self, X: pd.DataFrame, reference: pd.Series, columns: list[str]) -> pd.DataFrame:
        sources = self._sources(list(X.columns))
        z_reference = self.prep.transform(reference[X.columns].to_frame().T.astype(float))[0]
        values = X.to_numpy(dtype=float)
        out = np.zeros((len(X), len(columns)))
        chunk = max(MAX_STACKED_ROWS // max(len(columns), 1), 1)
        for start in range(0, len(X), chunk):   # bounds memory: the changed rows of a chunk fit one stack
            rows = slice(start, start + chunk)
            z = self.prep.transform(X.iloc[rows])
            first = z @ self.weights + self.bias
            if self.offset is not None:
                first = first + self.offset(X.iloc[rows])
            base, stacked, places = self.link(first), [], []
            for j, column in enumerate(columns):
                k = X.columns.get_loc(column)
                moved = _moved(values[rows, k], float(reference[column]))
                cols = np.flatnonzero(sources == k)
                stacked.append(first[moved] - (z[np.ix_(moved, cols)] - z_reference[cols]) @ self.weights[cols])
                places.append((j, moved))
            scores = self.link(np.concatenate(stacked)) if stacked else np.empty(0)
            at = 0
            for j, moved in places:
                out[start + moved, j] = base[moved] - scores[at:at + len(moved)]
                at += len(moved)
        return pd.DataFrame(out, index=X.index, columns=columns)

    def _sources(self, inputs: list[str]) -> np.ndarray:
        """The input column behind each transformed column, by name ('x' or SimpleImputer's 'missingindicator_x')."""
        names = [str(n).removeprefix("missingindicator_") for n in self.prep.get_feature_names_out()]
        unknown = sorted(set(names) - set(inputs))
        if unknown:
            raise ValueError(f"transformed columns that are not one input column each: {', '.join(unknown)}")
        return np.array([inputs.index(n) for n in names])


def _calibrated_pipeline(model) -> _TransformedForm | None:
    """A scaled amount model: its pipeline's form, the link times the scale. A calibrated model (ml/calibration.py:
    a calibrator over the logit of a fitted pipeline's probability) whose pipeline has a transformed form: the
    same form, its link followed by the logit and the calibrator."""
    if isinstance(model, ScaledRegressor):
        inner = _TransformedForm.of(model.model)
        return None if inner is None else _TransformedForm(inner.prep, inner.weights, inner.bias,
                                                           lambda a: inner.link(a) * model.scale, inner.offset)
    if not isinstance(model, CalibratedModel):
        return None
    inner = _TransformedForm.of(model.model)
    if inner is None:
        return None
    return _TransformedForm(inner.prep, inner.weights, inner.bias,
                            lambda a: model.calibrated(logit(np.clip(inner.link(a), CLIP, 1 - CLIP))), inner.offset)


class _GRUFeatures:
    """The GRU's own transform of its aggregated features (signed log, standardised, missing as the mean), as the
    transformed form's ``prep``: one output column per feature column."""

    def __init__(self, gru):
        self.gru = gru

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        return self.gru.standardised(X)

    def get_feature_names_out(self) -> np.ndarray:
        return np.asarray(self.gru.feature_columns_, dtype=object)


def _moved(values: np.ndarray, reference: float) -> np.ndarray:
    """Positions whose value differs from the reference (NaN equals NaN): only those rows can change score."""
    return np.flatnonzero(~((values == reference) | (np.isnan(values) & np.isnan(reference))))


def _linear(estimator) -> tuple[np.ndarray, np.ndarray]:
    """(W as transformed columns x 1, b as 1) of a fitted linear estimator's decision function."""
    return np.ravel(estimator.coef_).astype(float)[:, None], np.ravel(estimator.intercept_)[:1].astype(float)


def _network_from_first_layer(network: MLPClassifier, first: np.ndarray) -> np.ndarray:
    """The positive class's probability from the first layer's pre-activations, as MLPClassifier's forward pass."""
    activation = first.copy()   # sklearn's activations work in place
    for i in range(1, network.n_layers_ - 1):
        ACTIVATIONS[network.activation](activation)
        activation = activation @ network.coefs_[i] + network.intercepts_[i]
    ACTIVATIONS[network.out_activation_](activation)
    return activation[:, 0]


def _columnwise(prep) -> bool:
    """Whether each transformed column is made from one input column alone: a ColumnTransformer of imputers (their
    missing indicators included), scalers, the signed log and passthrough, nothing else (a PCA, a polynomial or
    an arbitrary function would mix columns)."""
    def elementwise(step) -> bool:
        if isinstance(step, Pipeline):
            return all(elementwise(s) for _, s in step.steps)
        if isinstance(step, FunctionTransformer):
            return step.func is None or step.func is _signed_log1p   # None: a fitted 'passthrough'
        return step == "passthrough" or isinstance(step, SimpleImputer | StandardScaler)

    return (isinstance(prep, ColumnTransformer) and hasattr(prep, "transformers_")
            and all(step == "drop" or elementwise(step) for _, step, _ in prep.transformers_))


def effects(model, X: pd.DataFrame, regression: bool, reference: pd.Series | None = None,
            columns: list[str] | None = None) -> pd.DataFrame:
    """Per row and feature (of ``columns``, default all): the score minus the score with that feature at the
    reference value. A model on sequence tokens (ml/sequences.py) is explained by its aggregated features and, in
    place of the tokens, by event type (``recent_<type>_events``): the score minus the score with those events
    removed from the sequence (occlusion)."""
    reference = X.median() if reference is None else reference
    columns = list(explained_values(X).columns) if columns is None else columns
    groups = [c for c in columns if c in EVENT_GROUPS]
    if groups:
        features = effects(model, X, regression, reference, [c for c in columns if c not in EVENT_GROUPS])
        occluded = occlusion_effects(lambda frame: predict_scores(model, frame, regression), X, groups)
        return pd.concat([features, occluded], axis=1)[columns]
    transformed = _TransformedForm.of(model)
    if transformed is not None:
        return transformed.effects(X, reference, columns)
    base = predict_scores(model, X, regression)
    values = X.to_numpy(dtype=float)
    out = np.zeros((len(X), len(columns)))
    # The changed copies of every feature are stacked and predicted together, MAX_STACKED_ROWS at a time: one call
    # instead of one per feature (a call costs ~0.1 s of overhead for a forest, whatever its rows: 60 features on
    # a 2,000-row sample took 8 s). Each row's prediction depends on that row alone, so the result is the same.
    pending = []   # (feature index, row positions, the rows with that feature at the reference)

    def predict_pending() -> None:
        scores = predict_scores(model, pd.DataFrame(np.concatenate([block for *_, block in pending]),
                                                    columns=X.columns), regression)
        at = 0
        for j, rows, block in pending:
            out[rows, j] = base[rows] - scores[at:at + len(rows)]
            at += len(rows)
        pending.clear()

    for j, column in enumerate(columns):
        k, value = X.columns.get_loc(column), float(reference[column])
        # only the rows whose value differs from the reference can move: behaviour counts are mostly at their
        # median (zero), so this predicts a fraction of the rows, with the same result
        moved = _moved(values[:, k], value)
        for start in range(0, len(moved), MAX_STACKED_ROWS):
            rows = moved[start:start + MAX_STACKED_ROWS]
            if pending and sum(len(r) for _, r, _ in pending) + len(rows) > MAX_STACKED_ROWS:
                predict_pending()
            block = values[rows]
            block[:, k] = value
            pending.append((j, rows, block))
    if pending:
        predict_pending()
    return pd.DataFrame(out, index=X.index, columns=columns)


def explained_values(X: pd.DataFrame) -> pd.DataFrame:
    """What the reasons name and show: the model's input columns, with the sequence tokens (if any) replaced by
    the count of each event type in the sequence."""
    tokens = [c for c in X.columns if is_token(c)]
    if not tokens:
        return X
    return pd.concat([X.drop(columns=tokens), event_counts(X)], axis=1)


@dataclass(frozen=True)
class ReasonPlan:
    """What a population's reasons are measured against, from the whole population: the reference user (the median
    of each feature) and the features that may be named (the ``candidates`` most important on a sample; None: all).
    Given the plan, each row's reasons depend on that row alone, so rows may be explained in any batches (a Spark
    partition each: dagster_project/spark_engine.py) with the same result."""

    reference: pd.Series
    columns: list[str] | None


def reason_plan(model, X: pd.DataFrame, regression: bool, candidates: int = REASON_CANDIDATES) -> ReasonPlan:
    """The plan of ``X``'s reasons. The rows' order matters only through the importance sample: give them in a
    fixed order (ml.predict sorts by user)."""
    reference = X.median()
    shown = explained_values(X)
    if shown.shape[1] <= candidates:
        return ReasonPlan(reference, None)
    importance = global_importance(model, X, regression, reference=reference)
    chosen = set(importance.index[:candidates])
    return ReasonPlan(reference, [c for c in shown.columns if c in chosen])


def reason_codes(model, X: pd.DataFrame, regression: bool, top: int = TOP_REASONS,
                 candidates: int = REASON_CANDIDATES, plan: ReasonPlan | None = None) -> pd.DataFrame:
    """reason_k (feature name), reason_k_value (the user's value) and reason_k_effect (how much it raises the
    score), k = 1 .. top, strongest first, among the features of the population's ``plan`` (default: the plan of
    these rows, ``reason_plan``); NULL where fewer features raise the score."""
    plan = plan or reason_plan(model, X, regression, candidates)
    shown = explained_values(X)
    contributions = effects(model, X, regression, plan.reference, plan.columns)
    X = shown[contributions.columns]
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


def global_importance(model, X: pd.DataFrame, regression: bool, max_rows: int = 2000, seed: int = 0,
                      reference: pd.Series | None = None) -> pd.Series:
    """Mean absolute effect per feature on a sample of X (against the sample's median, or ``reference``),
    largest first; ties keep the columns' order."""
    sample = X.sample(n=min(max_rows, len(X)), random_state=seed) if len(X) > max_rows else X
    # rounded like the reasons' effects, so that floating-point noise does not reorder equal importances
    return effects(model, sample, regression, reference).abs().mean().round(9).sort_values(ascending=False,
                                                                                         kind="stable")
