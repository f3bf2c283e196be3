"""Candidate model families as unfitted scikit-learn Pipelines, each with a small search space.

The families the behaviour-prediction literature uses: logistic regression, a decision tree, a random forest,
a linear SVM (calibrated, so that it gives probabilities), a neural network, and gradient boosting.
Class imbalance: class weights where the estimator takes them, balanced sample weights otherwise (see fit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
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


FAMILIES = {
    f.name: f
    for f in (
        Family("logistic_regression", _logistic, [{"C": c} for c in (0.05, 1.0)]),
        Family("decision_tree", _tree, [{"max_depth": d, "min_samples_leaf": 50} for d in (4, 8)]),
        Family("random_forest", _forest,
               [{"n_estimators": 150, "max_depth": d, "min_samples_leaf": 20} for d in (8, 14)]),
        Family("linear_svm", _linear_svm, [{"C": c} for c in (0.05, 1.0)]),
        Family("neural_network", _mlp,
               [{"hidden_layer_sizes": h, "alpha": 1e-3} for h in ((32,), (64, 32))], takes_sample_weight=True),
        Family("gradient_boosting", _boosting,
               [{"learning_rate": lr, "max_leaf_nodes": 31, "max_iter": 200} for lr in (0.05, 0.1)]),
    )
}
