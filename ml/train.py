"""Train candidate models for a target with time-based validation, log everything to MLflow, register the best.

Time-based validation, never a random split across time: the training set holds cutoffs ranked from the newest
closed one (rank 1). Rank 1 validates. The cutoffs a judged cutoff is trained for are purged: only those whose label
window closes by the judged cutoff (``purged_before``), else the labels of the training rows would hold the very
purchases the judged rows are scored on (a 90-day label at weekly cutoffs: the same user's same purchases, PR-AUC
0.97 on the Amazon sample where no single feature reaches ROC-AUC 0.66). The newest cutoff that may train the
validation one tunes: each configuration is fitted on the cutoffs purged for it and scored on it, which chooses the
hyperparameters; the chosen one is refitted on every cutoff that may train the validation one (the published model)
and calibrated on out-of-fold predictions for the newest training cutoffs' users (ml/calibration.py), where the
decision threshold is chosen too. Where no cutoff may train the tuning one, a fixed share of its users (a hash of
the user id) tunes instead. ``purge=False`` trains on overlapping label windows (a history too short for a purged
split: the 9-day Taobao sample), and the runs say that their validation figures are optimistic.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from scipy.special import logit
from sklearn.model_selection import GroupKFold
from sklearn.utils.class_weight import compute_sample_weight

from ml.calibration import (
    CLIP,
    CalibrationChoice,
    WindowChoice,
    calibrate,
    calibration_metrics,
    choose_window,
    reliability_table,
    scale_total,
)
from ml.evaluate import best_f1_threshold, plots, predict_scores, regression_plots, target_metrics
from ml.explain import global_importance
from ml.features import feature_columns, feature_sets, to_matrix, varies
from ml.models import FAMILIES, REGRESSION_FAMILIES, Family
from ml.registry import Store
from ml.review_features import ARTIFACT as REVIEW_ARTIFACT
from ml.review_features import ReviewFeatures, reads_reviews, save
from ml.sequences import is_token
from ml.targets import Eligibility, Target

# MLflow saves scikit-learn models with skops, which loads only types it is told to trust. These are the ones
# our candidate families contain (reviewed: our transform, numpy dtypes, scikit-learn's fitted internals);
# tests/test_models.py fails if a family starts to need another.
SKOPS_TRUSTED_TYPES = [
    "ml.features._signed_log1p",
    "ml.calibration.CalibratedModel",
    "ml.calibration.ScaledRegressor",
    "ml.models.HurdleRegressor",
    "ml.sequences.GRUClassifier",  # its fitted weights are numpy arrays (ml/sequences.py)
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
]


# What a logged model needs to load, pinned to this environment's versions. Given explicitly because MLflow's
# inference starts a subprocess per model (seconds each) and picks up test tools (pytest, rich) besides.
MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


class NotEligible(ValueError):
    """The training data cannot support a model for this target (too few examples or cutoffs)."""


# With one training cutoff, the share of its users (by a hash of the id) held out to tune and calibrate.
HOLDOUT_SHARE = 0.3


@dataclass
class Split:
    fit: pd.DataFrame     # the cutoffs purged for the tuning one (its other users when there are none)
    tune: pd.DataFrame    # the newest training cutoff (or a held-out share of its users): hyperparameters, calibration
    train: pd.DataFrame   # every cutoff purged for validation: what the published model is refitted on
    valid: pd.DataFrame   # rank 1
    valid_as_of: str
    train_as_of: list[str]
    tune_is_holdout: bool = False  # no cutoff may train the tuning one: fit and tune are disjoint users of it
    purged: bool = True   # False: training label windows may overlap the judged cutoff's (optimistic figures)

    @property
    def tune_as_of(self) -> str | None:
        """The tuning cutoff, when models are fitted on older cutoffs than it (else None: the same cutoff)."""
        return None if self.tune_is_holdout else str(self.tune["as_of_date"].iloc[0])[:10]

    def describe(self, horizon_days: int) -> str:
        if self.purged:
            return (f"purged: trained on cutoffs whose {horizon_days}-day label windows close by the cutoff judged "
                    "(validation, tuning, each backtest fold)")
        return (f"overlapping: training cutoffs' {horizon_days}-day label windows may overlap the cutoff judged, so "
                "the validation and backtest figures are optimistic (purge_overlapping_labels is off)")


def _held_out(frame: pd.DataFrame, share: float) -> np.ndarray:
    """A stable ``share`` of the users (the same users on every run): a hash of the id, not a random draw."""
    hashed = pd.util.hash_pandas_object(frame["user_id"].astype(str), index=False).to_numpy()
    return (hashed % 1000) < share * 1000


def cutoff_dates(labelled: pd.DataFrame) -> pd.Series:
    """The as-of date of each cutoff rank (rank 1 the newest), as timestamps."""
    return pd.to_datetime(labelled.groupby("cutoff_rank")["as_of_date"].first()).sort_index()


def purged_before(dates: pd.Series, judged: pd.Timestamp, horizon_days: int, purge: bool = True) -> list:
    """The ranks of ``dates`` that may train a model judged on the cutoff ``judged``: older cutoffs whose label
    window (``horizon_days`` from the cutoff) has closed by it; with ``purge=False``, every older cutoff."""
    horizon = pd.Timedelta(days=horizon_days if purge else 0)
    return [rank for rank, day in dates.items() if day < judged and day + horizon <= judged]


def time_split(frame: pd.DataFrame, target: Target, min_examples_per_class: int = 20, purge: bool = True) -> Split:
    """Rank 1 (the newest cutoff with a closed label) validates; the older cutoffs purged for it train. NotEligible
    when no cutoff may train, or the training data hold fewer than ``min_examples_per_class`` of either class, or
    validation a tenth of that."""
    labelled = target.select(frame[frame[target.label].notna()])
    dates = cutoff_dates(labelled)
    if len(dates) < 2:
        raise NotEligible(f"{target.name}: {len(dates)} cutoff(s) with a closed {target.horizon_days}-day label in the "
                          f"training set; {2 - len(dates)} more needed (one to validate, one to train): a longer "
                          "history of events gives more (the run's training windows say how many days more)")
    valid_rank = dates.index[0]
    training_ranks = purged_before(dates, dates.iloc[0], target.horizon_days, purge)
    if not training_ranks:
        raise NotEligible(
            f"{target.name}: no training cutoff's {target.horizon_days}-day label window closes by the validation "
            f"cutoff {dates.iloc[0]:%Y-%m-%d} (the oldest, {dates.iloc[-1]:%Y-%m-%d}, is "
            f"{(dates.iloc[0] - dates.iloc[-1]).days} days before it): a longer history, training cutoffs further "
            "apart (training_cadence_days), or purge_overlapping_labels = false, whose figures are optimistic")
    valid = labelled[labelled.cutoff_rank == valid_rank]
    train = labelled[labelled.cutoff_rank.isin(training_ranks)]
    tune_rank = training_ranks[0]
    tune = labelled[labelled.cutoff_rank == tune_rank]
    fit_ranks = purged_before(dates, dates[tune_rank], target.horizon_days, purge)
    holdout = not fit_ranks
    if holdout:
        held = _held_out(tune, HOLDOUT_SHARE)
        fit, tune = tune[~held], tune[held]
    else:
        fit = labelled[labelled.cutoff_rank.isin(fit_ranks)]
    for name, part in (("training", train), ("validation", valid)):
        y = part[target.label]
        positives, negatives = int((y > 0).sum()), int((y == 0).sum())  # revenue: spenders and non-spenders
        needed = min_examples_per_class if name == "training" else max(1, min_examples_per_class // 10)
        if positives < needed or negatives < needed:
            short = "; ".join(f"{needed - count} more {kind}" for kind, count in (("positive", positives),
                                                                                  ("negative", negatives))
                              if count < needed)
            raise NotEligible(f"{target.name}: the {name} data hold {positives} positive and {negatives} negative "
                              f"examples; at least {needed} of each are needed ({short}: more history or more "
                              "users, or a lower min_class_examples)")
    as_of = lambda part: sorted(str(d)[:10] for d in part["as_of_date"].unique())
    return Split(fit, tune, train, valid, as_of(valid)[0], as_of(train), holdout, purge)


def bounded(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """A uniform random sample of at most max_rows rows (the same share of every cutoff), so training time stays
    bounded on a large panel; the label rate is kept in expectation. Validation is never sampled."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).sort_index()


@dataclass
class Candidate:
    family: str
    params: dict
    tuning_score: float  # the target's primary metric on the tuning cutoff
    threshold: float
    model: object
    metrics: dict = field(default_factory=dict)
    run_id: str | None = None
    fit_seconds: float = 0.0
    configurations_tried: int = 0
    # the primary metric per cutoff on which this configuration was fitted on the older cutoffs alone: the
    # validation cutoff and the tuning one. They are the promotion backtest's newest folds (ml/backtest.py),
    # which then need not be refitted.
    fold_scores: dict[str, float] = field(default_factory=dict)
    calibration: CalibrationChoice | None = None  # classification: how the published probability was calibrated
    total_scale: float | None = None  # amounts: the factor that makes the calibration cutoffs' total add up
    calibration_window: WindowChoice | None = None  # how many training cutoffs calibrated it, and why
    feature_set: str = ""  # the feature set (ml/features.py) the tuning cutoff chose for this family
    columns: list[str] = field(default_factory=list)  # its columns: the model's inputs

    @property
    def name(self) -> str:
        return f"{self.family} ({self.feature_set})" if self.feature_set else self.family


def _fit(family: Family, columns, params, frame, target: Target, eval_frame: pd.DataFrame | None = None):
    model = family.build(columns, params)
    X = to_matrix(frame, columns)
    if target.is_regression:
        return model.fit(X, frame[target.label].astype(float).to_numpy())
    y = frame[target.label].astype(int).to_numpy()
    extra = {}
    if family.takes_sample_weight:
        extra["model__sample_weight"] = compute_sample_weight("balanced", y)
    if eval_frame is not None:  # early stopping on these rows (Family.stops_early)
        extra["model__eval_set"] = (to_matrix(eval_frame, columns), eval_frame[target.label].astype(int).to_numpy())
    return model.fit(X, y, **extra)


def _left_out(family: Family, sets: dict[str, list[str]]) -> str | None:
    """Why a family cannot be a candidate here, or None."""
    if family.needs == "deep":
        from ml.sequences import torch_missing

        if torch_missing():
            return torch_missing()
    if not any(name in sets for name in family.feature_sets):
        return (f"none of its feature sets ({', '.join(family.feature_sets)}) is in the training frame"
                + (": it has no sequence tokens (sequence models off)" if "sequence" in family.feature_sets else ""))
    return None


def families_for(target: Target, names: list[str] | None = None) -> list[Family]:
    """The target's families, restricted to ``names`` where any of them is one (a list may name families of
    both kinds; a kind none of whose families is named gets its default ones: every family but those still
    opt-in, Family.by_default)."""
    pool = REGRESSION_FAMILIES if target.is_regression else FAMILIES
    chosen = [pool[n] for n in (names or []) if n in pool]
    return chosen or [f for f in pool.values() if f.by_default]


CROSS_FIT_FOLDS = 3  # user folds of the out-of-fold predictions the calibrator learns from (ml/calibration.py)
MIN_CALIBRATION_CLASS_ROWS = 20  # below this many of a class in the window, every training cutoff calibrates


def out_of_fold(family: Family, columns: list[str], params: dict, split: Split, target: Target,
                folds: int = CROSS_FIT_FOLDS) -> tuple[pd.DataFrame, np.ndarray, WindowChoice]:
    """(the rows the calibrator learns from, their out-of-fold predictions, how their window was chosen): the
    configuration fitted on every training cutoff without a third of the users predicts those users (folds by user:
    no model predicts a user it saw at any cutoff). The rows are those of the newest training cutoffs, as many as a
    backtest over the training cutoffs chooses (ml/calibration.choose_window), unless they hold fewer than
    MIN_CALIBRATION_CLASS_ROWS of a class (amounts: spenders); then every training cutoff's."""
    train = split.train.reset_index(drop=True)
    predictions = np.full(len(train), np.nan)
    for fitted_on, left_out in GroupKFold(n_splits=folds).split(train, groups=train["user_id"]):
        model = _fit(family, columns, params, train.iloc[fitted_on], target)
        predictions[left_out] = predict_scores(model, to_matrix(train.iloc[left_out], columns), target.is_regression)
    window = choose_window(train["as_of_date"], predictions, train[target.label].to_numpy(dtype=float),
                           amounts=target.is_regression)
    dates = pd.to_datetime(train["as_of_date"])
    recent = dates.isin(sorted(dates.unique())[-window.cutoffs:]).to_numpy()
    y = train.loc[recent, target.label] > 0
    if min(int(y.sum()), int((~y).sum())) < MIN_CALIBRATION_CLASS_ROWS:  # every cutoff, and the window says so
        return train, predictions, replace(window, cutoffs=dates.nunique())
    return train[recent], predictions[recent], window


def search(family: Family, split: Split, set_name: str, columns: list[str], target: Target,
           budget_seconds: float) -> Candidate:
    """Try the family's grid on one feature set, each configuration fitted on the fit cutoffs and scored on the
    tuning one, keep the best and refit it on every training cutoff: the published model. A classifier is then
    calibrated (on out-of-fold predictions for the newest training cutoffs' users: ml/calibration.py) and its
    F1-optimal threshold chosen on those calibrated predictions; an amount model's total is scaled the same way. The
    first configuration is always tried; another only while it, the refit and the cross-fits (projected from the
    last fit's time and the rows) still fit in the budget. An early-stopped family (the GRU) is also told to stop
    its epochs in time for those (``max_seconds``): its first configuration fits the budget too."""
    started, best, tried = time.perf_counter(), None, 0
    y_tune = split.tune[target.label].to_numpy(dtype=float)
    # after the search: the refit on every training row, and the cross-fits, each on (folds - 1) / folds of them:
    # together `folds` times the training rows
    refit_share = len(split.train) / max(len(split.fit), 1) * CROSS_FIT_FOLDS
    last_fit = 0.0
    for params in family.grid:
        if tried and time.perf_counter() - started + last_fit * (1 + refit_share) > budget_seconds:
            break
        fit_started = time.perf_counter()
        fit_params = params
        if family.stops_early:  # an iterative fit stops in time for the refit and the cross-fits to fit the share
            left = max(0.0, budget_seconds - (fit_started - started))
            fit_params = {**params, "max_seconds": left / (1 + refit_share)}
        model = _fit(family, columns, fit_params, split.fit, target, split.tune if family.stops_early else None)
        last_fit = time.perf_counter() - fit_started
        tried += 1
        p = predict_scores(model, to_matrix(split.tune, columns), target.is_regression)
        score = float(target_metrics(target.is_regression, y_tune, p)[target.primary_metric])
        if family.stops_early:  # the refit and the cross-fits train the epochs the tuning cutoff chose
            params = {**params, "epochs": int(model[-1].best_epochs_)}
        if best is None or score > best[0]:
            best = (score, params)
    score, params = best
    fit_started = time.perf_counter()
    model = _fit(family, columns, params, split.train, target)
    fit_seconds = time.perf_counter() - fit_started
    rows, predictions, window = out_of_fold(family, columns, params, split, target)
    y_rows = rows[target.label].to_numpy(dtype=float)
    dates = sorted({str(d)[:10] for d in rows["as_of_date"].unique()})
    calibrated_on = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    common = {"fit_seconds": fit_seconds, "configurations_tried": tried, "feature_set": set_name, "columns": columns}
    if target.is_regression:
        scaled, scale = scale_total(model, predictions, y_rows, as_of=calibrated_on)
        return Candidate(family.name, params, score, 0.0, scaled, total_scale=scale, calibration_window=window,
                         **common)
    calibrated, choice = calibrate(model, predictions, y_rows, as_of=calibrated_on)
    threshold = best_f1_threshold(y_rows.astype(int),
                                  calibrated.calibrated(logit(np.clip(predictions, CLIP, 1 - CLIP))))
    return Candidate(family.name, params, score, threshold, calibrated, calibration=choice,
                     calibration_window=window, **common)


@dataclass
class TrainingOutcome:
    target: Target
    parent_run_id: str
    candidates: list[Candidate]
    best: Candidate
    baseline: dict
    split: Split
    columns: list[str]  # every feature column the data has (each candidate fits its set of them)
    quality_problems: list[str] = field(default_factory=list)  # why the best may not be published (empty: fine)
    baseline_name: str = ""
    reliability: pd.DataFrame | None = None  # classification: the best's deciles on validation, predicted vs observed


# Ranking scores closer than this are a tie on validation cutoffs of a few hundred positives (a PR-AUC's standard
# error there is about 0.02): among tied classifiers, the one whose probabilities fit better (log loss) is published.
# Taobao: logistic regression 0.7186 and random forest 0.7183 PR-AUC, log loss 0.749 against 0.642.
TIED_WITHIN = 0.005


def _log_review_features(review_features: ReviewFeatures | None) -> None:
    if review_features is None:
        raise ValueError("the frame has review features, but no fitted ReviewFeatures was given to log with them")
    with tempfile.TemporaryDirectory() as folder:
        mlflow.log_artifact(str(save(review_features, Path(folder) / REVIEW_ARTIFACT)))


def choose(candidates: list[Candidate], eligibility: Eligibility, metric: str) -> tuple[Candidate, list[str]]:
    """(the best candidate, why it may not be published). The floor first, then the best: a candidate that ranks
    best but misses a floor does not hide one that passes; when none passes, the best is returned with every
    candidate's misses, so that the gate says which floor each one missed. Candidates within TIED_WITHIN of the
    best score are tied; the lowest log loss among them wins (amounts, which have none: the best score)."""
    passing = [c for c in candidates if not eligibility.quality_problems(c.metrics)]
    pool = passing or candidates
    top = max(c.metrics[metric] for c in pool)
    tied = [c for c in pool if c.metrics[metric] >= top - TIED_WITHIN]
    # log loss to 4 decimals: a feature set that adds nothing (a constant column) does not win on float noise;
    # then the smaller feature set
    best = min(tied, key=lambda c: (round(c.metrics.get("log_loss", np.inf), 4), len(c.columns), -c.metrics[metric]))
    problems = [] if passing else [f"{c.name}: {', '.join(eligibility.quality_problems(c.metrics))}"
                                   for c in candidates]
    return best, problems


def train_candidates(frame: pd.DataFrame, target: Target, store: Store, *, tags: dict | None = None,
                     families: list[str] | None = None, budget_seconds: float = 300.0,
                     feature_set_names: list[str] | None = None,
                     eligibility: Eligibility | None = None,
                     max_training_rows: int = 100_000, allow_personal_features: bool = False,
                     review_features: ReviewFeatures | None = None, purge: bool = True,
                     progress: Callable[[str], None] = lambda _: None) -> TrainingOutcome:
    """Search every family, log a parent run with one nested run per candidate, and return them all.
    ``review_features``: the fitted ReviewFeatures behind the frame's review columns, logged in the parent run
    that every candidate reading them belongs to (scoring computes their features with it).
    ``budget_seconds`` bounds the whole search, refits and logging included, but for the first configuration of
    each family, which is always tried (on a large panel, the fixed cost: see benchmarks/results/scale.md).
    ``purge``: train only on cutoffs whose label windows close by the cutoff judged (time_split)."""
    started = time.perf_counter()
    eligibility = eligibility or Eligibility()
    split = time_split(frame, target, eligibility.min_examples_per_class, purge)
    split.train = bounded(split.train, max_training_rows)
    split.fit = bounded(split.fit, max_training_rows)  # the tuning cutoff is scored whole, like validation
    # features with a value in the rows models are fitted on (BG/NBD outputs are missing at cutoffs too young to fit),
    # and that vary there (ml/features.varies; a sequence's tokens are one input, padding and all)
    columns = [c for c in feature_columns(split.train, allow_personal_features)
               if split.fit[c].notna().any() and (is_token(c) or varies(split.train[c]))]
    sets = feature_sets(columns, feature_set_names)
    chosen = families_for(target, families)
    regression = target.is_regression
    y_valid = split.valid[target.label].to_numpy(dtype=float)
    baseline_name, baseline_scores = target.baseline(split.valid)
    baseline_threshold = 0.0 if regression else best_f1_threshold(
        split.tune[target.label].astype(int).to_numpy(), target.baseline(split.tune)[1])
    baseline = target_metrics(regression, y_valid, baseline_scores, baseline_threshold)
    if not regression and baseline_name != "BG/NBD":  # a ranking, not a probability: nothing to add up
        baseline.update(dict.fromkeys(calibration_metrics([0, 1], [0.5, 0.5]), float("nan")))
    experiment_id = store.experiment_id(target.name)
    all_tags = {"target": target.name, "label": target.label, "validation_as_of_date": split.valid_as_of,
                "baseline_name": baseline_name,
                "training_as_of_dates": ",".join(split.train_as_of),
                "validation_split": split.describe(target.horizon_days), **(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{target.name} train {split.valid_as_of}",
                          tags=all_tags) as parent:
        mlflow.log_params({"families": ",".join(f.name for f in chosen), "features": len(columns),
                           "feature_sets": ",".join(f"{name} ({len(cols)})" for name, cols in sets.items()),
                           "max_training_rows": max_training_rows,
                           "training_rows": len(split.train), "validation_rows": len(split.valid),
                           "budget_seconds": budget_seconds})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in baseline.items() if np.isfinite(v)})
        if any(reads_reviews(cols) for cols in sets.values()):  # once per run: its candidates share it
            _log_review_features(review_features)
        candidates, deadline = [], started + budget_seconds
        searches = [(family, set_name) for family in chosen for set_name in sets if set_name in family.feature_sets]
        for family in chosen:
            why = _left_out(family, sets)
            if why:
                searches = [(f, n) for f, n in searches if f is not family]
                progress(f"{target.name} {family.name} left out: {why}")
                mlflow.set_tag(f"left_out.{family.name}", why)
        if not searches:
            raise NotEligible(f"no family can run on these feature sets ({', '.join(sets)}): "
                              f"{', '.join(f.name for f in chosen)}")
        for i, (family, set_name) in enumerate(searches):
            # each search gets an even share of what is left, so one that ran over shortens the others'
            share = max(0.0, deadline - time.perf_counter()) / (len(searches) - i)
            candidate = search(family, split, set_name, sets[set_name], target, share)
            X_valid = to_matrix(split.valid, candidate.columns)
            p = predict_scores(candidate.model, X_valid, regression)
            candidate.metrics = target_metrics(regression, y_valid, p, candidate.threshold)
            candidate.fold_scores = {split.valid_as_of: float(candidate.metrics[target.primary_metric])}
            if split.tune_as_of is not None:
                candidate.fold_scores[split.tune_as_of] = candidate.tuning_score
            with mlflow.start_run(experiment_id=experiment_id, run_name=candidate.name, nested=True,
                                  tags={**all_tags, "family": family.name,
                                        "feature_set": candidate.feature_set}) as child:
                mlflow.log_params({**candidate.params, "family": family.name, "feature_set": candidate.feature_set,
                                   "features": len(candidate.columns),
                                   **(candidate.calibration.as_params() if candidate.calibration else {}),
                                   **({"total_scale": candidate.total_scale} if candidate.total_scale else {}),
                                   **({"calibration_window_cutoffs": candidate.calibration_window.cutoffs}
                                      if candidate.calibration_window else {})})
                window_errors = ({str(w): e for w, e in candidate.calibration_window.errors.items()}
                                 if candidate.calibration_window else {})
                if candidate.calibration:
                    mlflow.log_dict({"out_of_fold_log_loss": candidate.calibration.log_loss,
                                     "window_backtest_abs_log_ratio": window_errors,
                                     "reliability_validation": reliability_table(y_valid, p).to_dict("records")},
                                    "calibration.json")
                elif window_errors:
                    mlflow.log_dict({"window_backtest_abs_log_ratio": window_errors}, "calibration.json")
                mlflow.log_metrics({k: v for k, v in candidate.metrics.items() if np.isfinite(v)}
                                   | {"tuning_score": candidate.tuning_score, "fit_seconds": candidate.fit_seconds,
                                     "configurations_tried": candidate.configurations_tried})
                figures = (regression_plots(y_valid, p) if regression
                           else plots(y_valid.astype(int), p, candidate.threshold, candidate.model, X_valid))
                importance = global_importance(candidate.model, X_valid, regression)
                mlflow.log_dict({k: float(v) for k, v in importance.items()}, "global_importance.json")
                for name, figure in figures.items():
                    mlflow.log_figure(figure, f"plots/{name}")
                import matplotlib.pyplot as plt

                plt.close("all")
                example = X_valid.head(5)
                mlflow.sklearn.log_model(
                    candidate.model, name="model", signature=infer_signature(example, p[:5]),
                    input_example=example, pyfunc_predict_fn="predict" if regression else "predict_proba",
                    skops_trusted_types=SKOPS_TRUSTED_TYPES, pip_requirements=model_requirements(),
                )
                candidate.run_id = child.info.run_id
            candidates.append(candidate)
            shown = ("normalized_gini", "spearman", "mae") if regression else ("roc_auc", "pr_auc")
            progress(f"{target.name} {candidate.name}: "
                     + ", ".join(f"{k} {candidate.metrics[k]:.3f}" for k in shown) + f" ({candidate.params})")
        best, problems = choose(candidates, eligibility, target.primary_metric)
        mlflow.set_tags({"best_family": best.family, "best_feature_set": best.feature_set, "best_run_id": best.run_id,
                         "quality_problems": "; ".join(problems) or "none"})
        mlflow.log_metrics({f"best_{k}": v for k, v in best.metrics.items() if np.isfinite(v)})
    reliability = None if regression else reliability_table(
        y_valid, predict_scores(best.model, to_matrix(split.valid, best.columns), False))
    return TrainingOutcome(target, parent.info.run_id, candidates, best, baseline, split, columns, problems,
                           baseline_name, reliability)

