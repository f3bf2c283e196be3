"""The prediction targets: which label of the training set each model learns and how it is judged."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str                 # registered model name and predictions table name
    label: str                # column of marts.fct_training_set
    description: str
    primary_metric: str = "pr_auc"   # what the search and the gate compare (higher is better)
    min_positives: int = 20          # eligibility: fewer positive (or negative) examples and nothing is trained


PURCHASE_PROPENSITY_7D = Target(
    name="purchase_propensity_7d",
    label="purchase_next_7d",
    description="Probability that the user buys in the 7 days from the as-of date.",
)

TARGETS = {t.name: t for t in (PURCHASE_PROPENSITY_7D,)}
