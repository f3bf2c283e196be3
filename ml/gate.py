"""The promotion gate, in three steps kept apart: measure, decide, apply.

- ``backtest_candidate`` measures: the candidate (refit per fold) against the current champion as it is, or the
  target's baseline when there is none, on the last N closed cutoffs (ml/backtest.py).
- ``decide`` decides, and only decides: a pure function of the backtest, the margin and the quality floor. The
  candidate becomes ``champion`` only if it meets the floor and beats the incumbent's mean by more than the margin
  (a tie keeps the incumbent); otherwise ``challenger``, and the champion (if any) keeps scoring.
- ``apply`` carries the decision out in the registry: the alias moves, the decision and its reason become tags of
  the candidate version. (The pipeline also appends it to monitoring.model_decisions.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import mlflow
import pandas as pd

from ml.backtest import Backtest, backtest
from ml.models import FAMILIES
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    RegisteredModel,
    Store,
    load_by_alias,
    load_version,
    run_tags,
    set_alias,
    tag_version,
    training_dates,
    version_by_alias,
)
from ml.targets import ALL_TARGETS, Target


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
    folds: list[dict] = field(default_factory=list)  # the backtest's folds the decision rests on

    def as_tags(self) -> dict:
        return {f"gate_{k}": json.dumps(v) if k == "folds" else v for k, v in asdict(self).items()}


def register(store: Store, target: Target, run_id: str, tags: dict) -> RegisteredModel:
    store.activate()
    mv = mlflow.register_model(f"runs:/{run_id}/model", target.name, tags={k: str(v) for k, v in tags.items()})
    return RegisteredModel(target.name, str(mv.version), run_id, dict(tags))


def champions_reading_tokens(store: Store) -> list[str]:
    """The classification targets whose champion reads sequence tokens. The gate backtests a champion as it is, on
    the training frame, so their tokens are needed even when a retrain no longer names the sequence family."""
    reading = []
    for name in (name for name, target in ALL_TARGETS.items() if not target.is_regression):
        entry = version_by_alias(store, name, CHAMPION)
        # the family of the training run (a version registered by hand carries no tags of its own)
        family = FAMILIES.get(run_tags(store, entry).get("family", "")) if entry is not None else None
        if family is not None and "sequence" in family.feature_sets:
            reading.append(name)
    return reading


def backtest_candidate(store: Store, target: Target, candidate: RegisteredModel, frame: pd.DataFrame, *,
                       folds: int, min_examples_per_class: int, max_training_rows: int, purge: bool = True,
                       frame_for: Callable[[RegisteredModel, object, pd.DataFrame], pd.DataFrame] | None = None
                       ) -> Backtest:
    """The candidate (its configuration refit per fold; folds training measured are reused from the version's
    ``fold_scores`` tag) against the champion as it is, or the baseline, on the last ``folds`` closed cutoffs of
    ``frame`` (the training sample). ``frame_for(version, model, frame)``: the rows with what that version reads
    beyond them (its own review features, computed by its own fitted encoder); the rows as they are by default."""
    rows_for = frame_for or (lambda entry, model, rows: rows)
    incumbent, name, trained_on, incumbent_frame = None, None, set(), None
    entry = version_by_alias(store, target.name, CHAMPION)
    if entry is not None:
        incumbent, entry = load_by_alias(store, target.name, CHAMPION)
        name = f"champion v{entry.version}"
        trained_on = training_dates(store, entry)
        incumbent_frame = rows_for(entry, incumbent, frame)
    candidate_model = load_version(store, candidate)
    return backtest(rows_for(candidate, candidate_model, frame), target, candidate_model, candidate.tags["family"],
                    incumbent_model=incumbent, incumbent_frame=incumbent_frame, incumbent_name=name,
                    incumbent_training_dates=trained_on, folds=folds,
                    min_examples_per_class=min_examples_per_class, max_training_rows=max_training_rows,
                    candidate_scores=json.loads(candidate.tags.get("fold_scores", "{}")), purge=purge)


def decide(target: Target, candidate_version: str, tested: Backtest, margin: float,
           quality_problems: list[str] | tuple[str, ...] = ()) -> GateDecision:
    """The decision on a candidate, from its backtest alone: nothing is read or written."""
    metric = target.primary_metric
    name, score, candidate_score = tested.incumbent_name, tested.incumbent_score, tested.candidate_score
    beats = candidate_score > score + margin  # a tie keeps the incumbent: no churn of versions for nothing
    promoted = beats and not quality_problems
    comparison = (f"{metric} {candidate_score:.4f} vs {name} {score:.4f} (margin {margin}), mean over the backtest: "
                  f"{tested.summary}")
    if promoted:
        reason = f"promoted: beats {name} on the same data: {comparison}"
    elif quality_problems:
        reason = f"not published: below the quality floor ({'; '.join(quality_problems)}); {comparison}"
    else:
        reason = f"kept as challenger: does not beat {name} by the margin: {comparison}"
    return GateDecision(target.name, candidate_version, promoted, CHAMPION if promoted else CHALLENGER, metric,
                        float(candidate_score), name, float(score), margin, reason,
                        [f.as_dict() for f in tested.folds])


def apply(store: Store, decision: GateDecision, description: str | None = None) -> None:
    """Carry a decision out: the candidate version gets its alias and the decision's tags (``gate_reason``...), and
    is described by the decision's reason; the registered model by ``description`` (a target's by default)."""
    set_alias(store, decision.target, decision.alias, decision.candidate_version)
    tag_version(store, decision.target, decision.candidate_version, decision.as_tags())
    entry = RegisteredModel(decision.target, decision.candidate_version, "", {})
    store.describe(entry, description or model_description(ALL_TARGETS[decision.target], decision.margin),
                   f"{decision.alias}: {decision.reason}")


def model_description(target: Target, margin: float) -> str:
    """What a target's registered model is, for the registry's page: the prediction, who is scored, the metric and
    the rule that moves ``champion``."""
    who = f"users active in the scoring window with {target.population}" if target.population else \
        "every user active in the scoring window"
    return (f"{target.description}\n\nScored for: {who}, daily, into predictions.{target.name}.\n"
            f"Compared on: {target.primary_metric}, on time-based cutoffs (label windows closed).\n"
            f"Gate: a new version becomes @{CHAMPION} only if it meets the quality floor and its mean "
            f"{target.primary_metric} over the backtest's cutoffs beats the current champion's (the baseline's, "
            f"{target.naive_name} or BG/NBD, for the first) by more than {margin}; otherwise it is @{CHALLENGER}.")
