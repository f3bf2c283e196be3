"""The recommendations target's protocol (ml/recommendations.py) on hand-made data: the truth, the folds, the
backtest and the choice."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ml.recommendations import (
    CANDIDATES,
    NAIVE,
    Fold,
    backtest,
    best,
    snapshot_cutoffs,
    summarise,
    truth_after,
)
from tests.test_recommend import _communities


def test_the_truth_is_what_users_with_history_bought_in_the_horizon_after_the_cutoff():
    cutoff = dt.date(2026, 3, 1)
    item_days = pd.DataFrame([
        ("known", "a", "2026-02-28", 1),   # before the cutoff
        ("known", "b", "2026-03-01", 1),   # on it: the first day of the horizon
        ("known", "b", "2026-03-05", 2),   # the same item again: one truth row
        ("known", "c", "2026-03-08", 1),   # the horizon's end is open
        ("known", "d", "2026-03-03", 0),   # viewed, not bought
        ("stranger", "a", "2026-03-02", 1),  # no interactions before the cutoff
    ], columns=["user_id", "item_id", "activity_date", "n_purchase"])
    interactions = pd.DataFrame({"user_id": ["known"], "item_id": ["a"]})
    truth = truth_after(item_days, cutoff, 7, interactions)
    assert truth.values.tolist() == [["known", "b"]]
    assert snapshot_cutoffs(cutoff, 14, 2) == [dt.date(2026, 2, 15), dt.date(2026, 2, 1)]


def test_the_backtest_measures_each_candidate_on_each_fold_and_the_choice_prefers_the_naive_on_a_tie():
    interactions = _communities()
    # each user next buys an item of their own group they have not bought: history cannot hit, EASE can
    bought = interactions.groupby("user_id").item_id.apply(set)
    truth = pd.DataFrame([(user, next(f"{user[0]}{i}" for i in range(1, 7) if f"{user[0]}{i}" not in items))
                          for user, items in bought.items()], columns=["user_id", "item_id"])
    folds = [Fold(dt.date(2026, 3, 1), interactions, truth), Fold(dt.date(2026, 3, 8), interactions, truth)]
    results = backtest(["popularity", "history_bought", "ease"], folds)
    assert len(results) == 6 and set(results.cutoff) == {dt.date(2026, 3, 1), dt.date(2026, 3, 8)}
    table = summarise(results).set_index("candidate")
    assert table.loc["history_bought", "recall_at_10"] == 0.0 and table.loc["history_bought", "new_item_recall_at_10"] == 0.0
    assert table.loc["ease", "recall_at_10"] == pytest.approx(1.0) and table.loc["ease", "naive"] == False
    assert best(results) == "ease" and best(results, among=NAIVE) == "popularity"
    # a tie goes to the naive candidate: a learned model must win to be chosen
    tied = results.replace({"candidate": {"ease": "item_knn"}})
    tied.loc[tied.candidate == "item_knn", "recall_at_10"] = tied.loc[tied.candidate == "popularity", "recall_at_10"].to_numpy()
    assert best(tied) == "popularity"
    assert set(NAIVE) <= set(CANDIDATES)
