"""The prediction targets: which label of the training set each model learns, who is scored, and how it is judged.

Every target goes the same way (train → register → gate → score → check); nothing is copied per target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


def recency_frequency_scores(frame: pd.DataFrame) -> np.ndarray:
    """The naive ranking a marketer would sort by without a model: the mean percentile rank of frequency (events
    in 28 days) and recency (fewer days since the last event ranks higher)."""
    frequency = frame["events_28d"].rank(pct=True)
    recency = (-frame["days_since_last_event"]).rank(pct=True)
    return ((frequency + recency) / 2).to_numpy(dtype=float)


def recency_frequency_90d_scores(frame: pd.DataFrame) -> np.ndarray:
    """The naive ranking over a quarter, for the 90-day target: frequency over 90 days, and recency."""
    frequency = frame["events_90d"].rank(pct=True)
    recency = (-frame["days_since_last_event"]).rank(pct=True)
    return ((frequency + recency) / 2).to_numpy(dtype=float)


def revenue_run_rate(frame: pd.DataFrame) -> np.ndarray:
    """The naive revenue forecast: the last 90 days' purchase revenue, scaled to 28 days."""
    return (frame["revenue_90d"].fillna(0) * 28 / 90).to_numpy(dtype=float)


def inactivity_scores(frame: pd.DataFrame) -> np.ndarray:
    """The naive churn ranking: the reverse of the recency/frequency ranking (least active first)."""
    return 1.0 - recency_frequency_scores(frame)


@dataclass(frozen=True)
class Target:
    name: str                 # registered model name and predictions table name
    label: str                # column of marts.fct_training_set
    description: str
    primary_metric: str = "pr_auc"   # what the search and the gate compare (higher is better)
    # who is trained on and scored: a condition on feature columns, valid both as SQL and as a pandas query
    # (None: everyone in the scoring population)
    population: str | None = None
    naive_scores: Callable[[pd.DataFrame], np.ndarray] = recency_frequency_scores
    naive_name: str = "recency/frequency"
    # BG/NBD's prediction of this target (a column of predictions.clv): the baseline a candidate must beat where
    # it exists for every validation row; the naive ranking otherwise
    clv_column: str | None = None
    clv_reverse: bool = False        # churn: 1 - P(purchase in 7 days)
    kind: str = "classification"     # or "regression" (an amount)
    score_column: str = "probability"  # the column of predictions.<name>
    horizon_days: int = 7            # the label window after the as-of date (fct_user_labels.sql)
    short_name: str = ""             # the column prefix in audiences.user_scores_latest (purchase_probability ...)

    def baseline(self, frame: pd.DataFrame) -> tuple[str, np.ndarray]:
        """(name, scores) of the baseline on ``frame``: BG/NBD where fitted for every row, else the naive one."""
        column = self.clv_column
        if column and column in frame.columns and len(frame) and frame[column].notna().all():
            values = frame[column].to_numpy(dtype=float)
            return "BG/NBD", (1.0 - values) if self.clv_reverse else values
        return self.naive_name, self.naive_scores(frame)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def score_bounds_sql(self) -> str:
        """A SQL condition every published score meets."""
        column = self.score_column
        return f"{column} >= 0" if self.is_regression else f"{column} between 0 and 1"

    def select(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.query(self.population) if self.population else frame

    @property
    def population_sql(self) -> str:
        return self.population or "true"


@dataclass(frozen=True)
class Eligibility:
    """When a target may be published (GA4 has the same kind of rule): enough examples of each class to learn
    from, and a candidate good enough to act on. Otherwise nothing is promoted and the previous champion stays."""

    min_examples_per_class: int = 1000    # in the training cutoffs; the validation cutoff needs a tenth of it
    min_roc_auc: float = 0.6
    # PR-AUC over the base rate, as a skill score: (PR-AUC - base rate) / (1 - base rate). A random ranking scores
    # 0, a perfect one 1. Unlike a ratio it works for rare (GA: 0.2 %) and common (Taobao: 64 %) outcomes alike.
    min_pr_auc_skill: float = 0.05
    min_normalized_gini: float = 0.2  # amounts (revenue): how well the prediction orders what users then spent
    # probabilities are summed by their users: expected over observed positives on the validation cutoff
    min_expected_over_observed: float = 0.8
    max_expected_over_observed: float = 1.25

    def quality_problems(self, metrics: dict) -> list[str]:
        if "normalized_gini" in metrics:
            gini = metrics["normalized_gini"]
            return [] if gini >= self.min_normalized_gini else [
                f"normalized Gini {gini:.3f} < {self.min_normalized_gini}"]
        problems = []
        if metrics["roc_auc"] < self.min_roc_auc:
            problems.append(f"ROC-AUC {metrics['roc_auc']:.3f} < {self.min_roc_auc}")
        base = metrics["base_rate"]
        skill = (metrics["pr_auc"] - base) / (1 - base) if base < 1 else 0.0
        if skill < self.min_pr_auc_skill:
            problems.append(f"PR-AUC {metrics['pr_auc']:.3f} is {skill:.3f} of the way from the base rate "
                            f"{base:.3f} to 1 (< {self.min_pr_auc_skill})")
        ratio = metrics.get("expected_over_observed")
        if ratio is not None and not self.min_expected_over_observed <= ratio <= self.max_expected_over_observed:
            problems.append(f"expected/observed positives {ratio:.2f} outside [{self.min_expected_over_observed}, "
                            f"{self.max_expected_over_observed}] (the probabilities do not add up)")
        return problems


PURCHASE_PROPENSITY_7D = Target(
    name="purchase_propensity_7d",
    label="purchase_next_7d",
    description="Probability that the user buys in the 7 days from the as-of date (GA4's purchase probability).",
    clv_column="clv_p_purchase_7d",
    short_name="purchase",
)

CHURN_PROBABILITY_7D = Target(
    name="churn_probability_7d",
    label="churn_next_7d",
    description="Probability that a user active in the last 7 days is not active in the next 7 (GA4's churn "
                "probability).",
    population="events_7d > 0",
    # BG/NBD models purchases, not visits: its P(no purchase in 7 days) is the closest churn score it has
    # (P(alive) is ~1 for everyone active last week, so it does not rank them)
    clv_column="clv_p_purchase_7d",
    clv_reverse=True,
    naive_scores=inactivity_scores,
    naive_name="inactivity (reverse recency/frequency)",
    short_name="churn",
)

PREDICTED_REVENUE_28D = Target(
    name="predicted_revenue_28d",
    label="revenue_next_28d",
    description="Expected purchase revenue of the user in the 28 days from the as-of date (GA4's predicted "
                "revenue): P(buys) x E[revenue | buys].",
    primary_metric="normalized_gini",
    clv_column="clv_expected_revenue_28d",
    naive_scores=revenue_run_rate,
    naive_name="90-day revenue run rate",
    kind="regression",
    score_column="predicted_revenue",
    horizon_days=28,
    short_name="revenue",
)

PURCHASE_PROPENSITY_90D = Target(
    name="purchase_propensity_90d",
    label="purchase_next_90d",
    description="Probability that the user buys in the 90 days from the as-of date, for shops whose customers buy a "
                "few times a year (a week holds too few buyers to learn from: the Amazon review sample).",
    naive_scores=recency_frequency_90d_scores,
    naive_name="recency/frequency over 90 days",
    horizon_days=90,
    short_name="purchase_90d",
)

# The target registry. Every target goes the same way; dbt (vars), training, scoring, serving, monitoring, audiences
# and status derive from a home's set: the default targets, plus the optional ones its extra_targets setting names
# (dagster_project/targets.py). TARGETS is the default set.
TARGETS = {t.name: t for t in (PURCHASE_PROPENSITY_7D, CHURN_PROBABILITY_7D, PREDICTED_REVENUE_28D)}
OPTIONAL_TARGETS = {t.name: t for t in (PURCHASE_PROPENSITY_90D,)}
ALL_TARGETS = {**TARGETS, **OPTIONAL_TARGETS}
LABELS = frozenset(t.label for t in ALL_TARGETS.values())
# The recommendations target (ml/recommendations.py): its registered model, one model serving both lists (new_items
# is its cross-sell list). Named here, apart from the recommenders' heavy imports, for readers such as the status.
RECOMMENDATIONS_MODEL = "next_items"


def enabled_targets(extra: list[str] | tuple[str, ...] = ()) -> dict[str, Target]:
    """The default targets and the optional ones named in ``extra``."""
    unknown = sorted(set(extra) - set(OPTIONAL_TARGETS))
    if unknown:
        raise ValueError(f"unknown optional target(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(OPTIONAL_TARGETS)}")
    return {**TARGETS, **{name: OPTIONAL_TARGETS[name] for name in OPTIONAL_TARGETS if name in extra}}


def label_horizon_days(targets: dict[str, Target]) -> int:
    """The newest training cutoff is this many days before the as-of date: the longest label window of the
    classification targets, so that every class label of cutoff 1 has closed (the revenue label may still be open:
    NULL, and that target trains on the older cutoffs)."""
    return max(t.horizon_days for t in targets.values() if not t.is_regression)


LABEL_HORIZON_DAYS = label_horizon_days(TARGETS)  # of the default set


def dbt_vars(targets: dict[str, Target] | None = None) -> dict:
    """What dbt learns of a home's targets (default: the default set): one entry each (name, label, score column,
    horizon), every registered label's horizon as ``<short name>_horizon_days`` (read by fct_user_labels.sql, which
    computes every label), and the training cutoffs' label horizon."""
    targets = targets or TARGETS
    return {
        "targets": [{"name": t.name, "label": t.label, "score_column": t.score_column, "horizon_days": t.horizon_days,
                     "short_name": t.short_name} for t in targets.values()],
        **{f"{t.short_name}_horizon_days": t.horizon_days for t in ALL_TARGETS.values()},
        "label_horizon_days": label_horizon_days(targets),
    }
