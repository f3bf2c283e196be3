"""What the sequence family is for (issue 24): on generated data whose signal lies in the order of events (a cart
swap is followed by a purchase, the same events in the other order are not: tests/test_generator.py), the GRU beats
the best aggregate-only family on the purchase target's backtest folds; on the same shop without that behaviour it
gains nothing. Built the way a run builds it (the training sample, the BG/NBD outputs and the cutoffs' sequences
materialized by Dagster), then searched with ml.train as the candidates asset does. Needs the deep extra."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TARGET = "purchase_propensity_7d"
AS_OF = dt.date(2026, 3, 2)
# a shop large enough that the swaps just before a cutoff (whose return falls in the week after it) are some sixty
# buyers per fold; five weekly cutoffs: three to fit on, the tuning cutoff, the validation cutoff
SHOP = {"n_events": 300_000, "seed": 11, "days": 90, "end_date": AS_OF}
# The GRU against the strongest aggregate-only family on the same aggregated features (the behaviour set, which the
# sequence set extends with the tokens): the logistic regression. Gradient boosting was searched too when these
# thresholds were set, and ranked below it with the behaviour on and off (PR-AUC 0.687 / 0.573 against 0.690 /
# 0.582): left out here, to keep the test's time down.
ENV = {"SHOPCAST_TRAINING_CUTOFFS": "5", "SHOPCAST_MODEL_FAMILIES": "logistic_regression,gru",
       "SHOPCAST_FEATURE_SETS": "behaviour,sequence", "SHOPCAST_TRAINING_BUDGET_SECONDS": "600"}


def _fold_scores(paths, monkeypatch, order_signal: bool) -> dict[str, float]:
    """Each candidate's PR-AUC averaged over the backtest's two newest folds (tuning and validation cutoffs, each
    fitted on the cutoffs before it), by family. ``paths``: the `home` fixture's empty home."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)

    import dagster as dg

    from dagster_project import runs
    from dagster_project.asset_keys import candidates_key
    from dagster_project.defs.resources import build_resources
    from dagster_project.defs.training import TRAINING_SEQUENCES, _training_frame
    from dagster_project.generate.synthetic import GeneratorConfig, generate
    from dagster_project.settings import load_settings
    from ml.targets import TARGETS
    from ml.train import train_candidates
    from tests.support import materialize

    generate(GeneratorConfig(**SHOP, order_signal=order_signal), paths.landing / "canonical")
    runs.ingest("canonical", [str(paths.landing / "canonical")])
    materialize((dg.AssetSelection.assets(candidates_key(TARGET)).upstream() - dg.AssetSelection.groups("ingest")
                 - dg.AssetSelection.assets(candidates_key(TARGET))) | dg.AssetSelection.assets(TRAINING_SEQUENCES),
                AS_OF)
    resources = build_resources(load_settings())
    policy, store = resources["training_policy"], resources["mlflow"].store()
    store.activate()
    outcome = train_candidates(_training_frame(resources["warehouse"], TARGETS[TARGET]), TARGETS[TARGET], store,
                               families=policy.family_list, feature_set_names=policy.feature_set_list,
                               eligibility=policy.eligibility(), budget_seconds=policy.budget_seconds)
    scores: dict[str, float] = {}
    for candidate in outcome.candidates:
        assert len(candidate.fold_scores) == 2, candidate.fold_scores
        scores[candidate.name] = float(np.mean(list(candidate.fold_scores.values())))
    return scores


def _gain(scores: dict[str, float]) -> float:
    aggregate = max(v for k, v in scores.items() if not k.startswith("gru"))
    return scores["gru (sequence)"] - aggregate


# Measured when these were set (two-fold mean PR-AUC): with the behaviour, the GRU 0.705 against the logistic
# regression's 0.690 (+0.016); without it,
# 0.580 against 0.582 (-0.001).
def test_the_gru_beats_the_aggregate_families_where_the_signal_lies_in_the_order_of_events(home, monkeypatch):
    pytest.importorskip("torch", reason="the sequence family needs the deep extra (PyTorch)")
    scores = _fold_scores(home, monkeypatch, order_signal=True)
    assert _gain(scores) > 0.008, scores


def test_without_the_order_behaviour_the_gru_gains_nothing(home, monkeypatch):
    pytest.importorskip("torch", reason="the sequence family needs the deep extra (PyTorch)")
    scores = _fold_scores(home, monkeypatch, order_signal=False)
    assert _gain(scores) < 0.005, scores
