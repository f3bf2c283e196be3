"""The promotion gate: the candidate becomes `champion` only if it meets the target's quality floor and beats
the current champion on the same data by a margin; a first model only if it beats the target's baseline. The data
are the backtest's folds (ml/backtest.py: the last N closed cutoffs) when one is given, the validation cutoff
otherwise. Otherwise it becomes `challenger` and the champion (if any) keeps scoring. The decision and its reason
are recorded on the model version (and by the pipeline in monitoring.model_decisions)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import mlflow
import numpy as np
import pandas as pd

from ml.backtest import Backtest
from ml.evaluate import predict_scores, target_metrics
from ml.features import to_matrix
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    RegisteredModel,
    Store,
    load_by_alias,
    set_alias,
    tag_version,
    version_by_alias,
)
from ml.targets import Target


@dataclass(frozen=True)
class GateDecision:
    target: str
    candidate_version: str
    promoted: bool
    alias: str
    metric: str
    candidate_score: float
    incumbent: str           # "champion v3" or "baseline"
    incumbent_score: float
    margin: float
    reason: str
    folds: list[dict] = field(default_factory=list)  # the backtest's folds (empty: the validation cutoff alone)

    def as_tags(self) -> dict:
        return {f"gate_{k}": json.dumps(v) if k == "folds" else v for k, v in asdict(self).items()}


def register(store: Store, target: Target, run_id: str, tags: dict) -> RegisteredModel:
    store.activate()
    mv = mlflow.register_model(f"runs:/{run_id}/model", target.name, tags={k: str(v) for k, v in tags.items()})
    return RegisteredModel(target.name, str(mv.version), run_id, dict(tags))


def champion_scores(store: Store, target: Target, valid: pd.DataFrame) -> tuple[RegisteredModel, np.ndarray] | None:
    """The current champion's probabilities on ``valid``, or None when there is no champion yet."""
    if version_by_alias(store, target.name, CHAMPION) is None:
        return None
    model, entry = load_by_alias(store, target.name, CHAMPION)
    columns = list(model.feature_names_in_)
    return entry, predict_scores(model, to_matrix(valid, columns), target.is_regression)


def decide(store: Store, target: Target, candidate: RegisteredModel, candidate_metrics: dict,
           valid: pd.DataFrame, margin: float, quality_problems: list[str] | None = None,
           backtest: Backtest | None = None) -> GateDecision:
    """Compare, move the alias, record the decision on the candidate version, and return it."""
    metric = target.primary_metric
    folds = []
    if backtest is not None:
        name, score, candidate_score = backtest.incumbent_name, backtest.incumbent_score, backtest.candidate_score
        folds = [f.as_dict() for f in backtest.folds]
        where = f"mean over the backtest: {backtest.summary}"
    else:
        y = valid[target.label].to_numpy(dtype=float)
        incumbent = champion_scores(store, target, valid)
        if incumbent is None:
            baseline_name, scores = target.baseline(valid)
            name = f"baseline ({baseline_name})"
        else:
            entry, scores = incumbent
            name = f"champion v{entry.version}"
        score = target_metrics(target.is_regression, y, scores)[metric]
        candidate_score = candidate_metrics[metric]
        where = "on the validation cutoff"
    beats = candidate_score > score + margin  # a tie keeps the incumbent: no churn of versions for nothing
    promoted = beats and not quality_problems
    comparison = f"{metric} {candidate_score:.4f} vs {name} {score:.4f} (margin {margin}), {where}"
    if promoted:
        reason = f"promoted: beats {name} on the same data: {comparison}"
    elif quality_problems:
        reason = f"not published: below the quality floor ({'; '.join(quality_problems)}); {comparison}"
    else:
        reason = f"kept as challenger: does not beat {name} by the margin: {comparison}"
    alias = CHAMPION if promoted else CHALLENGER
    set_alias(store, target.name, alias, candidate.version)
    decision = GateDecision(target.name, candidate.version, promoted, alias, metric, float(candidate_score), name,
                            float(score), margin, reason, folds)
    tag_version(store, target.name, candidate.version, decision.as_tags())
    return decision
