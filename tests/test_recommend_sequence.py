"""The sequence recommender (ml/recommend_sequence.py) on hand-made interactions whose next item lies in their order."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from ml.recommend import ALS, ItemKNN
from ml.recommend_sequence import GRU4Rec
from ml.sequences import torch_missing

needs_torch = pytest.mark.skipif(torch_missing() is not None, reason=str(torch_missing()))


def _chains(users: int, seed: int, chain: int = 12) -> tuple[pd.DataFrame, pd.Series]:
    """Users walking along one of three chains of items (c0 -> c1 -> ... -> c11) a step a day: each has a stretch of
    3 to 6 consecutive items (the newest a day ago); their next item is the chain's following one. Which items a user
    has is symmetric around their stretch: only the order tells the next item from the previous."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for u in range(users):
        name = "abc"[u % 3]
        length = int(rng.integers(3, 7))
        start = int(rng.integers(0, chain - length))
        for step in range(length):
            rows.append((f"u{u}", f"{name}{start + step}", name, 1, 0, 0, length - step))
        truth[f"u{u}"] = f"{name}{start + length}"
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "views", "carts", "purchases",
                                        "days_since_last"])
    return frame.assign(weight=frame.views.astype(float)), pd.Series(truth)


def test_the_sequences_hold_each_users_items_oldest_first_and_the_newest_last():
    interactions, _ = _chains(6, 0)
    model = GRU4Rec(length=4)
    model._keep_popular = lambda catalogue: setattr(model, "kept_", None)  # the order alone, no network
    from ml.recommend import Catalogue

    catalogue = Catalogue.from_interactions(interactions)
    model.token_ = np.arange(1, len(catalogue.items) + 1)
    sequences = model.sequences(catalogue.fitted, np.arange(len(catalogue.users)))
    for row, user in enumerate(catalogue.users):
        mine = interactions[interactions.user_id == user].sort_values("days_since_last", ascending=False)
        expected = [catalogue.items.get_loc(i) + 1 for i in mine.item_id][-4:]
        assert list(sequences[row][sequences[row] > 0]) == expected  # left-padded, the newest at the end
        assert (sequences[row][:4 - len(expected)] == 0).all()


@needs_torch
def test_the_gru_recommends_the_next_item_of_the_order_where_co_occurrence_cannot_tell_it():
    train, _ = _chains(900, 0)
    model = GRU4Rec(factors=32, length=8, epochs=15).fit(train)
    test, truth = _chains(300, 1)
    recs = model.recommend(test.user_id.unique(), k=1, interactions=test)  # users the fit never saw: from their rows
    hit = (recs.set_index("user_id").item_id == truth.reindex(recs.user_id).to_numpy()).mean()
    baselines = {m.name: m.fit(train).recommend(test.user_id.unique(), k=1, interactions=test)
                 for m in (ItemKNN(), ALS(factors=16, iterations=15))}
    baseline_hits = {name: (r.set_index("user_id").item_id == truth.reindex(r.user_id).to_numpy()).mean()
                     for name, r in baselines.items()}
    assert hit > 0.8 and hit > max(baseline_hits.values()) + 0.2, (hit, baseline_hits)
    assert recs.reason.str.startswith("similar to").all()
    # saved as plain arrays (no torch module): the same lists once loaded
    loaded = pickle.loads(pickle.dumps(model))
    assert "_network_cache" not in vars(loaded)
    pd.testing.assert_frame_equal(loaded.recommend(test.user_id.unique(), k=3, interactions=test),
                                  model.recommend(test.user_id.unique(), k=3, interactions=test))


@needs_torch
def test_the_gru_stops_its_epochs_within_its_time():
    train, _ = _chains(300, 0)
    assert GRU4Rec(factors=8, epochs=50, max_seconds=0.0).fit(train).epochs_trained_ == 0
    assert GRU4Rec(factors=8, epochs=2).fit(train).epochs_trained_ == 2
