"""The sequence encoder and the GRU family (issue 24). The network tests need the deep extra (PyTorch)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.sequences import (
    EVENT_CODES,
    GRUClassifier,
    encode,
    event_counts,
    occlusion_effects,
    token_column,
    torch_missing,
)

needs_torch = pytest.mark.skipif(torch_missing() is not None, reason=str(torch_missing()))
DAY = dt.date(2026, 3, 1)


def _events(*rows):
    """(user, position, event_type, item, seconds_since_previous, opens_session) at DAY."""
    return pd.DataFrame([{"as_of_date": DAY, "user_id": u, "position": p, "event_type": t, "item_id": i,
                          "category_id": "c1" if i else None, "price": 10.0, "price_bucket": 4,
                          "seconds_since_previous": gap, "opens_session": opens}
                         for u, p, t, i, gap, opens in rows])


def test_encode_puts_each_event_at_its_position_and_pads_the_rest():
    events = _events(("u1", 1, "purchase", "i1", 30, False), ("u1", 2, "cart", "i1", None, True),
                     ("u2", 1, "view", "i2", 3600, True))
    keys = pd.DataFrame({"user_id": ["u2", "u1", "u3"], "as_of_date": [DAY] * 3})
    tokens = encode(events, keys, length=3)
    assert list(tokens.index) == [0, 1, 2] and tokens.shape == (3, 18)
    u1 = tokens.iloc[1]
    assert u1[token_column("event", 1)] == EVENT_CODES["purchase"] and u1[token_column("event", 2)] == EVENT_CODES["cart"]
    assert u1[token_column("event", 3)] == 0 and u1[token_column("item", 3)] == 0  # padding
    assert u1[token_column("item", 1)] == u1[token_column("item", 2)] > 0  # the same item, the same bucket
    assert u1[token_column("gap", 2)] == 1 and u1[token_column("gap", 1)] == 2 + int(np.log2(31))  # first event: 1
    assert u1[token_column("session", 2)] == 2 and u1[token_column("session", 1)] == 1
    assert (tokens.iloc[2] == 0).all()  # no events: padding only
    assert tokens.iloc[0][token_column("category", 1)] > 0
    with pytest.raises(ValueError, match="does not know: teleport"):
        encode(_events(("u1", 1, "teleport", "i1", 1, True)), keys, length=3)
    with pytest.raises(ValueError, match="repeat"):
        encode(events, pd.concat([keys, keys]), length=3)


def _ordered(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose label is the order of their last two events (cart then remove: 0; remove then cart: 1), with
    the same counts either way and an aggregated feature that is noise."""
    rng = np.random.default_rng(seed)
    swap = rng.random(n) < 0.5
    rows = []
    for u in range(n):
        last = ("remove_from_cart", "cart") if swap[u] else ("cart", "remove_from_cart")
        history = [*rng.choice(["view", "cart"], size=int(rng.integers(1, 6))), "cart", *last]
        for position, kind in enumerate(reversed(history), start=1):
            rows.append((f"u{u}", position, kind, f"i{rng.integers(0, 20)}", 60, position == len(history)))
    keys = pd.DataFrame({"user_id": [f"u{u}" for u in range(n)], "as_of_date": [DAY] * n})
    X = pd.concat([pd.DataFrame({"events_7d": rng.poisson(5, n).astype(float)}),
                   encode(_events(*rows), keys, length=10)], axis=1)
    return X, swap.astype(int)


@needs_torch
def test_the_gru_learns_an_order_that_counts_cannot_see_and_stops_early_on_the_eval_set():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X, y = _ordered(1200, 0)
    X_eval, y_eval = _ordered(400, 1)
    X_test, y_test = _ordered(400, 2)
    model = GRUClassifier(hidden_size=16, epochs=25, patience=3).fit(X, y, eval_set=(X_eval, y_eval))
    # the kept epoch is the eval set's best (history_[0]: the linear model it starts from), and training stopped
    # `patience` epochs after it (before the 25)
    assert model.best_epochs_ == int(np.argmin(model.history_)) > 0
    assert len(model.history_) == 1 + min(25, model.best_epochs_ + 3)
    assert roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]) > 0.95
    # the counts of each event type are the same for both orders: a model on them is at chance
    counts = pd.DataFrame({code: (X_test.filter(like="seq_event_") == value).sum(axis=1)
                           for code, value in EVENT_CODES.items()})
    train_counts = pd.DataFrame({code: (X.filter(like="seq_event_") == value).sum(axis=1)
                                 for code, value in EVENT_CODES.items()})
    counted = LogisticRegression().fit(train_counts, y).predict_proba(counts)[:, 1]
    assert roc_auc_score(y_test, counted) < 0.6
    # a refit for a fixed number of epochs (the published model) is reproducible
    again = GRUClassifier(hidden_size=16, epochs=model.best_epochs_).fit(X, y)
    same = GRUClassifier(hidden_size=16, epochs=model.best_epochs_).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X_test), same.predict_proba(X_test))


@needs_torch
def test_the_gru_starts_from_the_logistic_regression_on_its_features_and_keeps_it_where_the_order_adds_nothing():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    X, _ = _ordered(600, 0)
    rng = np.random.default_rng(3)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-(X.events_7d - 5)))).astype(int)  # the count alone decides
    untrained = GRUClassifier(hidden_size=8, epochs=0).fit(X, y)
    linear = LogisticRegression(C=0.05, max_iter=1000).fit(untrained.standardised(X), y)
    np.testing.assert_allclose(untrained.predict_proba(X)[:, 1],
                               linear.predict_proba(untrained.standardised(X))[:, 1], atol=1e-5)
    # with an eval set the kept model is never worse on it than that start (history_[0])
    X_eval, _ = _ordered(300, 1)
    y_eval = (rng.random(len(X_eval)) < 1 / (1 + np.exp(-(X_eval.events_7d - 5)))).astype(int)
    stopped = GRUClassifier(hidden_size=8, epochs=20, patience=2).fit(X, y, eval_set=(X_eval, y_eval))
    kept = log_loss(y_eval, stopped.predict_proba(X_eval)[:, 1])
    assert kept == pytest.approx(min(stopped.history_), abs=1e-5) and kept <= stopped.history_[0]


@needs_torch
def test_the_gru_stops_its_epochs_within_its_time_and_keeps_the_best_so_far():
    X, y = _ordered(600, 0)
    X_eval, y_eval = _ordered(200, 1)
    # no time left after the linear start: no epoch begins, the model is that start (epoch 0)
    capped = GRUClassifier(hidden_size=8, epochs=25, max_seconds=0.0).fit(X, y, eval_set=(X_eval, y_eval))
    assert capped.stopped_for_time_ and capped.best_epochs_ == 0 and len(capped.history_) == 1
    linear = GRUClassifier(hidden_size=8, epochs=0).fit(X, y)
    np.testing.assert_allclose(capped.predict_proba(X_eval), linear.predict_proba(X_eval), atol=1e-6)
    # half the time all 25 epochs take: it stops before them (and before patience would), keeping its best epoch
    import time

    started = time.perf_counter()
    GRUClassifier(hidden_size=8, epochs=25, patience=25).fit(X, y, eval_set=(X_eval, y_eval))
    whole = time.perf_counter() - started
    some = GRUClassifier(hidden_size=8, epochs=25, patience=25, max_seconds=whole / 2).fit(
        X, y, eval_set=(X_eval, y_eval))
    assert some.stopped_for_time_ and len(some.history_) - 1 < 25
    assert some.best_epochs_ == int(np.argmin(some.history_))


@needs_torch
def test_the_search_gives_the_gru_the_budget_left_for_its_refit_and_cross_fits():
    """Out of budget, the GRU's first configuration trains no epoch (its refit and cross-fits then train none):
    the budget holds for it as for the families whose first configuration is one fit."""
    from ml.models import FAMILIES
    from ml.targets import PURCHASE_PROPENSITY_7D
    from ml.train import search, time_split

    frames = []
    for rank in range(1, 5):
        X, y = _ordered(300, rank)
        frames.append(X.assign(cutoff_rank=rank, user_id=[f"u{i}" for i in range(len(X))],
                               as_of_date=pd.Timestamp("2026-10-25") - pd.Timedelta(days=7 * (rank - 1)),
                               purchase_next_7d=y))
    frame = pd.concat(frames, ignore_index=True)
    split = time_split(frame, PURCHASE_PROPENSITY_7D, min_examples_per_class=20)
    columns = [c for c in frame.columns if c == "events_7d" or c.startswith("seq_")]
    out_of_time = search(FAMILIES["gru"], split, "sequence", columns, PURCHASE_PROPENSITY_7D, budget_seconds=0)
    assert out_of_time.params["epochs"] == 0 and "max_seconds" not in out_of_time.params
    assert out_of_time.model.model[-1].epochs == 0  # the published refit, inside its calibration


@needs_torch
def test_the_gru_saves_as_plain_arrays_and_its_reasons_name_the_events_that_raised_the_score(tmp_path):
    import pickle

    X, y = _ordered(800, 0)
    model = GRUClassifier(hidden_size=16, epochs=15).fit(X, y)
    X_test, _ = _ordered(50, 3)
    expected = model.predict_proba(X_test)
    state = model.__getstate__()
    assert all(isinstance(v, np.ndarray) for v in state["weights_"].values())
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(loaded.predict_proba(X_test), expected, rtol=1e-6)
    effects = occlusion_effects(lambda frame: model.predict_proba(frame)[:, 1], X_test)
    counts = event_counts(X_test)
    assert list(effects.index) == list(X_test.index) and list(effects.columns) == list(counts.columns)
    assert (effects[counts == 0].fillna(0) == 0).all().all()  # nothing to remove, no effect
    # a swap (remove then cart: label 1) owes its score to the cart after the removal: without its carts the
    # sequence ends on the removal, as a drop does
    swaps = X_test[token_column("event", 2)] == EVENT_CODES["remove_from_cart"]
    assert effects.loc[swaps, "recent_cart_events"].mean() > 0.2
    assert effects.loc[swaps, "recent_cart_events"].mean() > effects.loc[~swaps, "recent_cart_events"].mean() + 0.2


def test_without_pytorch_the_reason_says_how_to_add_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert "make install DEEP=1" in torch_missing()
    X, y = _ordered(20, 0)
    with pytest.raises(RuntimeError, match="deep extra"):
        GRUClassifier().fit(X, y)


@needs_torch
def test_feature_effects_of_the_gru_run_it_once_and_equal_predicting_each_changed_row(monkeypatch):
    """ml/explain moves one aggregated feature through the GRU's linear output layer (the sequence state computed
    once): the same effects as predicting every changed row through the network, calibrated or not."""
    from sklearn.pipeline import Pipeline

    from ml import explain
    from ml.calibration import calibrate

    X, y = _ordered(600, 0)
    X["carts_28d"] = X["events_7d"] * (1 + y)  # a feature the label moves
    model = Pipeline([("model", GRUClassifier(hidden_size=16, epochs=8))]).fit(X, y)
    calibrated, _ = calibrate(model, model.predict_proba(X)[:, 1], y, min_isotonic_positives=10**9)
    X_test = X.head(120)
    for published in (model, calibrated):
        assert explain._TransformedForm.of(published) is not None
        fast = explain.effects(published, X_test, False)
        with monkeypatch.context() as patched:
            patched.setattr(explain._TransformedForm, "of", classmethod(lambda cls, m: None))
            slow = explain.effects(published, X_test, False)
        assert list(fast.columns) == ["events_7d", "carts_28d", *[f"recent_{t}_events" for t in EVENT_CODES]]
        np.testing.assert_allclose(fast.to_numpy(), slow.to_numpy(), atol=1e-6)


@needs_torch
def test_the_gru_keeps_the_sequence_states_of_the_last_rows_and_predicts_as_the_network_does():
    """Moving an aggregated feature of the same rows reuses the GRU's states (what importances and reasons do
    many times): the scores equal a fresh copy's and the network's own forward pass; new tokens or a new fit
    compute them anew."""
    import pickle

    import torch

    X, y = _ordered(400, 0)
    model = GRUClassifier(hidden_size=16, epochs=5).fit(X, y)
    model.decision_function(X)
    moved = X.assign(events_7d=X["events_7d"] * 3)
    fresh = pickle.loads(pickle.dumps(model))
    assert not hasattr(fresh, "_states_cache")
    np.testing.assert_allclose(model.decision_function(moved), fresh.decision_function(moved), rtol=1e-12)
    features, tokens = model._inputs(moved)
    with torch.no_grad():
        forward = model._fitted_network()(features, tokens).numpy()
    np.testing.assert_allclose(model.decision_function(moved), forward, atol=1e-5)
    other, _ = _ordered(400, 1)  # other sequences: not the cached states
    np.testing.assert_allclose(model.decision_function(other), fresh.decision_function(other), rtol=1e-12)
    model.fit(other, y)  # a new fit forgets the old network's states
    assert not hasattr(model, "_states_cache")


@needs_torch
def test_the_permutation_importance_shuffles_a_sequence_as_one():
    from ml.evaluate import permutation_drops
    from ml.sequences import SEQUENCE_GROUP

    X, y = _ordered(600, 0)
    model = GRUClassifier(hidden_size=16, epochs=15).fit(X, y)
    drops = permutation_drops(model, X, y)
    assert list(drops.index) == ["events_7d", SEQUENCE_GROUP]
    # the label is the order of the last events: shuffling whole sequences loses it, the noise feature nothing
    assert drops[SEQUENCE_GROUP] > 0.2 and abs(drops["events_7d"]) < 0.05
