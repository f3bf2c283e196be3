"""The backtest behind every promotion: the candidate against the incumbent on the last N closed cutoffs.

For each of the N newest cutoffs with a closed label (a fold), the candidate's configuration is refit on the
cutoffs older than the fold only, and scored on the fold; the incumbent (the current champion as it is, or the
baseline when there is none) is scored on the same rows. A fold the champion was trained on would flatter it, so
the comparison uses the folds out of the champion's sample; when none is (a retrain on the same day), all folds
are used and the decision says so.

Training has already measured the candidate on the two newest folds the same way (validation: fitted on the older
cutoffs, scored on the newest; tuning: fitted on the cutoffs older than the second, scored on it), so the gate
reuses those scores and refits only for the older folds: one refit per promotion instead of three.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils.class_weight import compute_sample_weight

from ml.calibration import uncalibrated
from ml.evaluate import predict_scores, target_metrics
from ml.features import to_matrix
from ml.models import FAMILIES
from ml.targets import Target
from ml.train import cutoff_dates, purged_before


@dataclass(frozen=True)
class Fold:
    as_of_date: str
    rows: int
    training_rows: int
    candidate: float         # the target's primary metric
    incumbent: float
    incumbent_in_sample: bool
    candidate_from_training: bool = False  # the candidate's score was measured by training on the same fold

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Backtest:
    metric: str
    incumbent_name: str      # "champion v3" or "baseline (BG/NBD)"
    folds: list[Fold] = field(default_factory=list)

    @property
    def compared(self) -> list[Fold]:
        """The folds the decision rests on: out of the incumbent's sample where there are any."""
        clean = [f for f in self.folds if not f.incumbent_in_sample]
        return clean or self.folds

    @property
    def candidate_score(self) -> float:
        return float(np.mean([f.candidate for f in self.compared]))

    @property
    def incumbent_score(self) -> float:
        return float(np.mean([f.incumbent for f in self.compared]))

    @property
    def summary(self) -> str:
        parts = [f"{f.as_of_date}: {f.candidate:.4f} vs {f.incumbent:.4f}{' (incumbent in sample)' if f.incumbent_in_sample else ''}"
                 for f in self.folds]
        used = "" if self.compared is not self.folds or not any(f.incumbent_in_sample for f in self.folds) \
            else "; every fold is in the incumbent's training data"
        return f"{len(self.compared)} of {len(self.folds)} folds compared ({'; '.join(parts)}){used}"


def refit(model, family: str, frame: pd.DataFrame, target: Target):
    """The same configuration as ``model`` (hyperparameters, features), fitted afresh on ``frame`` (a calibrated
    model's pipeline, uncalibrated: the backtest compares rankings)."""
    columns = list(model.feature_names_in_)
    fresh = clone(uncalibrated(model))
    X = to_matrix(frame, columns)
    if target.is_regression:
        return fresh.fit(X, frame[target.label].astype(float).to_numpy())
    y = frame[target.label].astype(int).to_numpy()
    if family in FAMILIES and FAMILIES[family].takes_sample_weight:
        return fresh.fit(X, y, model__sample_weight=compute_sample_weight("balanced", y))
    return fresh.fit(X, y)


def _has_both_classes(frame: pd.DataFrame, target: Target, minimum: int) -> bool:
    y = frame[target.label]
    return int((y > 0).sum()) >= minimum and int((y == 0).sum()) >= minimum


def backtest(frame: pd.DataFrame, target: Target, candidate_model, family: str, *, incumbent_model=None,
             incumbent_frame: pd.DataFrame | None = None, incumbent_name: str | None = None, incumbent_training_dates: set[str] = frozenset(),
             folds: int = 3, min_examples_per_class: int = 20, max_training_rows: int = 100_000,
             candidate_scores: dict[str, float] | None = None, purge: bool = True) -> Backtest:
    """Score the candidate (refit per fold) and the incumbent (as it is; the baseline when None) on the ``folds``
    newest closed cutoffs of ``frame`` (the training set). Folds without enough training data are skipped; the
    newest one always has them (the candidate was trained that way). ``candidate_scores`` (as-of date: primary
    metric) are folds training already measured the same way (ml.train.Candidate.fold_scores): not refitted.
    ``incumbent_frame``: the same rows (same index) as the incumbent reads them, where its inputs differ (review
    features of its own encoder); ``frame`` by default. Each fold trains on the cutoffs purged for it, as training
    does (ml.train.purged_before: label windows closed by the fold; ``purge=False``: every older cutoff)."""
    known = candidate_scores or {}
    labelled = target.select(frame[frame[target.label].notna()])
    dates = cutoff_dates(labelled)
    result = Backtest(target.primary_metric, incumbent_name or "baseline")
    for rank in dates.index[:folds]:
        test = labelled[labelled.cutoff_rank == rank]
        train = labelled[labelled.cutoff_rank.isin(purged_before(dates, dates[rank], target.horizon_days, purge))]
        if train.empty or not _has_both_classes(train, target, min_examples_per_class) \
                or not _has_both_classes(test, target, 1):
            continue
        as_of = str(test["as_of_date"].iloc[0])[:10]
        training_rows = min(len(train), max_training_rows)
        y = test[target.label].to_numpy(dtype=float)
        if as_of in known:
            candidate_metric = known[as_of]
        else:
            if len(train) > max_training_rows:
                train = train.sample(n=max_training_rows, random_state=0).sort_index()
            fitted = refit(candidate_model, family, train, target)
            candidate_metric = float(target_metrics(target.is_regression, y, predict_scores(
                fitted, to_matrix(test, list(fitted.feature_names_in_)), target.is_regression))[target.primary_metric])
        if incumbent_model is None:
            baseline_name, incumbent_scores = target.baseline(test)
            result.incumbent_name = f"baseline ({baseline_name})"
        else:
            rows = test if incumbent_frame is None else incumbent_frame.loc[test.index]
            incumbent_scores = predict_scores(incumbent_model, to_matrix(rows, list(incumbent_model.feature_names_in_)),
                                              target.is_regression)
        incumbent_metric = float(target_metrics(target.is_regression, y, incumbent_scores)[target.primary_metric])
        result.folds.append(Fold(as_of, len(test), training_rows, candidate_metric,
                                 incumbent_metric, incumbent_model is not None and as_of in incumbent_training_dates,
                                 as_of in known))
    if not result.folds:
        raise ValueError(f"{target.name}: no cutoff could be backtested (too few labelled cutoffs)")
    return result
