"""Candidate model families as unfitted scikit-learn Pipelines, each with a small search space.

Classification (purchase, churn): the families the behaviour-prediction literature uses: logistic regression, a
decision tree, a random forest, a linear SVM (calibrated, so that it gives probabilities), a neural network, and
gradient boosting. Class imbalance: class weights where the estimator takes them, balanced sample weights
otherwise (see fit).

Regression (revenue): most users spend nothing, so every family is a hurdle model, P(spends) x E[amount | spends].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from ml.features import scaled_preprocessor, tree_preprocessor

SEED = 0


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[list[str], dict], Pipeline]
    grid: list[dict]
    takes_sample_weight: bool = False  # balanced sample weights passed to fit (no class_weight option)
    # the feature sets (ml/features.py) the family is searched on: the aggregated ones unless it reads sequences
    feature_sets: tuple[str, ...] = ("counts", "behaviour", "reviews")
    # fitted on the older cutoffs with the tuning cutoff as its eval set, it stops early; the refits then train the
    # number of epochs it chose (best_epochs_)
    stops_early: bool = False
    needs: str | None = None  # an optional extra it cannot run without (ml/sequences.torch_missing says why)
    # opt-in families are candidates only when named in the model families: the GRU until the backtest on
    # generated and real data shows where it wins (docs/sequences.md)
    by_default: bool = True


def _logistic(columns, params):
    return Pipeline([("prep", scaled_preprocessor(columns)),
                     ("model", LogisticRegression(max_iter=2000, class_weight="balanced", **params))])


def _tree(columns, params):
    return Pipeline([("prep", tree_preprocessor(columns)),
                     ("model", DecisionTreeClassifier(class_weight="balanced", random_state=SEED, **params))])


def _forest(columns, params):
    return Pipeline([("prep", tree_preprocessor(columns)),
                     ("model", RandomForestClassifier(class_weight="balanced_subsample", n_jobs=2,
                                                      random_state=SEED, **params))])


def _linear_svm(columns, params):
    svm = LinearSVC(class_weight="balanced", random_state=SEED, **params)
    return Pipeline([("prep", scaled_preprocessor(columns)),
                     ("model", CalibratedClassifierCV(svm, method="sigmoid", cv=3))])


def _mlp(columns, params):
    return Pipeline([("prep", scaled_preprocessor(columns)),
                     ("model", MLPClassifier(early_stopping=True, max_iter=200, random_state=SEED, **params))])


def _boosting(columns, params):
    passthrough = ColumnTransformer([("numeric", "passthrough", columns)], verbose_feature_names_out=False)
    return Pipeline([("prep", passthrough),  # NaN is handled natively
                     ("model", HistGradientBoostingClassifier(class_weight="balanced", random_state=SEED,
                                                              **params))])


def _gru(columns, params):
    from ml.sequences import GRUClassifier

    # no preprocessing step: the network standardises the aggregated features and embeds the tokens itself
    return Pipeline([("model", GRUClassifier(**params))])


FAMILIES = {
    f.name: f
    for f in (
        # C = 0.005 for rare positives: on GA 2016 (~45 buyers a week) the tuning cutoff chose it over 0.05, and
        # it lifted the backtest's PR-AUC from 0.051 to 0.055 (benchmarks/results/features.md)
        Family("logistic_regression", _logistic, [{"C": c} for c in (0.05, 0.005, 1.0)]),
        Family("decision_tree", _tree, [{"max_depth": d, "min_samples_leaf": 50} for d in (4, 8)]),
        Family("random_forest", _forest,
               [{"n_estimators": 150, "max_depth": d, "min_samples_leaf": 20} for d in (8, 14)]),
        Family("linear_svm", _linear_svm, [{"C": c} for c in (0.05, 1.0)]),
        Family("neural_network", _mlp,
               [{"hidden_layer_sizes": h, "alpha": 1e-3} for h in ((32,), (64, 32))], takes_sample_weight=True),
        Family("gradient_boosting", _boosting,
               [{"learning_rate": lr, "max_leaf_nodes": 31, "max_iter": 200} for lr in (0.05, 0.1)]),
        # issue 24: a GRU over each user's last events, joined with the aggregated features (ml/sequences.py)
        Family("gru", _gru, [{"hidden_size": 32, "epochs": 30}], takes_sample_weight=True,
               feature_sets=("sequence",), stops_early=True, needs="deep", by_default=False),
    )
}


class HurdleRegressor(RegressorMixin, BaseEstimator):
    """A zero-inflated amount as P(amount > 0) x E[amount | amount > 0].

    The classifier learns who spends at all; the regressor learns log1p(amount) of those who do, and Duan's
    smearing factor corrects the retransformation bias of the log (exp of a mean log underestimates the mean).
    """

    def __init__(self, classifier=None, regressor=None):
        self.classifier = classifier
        self.regressor = regressor

    def fit(self, X, y):
        y = np.asarray(y, dtype=float)
        spends = y > 0
        if spends.sum() < 2 or (~spends).sum() < 2:
            raise ValueError(f"a hurdle model needs spenders and non-spenders; got {int(spends.sum())} of {len(y)}")
        self.classifier_ = clone(self.classifier).fit(X, spends.astype(int))
        X_spends = X[spends] if not hasattr(X, "iloc") else X.iloc[np.flatnonzero(spends)]
        log_amount = np.log1p(y[spends])
        self.regressor_ = clone(self.regressor).fit(X_spends, log_amount)
        self.smearing_ = float(np.mean(np.exp(log_amount - self.regressor_.predict(X_spends))))
        return self

    def predict_parts(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(P(spends), expected amount if it spends)."""
        return self.classifier_.predict_proba(X)[:, 1], self.amount(self.regressor_.predict(X))

    def amount(self, log_amount: np.ndarray) -> np.ndarray:
        """The expected amount if it spends, from the regressor's log1p(amount): smeared back, never below zero."""
        return np.maximum(np.exp(log_amount) * self.smearing_ - 1.0, 0.0)

    def predict(self, X) -> np.ndarray:
        probability, amount = self.predict_parts(X)
        return probability * amount


def _hurdle_boosting(columns, params):
    passthrough = ColumnTransformer([("numeric", "passthrough", columns)], verbose_feature_names_out=False)
    return Pipeline([("prep", passthrough), ("model", HurdleRegressor(
        HistGradientBoostingClassifier(random_state=SEED, **params),
        HistGradientBoostingRegressor(random_state=SEED, **params)))])


def _hurdle_linear(columns, params):
    return Pipeline([("prep", scaled_preprocessor(columns)), ("model", HurdleRegressor(
        LogisticRegression(max_iter=2000, C=params["C"]), Ridge(alpha=params["alpha"])))])


REGRESSION_FAMILIES = {
    f.name: f
    for f in (
        Family("hurdle_linear", _hurdle_linear, [{"C": c, "alpha": a} for c, a in ((0.05, 10.0), (1.0, 1.0))]),
        Family("hurdle_gradient_boosting", _hurdle_boosting,
               [{"learning_rate": lr, "max_leaf_nodes": 31, "max_iter": 200} for lr in (0.05, 0.1)]),
    )
}
