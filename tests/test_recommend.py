"""Recommenders (ml/recommend.py) on hand-made interactions: lists, reasons, the cross-sell list and the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.recommend import (
    ALS,
    BPR,
    EASE,
    Fallback,
    History,
    ItemKNN,
    Popularity,
    RecommendationInputError,
    Reranker,
    Snapshot,
    coverage,
    new_item_truth,
    ranking_metrics,
)


def _rows(*rows) -> pd.DataFrame:
    """(user, item, category, views, carts, purchases, days_since_last) -> interactions, weight as the mart's default"""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "views", "carts", "purchases",
                                        "days_since_last"])
    return frame.assign(weight=frame.views + 3 * frame.carts + 5 * frame.purchases)


def _communities(users_per_group: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two groups of users, each buying from its own 6 items (a1..a6 or b1..b6), 3 items each."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in "ab":
        for u in range(users_per_group):
            for item in rng.choice(6, size=3, replace=False):
                rows.append((f"{group}{u}", f"{group}{item + 1}", f"cat_{group}", 1, 0, 1, int(rng.integers(1, 30))))
    return _rows(*rows)


def _assert_lists(recs: pd.DataFrame, k: int) -> None:
    assert not recs.duplicated(["user_id", "item_id"]).any()
    for _, ranks in recs.groupby("user_id")["rank"]:
        assert list(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= k


def test_history_ranks_what_the_user_bought_most_then_freshest_and_the_cross_sell_list_leaves_it_out():
    interactions = _rows(("u", "x", "c", 0, 0, 1, 30), ("u", "y", "c", 0, 0, 2, 60), ("u", "z", "c", 0, 0, 1, 2),
                         ("u", "v", "c", 4, 1, 0, 1), ("w", "x", "c", 0, 0, 1, 5))
    model = History("bought").fit(interactions)
    recs = model.recommend(["u"], k=10)
    assert list(recs.item_id) == ["y", "z", "x"] and set(recs.reason) == {"bought before"}
    _assert_lists(recs, 10)
    engaged = History("engaged").fit(interactions).recommend(["u"], k=10)
    assert engaged.set_index("item_id").reason.to_dict() == {
        "y": "bought before", "v": "carted before", "z": "bought before", "x": "bought before"}
    assert History("bought").fit(interactions).recommend(["u"], k=10, new_only=True).empty
    assert model.recommend(["nobody"], k=10).empty  # an unseen user gets nothing from the model itself


def test_ease_and_item_knn_recommend_what_others_bought_with_the_users_items_and_say_which():
    interactions = _communities()
    for model in (EASE(l2=10.0), ItemKNN(neighbours=10)):
        recs = model.fit(interactions).recommend(["a0", "b0"], k=3, new_only=True)
        _assert_lists(recs, 3)
        bought = set(interactions[interactions.user_id.isin(["a0", "b0"])].item_id)
        assert bought.isdisjoint(recs.item_id)  # the cross-sell list holds only new items
        for user, group in recs.groupby("user_id"):
            assert all(item.startswith(user[0]) for item in group.item_id), (model.name, group)
            own = set(interactions[interactions.user_id == user].item_id)
            assert all(r.startswith("bought with ") and r.removeprefix("bought with ") in own for r in group.reason)


@pytest.mark.parametrize("family", [ALS(factors=2, iterations=20), BPR(factors=2, iterations=200)])
def test_factor_models_learn_the_communities(family):
    interactions = _communities()
    recs = family.fit(interactions).recommend([f"a{u}" for u in range(10)] + [f"b{u}" for u in range(10)], k=3,
                                              new_only=True)
    same_group = (recs.item_id.str[0] == recs.user_id.str[0]).mean()
    assert same_group >= 0.85, (family.name, same_group)  # a random ranking: 0.5
    assert recs.reason.str.startswith("similar to ").all()


def test_popularity_within_categories_puts_the_users_categories_first_and_says_so():
    interactions = _rows(("u", "shoe1", "shoes", 1, 0, 0, 3), ("v", "hat1", "hats", 0, 0, 1, 3),
                         ("w", "hat1", "hats", 0, 0, 1, 3), ("w", "shoe2", "shoes", 0, 0, 1, 3))
    recs = Popularity(within_categories=True).fit(interactions).recommend(["u"], k=3)
    assert list(recs.item_id) == ["shoe2", "shoe1", "hat1"]
    assert list(recs.reason) == ["popular in shoes", "popular in shoes", "popular"]
    overall = Popularity().fit(interactions).recommend(["u"], k=3)
    assert list(overall.item_id) == ["hat1", "shoe2", "shoe1"] and set(overall.reason) == {"popular"}


def test_a_fallback_fills_the_history_up_to_k_without_repeating_an_item():
    interactions = _communities()
    model = Fallback(History("bought"), Popularity()).fit(interactions)
    recs = model.recommend(["a0"], k=8)
    _assert_lists(recs, 8)
    assert len(recs) == 8 and list(recs.reason[:3]) == ["bought before"] * 3 and set(recs.reason[3:]) == {"popular"}


def test_ranking_metrics_equal_a_hand_computation():
    recs = pd.DataFrame({"user_id": ["u", "u", "u", "v", "v"], "rank": [1, 2, 3, 1, 2],
                         "item_id": ["a", "b", "c", "a", "b"], "score": 1.0, "reason": ""})
    truth = pd.DataFrame({"user_id": ["u", "u", "v", "w"], "item_id": ["b", "z", "q", "a"]})
    metrics = ranking_metrics(recs, truth, k=2)
    # u: 1 hit of min(2, 2) at rank 2; v: none; w: no list at all, still counted
    assert metrics["recall_at_2"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert metrics["ndcg_at_2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 3)
    assert metrics["hit_rate_at_2"] == pytest.approx(1 / 3) and metrics["users"] == 3
    assert coverage(recs, catalogue_size=10, k=2) == pytest.approx(0.2)
    bought = _rows(("u", "b", "c", 0, 0, 1, 3), ("w", "a", "c", 2, 0, 0, 3))
    assert new_item_truth(truth, bought).values.tolist() == [["u", "z"], ["v", "q"], ["w", "a"]]


def test_bad_interactions_are_refused_with_the_row_that_is_wrong():
    bad = _rows(("u", "x", "c", 1, 0, 0, 3), ("v", "y", "c", 1, 0, 0, 3))
    bad.loc[1, "weight"] = np.nan
    with pytest.raises(RecommendationInputError, match="user v item y"):
        EASE().fit(bad)
    with pytest.raises(RecommendationInputError, match="more than one row"):
        EASE().fit(pd.concat([bad.iloc[:1]] * 2))
    with pytest.raises(RecommendationInputError, match="lack the columns"):
        EASE().fit(bad.drop(columns="days_since_last"))


def _dense_reasons(model, view, rows, items):
    """The reasons as first written: every user x every item's contribution, the largest own one (reference)."""
    n_items = len(model.catalogue_.items)
    everything = np.tile(np.arange(n_items), (len(items), 1))
    grid = model._pair_grid(everything, items)  # users x k x every item
    user_rows = model._user_rows(view, rows[:, 0]).toarray()
    reasons = np.empty(items.shape, dtype=object)
    names = model.catalogue_.items.to_numpy()
    for position in range(items.shape[1]):
        contribution = user_rows * grid[:, position, :]
        contribution[user_rows <= 0] = -np.inf
        contribution[np.arange(len(items)), items[:, position]] = -np.inf
        best = contribution.argmax(axis=1)
        explained = np.isfinite(contribution[np.arange(len(items)), best])
        reasons[:, position] = [f"{model.reason_prefix} {names[b]}" if e else "from your history"
                                for b, e in zip(best, explained)]
    return reasons


@pytest.mark.parametrize("family", [ItemKNN(neighbours=10), EASE(l2=10.0), ALS(factors=2, iterations=20),
                                    ItemKNN(neighbours=10, max_items=5), EASE(l2=10.0, max_items=5),
                                    ALS(factors=2, iterations=20, max_items=5)])
def test_item_to_item_reasons_from_sparse_pairs_equal_the_dense_argmax_and_lists_keep_to_the_popular_items(family):
    interactions = _communities()
    model = family.fit(interactions)
    view = model.catalogue_.fitted
    recs = model.recommend(view.users, k=4)
    rows = np.repeat(np.arange(len(view.users))[:, None], 3, axis=1)
    items = np.stack([np.roll(np.arange(len(model.catalogue_.items)), -i)[:3] for i in range(len(view.users))])
    assert (model._reasons(view, rows, items) == _dense_reasons(model, view, rows, items)).all()
    if model.max_items == 5:  # recommendations come from the 5 most popular items, ranked as over the catalogue
        popular = set(model.catalogue_.items[np.argsort(-model.catalogue_.popularity(), kind="stable")[:5]])
        assert set(recs.item_id) <= popular and len(recs) > 0
    _assert_lists(recs, 4)


@pytest.mark.parametrize("new_only", [False, True])
def test_factor_models_top_k_by_implicit_equals_the_dense_scoring(new_only):
    from ml.recommend import Recommender

    interactions = _communities()
    model = ALS(factors=4, iterations=20, max_items=8).fit(interactions)
    fresh = interactions.sample(frac=0.6, random_state=1)
    for view in (model.catalogue_.fitted, model.user_rows(fresh)):
        rows = np.arange(len(view.users))
        fast_ids, fast_scores = model._best(view, rows, 5, (new_only,), model.candidate_items())[new_only]
        dense_ids, dense_scores = Recommender._best(model, view, rows, 5, (new_only,), model.candidate_items())[new_only]
        finite = np.isfinite(dense_scores)
        assert (np.isfinite(fast_scores) == finite).all()
        assert (fast_ids[finite] == dense_ids[finite]).all()
        np.testing.assert_allclose(fast_scores[finite], dense_scores[finite], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", [ItemKNN(neighbours=10), EASE(l2=10.0), ALS(factors=2, iterations=20)])
def test_a_model_registered_before_the_popular_items_bound_still_serves_its_lists(family):
    """Unpickled without the attributes this release added (as the champion a home registered before it), a model
    serves the lists it served then: every item scored."""
    import pickle

    model = family.fit(_communities())
    expected = model.recommend(model.catalogue_.users, k=4)
    state = dict(model.__dict__)
    for added in ("scored_", "columns_"):
        state.pop(added, None)
    state.pop("max_items", None)
    if isinstance(model, EASE):
        state["kept_"] = np.arange(len(model.catalogue_.items))  # EASE kept every item's position then
    else:
        state.pop("kept_", None)
    old = type(model).__new__(type(model))
    old.__dict__.update(state)
    revived = pickle.loads(pickle.dumps(old))
    pd.testing.assert_frame_equal(revived.recommend(model.catalogue_.users, k=4), expected)


@pytest.mark.parametrize("within_categories", [False, True])
def test_popularity_reasons_name_the_users_categories(within_categories):
    interactions = _communities()
    model = Popularity(within_categories).fit(interactions)
    recs = model.recommend(interactions.user_id.unique(), k=6)
    own = interactions.groupby("user_id").category_id.apply(set)
    category = interactions.drop_duplicates("item_id").set_index("item_id").category_id
    for row in recs.itertuples():
        mine = within_categories and category[row.item_id] in own[row.user_id]
        assert row.reason == (f"popular in {category[row.item_id]}" if mine else "popular"), row


@pytest.mark.parametrize("source", ["bought", "engaged"])
@pytest.mark.parametrize("new_only", [False, True])
def test_the_history_lists_from_sparse_rows_equal_the_dense_scoring(source, new_only):
    """History ranks each user's own rows without a users x catalogue matrix: the same lists, ties, order and
    reasons as the dense scoring every family shares, for the fit's users and for fresh interactions."""
    from ml.recommend import Recommender

    interactions = _communities()
    interactions.loc[interactions.index % 3 == 0, "purchases"] = 0  # some rows viewed only
    model = History(source).fit(interactions)
    users = [*interactions.user_id.unique()[::-1], "nobody"]
    fresh = interactions.sample(frac=0.5, random_state=0).assign(days_since_last=3)
    for given in (None, fresh):
        sparse = model.recommend(users, k=4, new_only=new_only, interactions=given)
        dense = Recommender.recommend(model, users, k=4, new_only=new_only, interactions=given)
        pd.testing.assert_frame_equal(sparse, dense, check_dtype=False)
    if not new_only:
        assert len(sparse) > 0


@pytest.mark.parametrize("family", [History("engaged"), Popularity(True), EASE(l2=10.0), ItemKNN(neighbours=10),
                                    ALS(factors=2, iterations=20), BPR(factors=2, iterations=200)])
def test_a_fitted_model_scores_fresh_interactions_as_of_a_later_date(family):
    """Fitted weekly, scored daily: given the interactions as of the scoring date, a model scores those (new users
    included) with what it learned, and leaves out items it has never seen."""
    interactions = _communities()
    model = family.fit(interactions)
    # a user the fit never saw, who bought a1 and a2 since, and an item that did not exist at the fit
    fresh = _rows(("newcomer", "a1", "cat_a", 1, 0, 1, 1), ("newcomer", "a2", "cat_a", 2, 1, 1, 2),
                  ("newcomer", "brand-new", "cat_a", 3, 0, 0, 1))
    assert model.recommend(["newcomer"], k=3).empty  # not in the fit's rows
    recs = model.recommend(["newcomer"], k=3, new_only=True, interactions=fresh)
    _assert_lists(recs, 3)
    assert "brand-new" not in set(recs.item_id) and not {"a1", "a2"} & set(recs.item_id)
    if family.name != "history_engaged":  # the history holds nothing new for this user
        assert len(recs) == 3 and (recs.item_id.str[0] == "a").mean() >= 2 / 3, (family.name, recs)
    assert model.user_rows(fresh).unknown_item_rows == 1


def test_the_reranker_learns_from_earlier_snapshots_which_generator_to_trust():
    """Snapshots where users buy again what they carted (and never what similar users bought): the reranker puts
    the carted items first, says why, and refuses to fit without labelled snapshots."""
    rng = np.random.default_rng(1)

    def snapshot(seed_users: int):
        interactions = _communities(users_per_group=seed_users, seed=seed_users)
        carted = interactions.groupby("user_id").head(1).index
        interactions.loc[carted, ["carts", "purchases"]] = [1, 0]
        interactions["weight"] = interactions.views + 3 * interactions.carts + 5 * interactions.purchases
        truth = interactions.loc[carted, ["user_id", "item_id"]]
        return Snapshot(interactions, truth)

    history = [snapshot(30), snapshot(35)]
    now = snapshot(40)
    model = Reranker(candidates=6, n_estimators=50, generators={
        "history": History("engaged"), "ease": EASE(l2=10.0)}).fit(now.interactions, history=history)
    # the trees: boosting on the older snapshot stopped by the newest one's log loss, at most n_estimators; with
    # one snapshot there is nothing to stop on and the default is fitted
    assert set(model.trees_) == {False, True} and all(1 <= t <= 50 for t in model.trees_.values())
    single = Reranker(candidates=6, n_estimators=50, default_trees=7, generators={
        "history": History("engaged"), "ease": EASE(l2=10.0)}).fit(now.interactions, history=history[:1])
    assert single.trees_ == {False: 7, True: 7} and single.models_[False].n_estimators == 7
    users = now.truth.user_id.unique()[rng.permutation(len(now.truth.user_id.unique()))[:20]]
    recs = model.recommend(users, k=3)
    _assert_lists(recs, 3)
    assert ranking_metrics(recs, now.truth[now.truth.user_id.isin(users)], k=1)["recall_at_1"] == 1.0
    assert set(recs[recs["rank"] == 1].reason) == {"carted before"}
    with pytest.raises(RecommendationInputError, match="earlier snapshots"):
        Reranker(generators={"history": History("engaged")}).fit(now.interactions, history=[])


def test_an_items_category_is_the_one_most_of_its_rows_name_whatever_their_order():
    from ml.recommend import item_categories

    rows = _rows(("u", "x", "c2", 1, 0, 0, 1), ("v", "x", "c1", 1, 0, 0, 1), ("w", "x", "c2", 1, 0, 0, 1),
                 ("u", "y", "c9", 1, 0, 0, 1), ("v", "y", "c3", 1, 0, 0, 1), ("u", "z", None, 1, 0, 0, 1))
    for order in (rows, rows.iloc[::-1]):
        assert item_categories(order).to_dict() == {"x": "c2", "y": "c3"}


@pytest.mark.parametrize("family", [ALS(factors=2, iterations=20), EASE(l2=10.0), History("engaged")])
def test_both_lists_at_once_equal_each_list_asked_for_alone(family):
    """recommend_lists builds the users' rows (and ALS's folded-in factors) once for both lists: the same lists."""
    interactions = _communities()
    model = family.fit(interactions)
    fresh = interactions.sample(frac=0.7, random_state=2)
    users = fresh.user_id.unique()
    both = model.recommend_lists(users, k=4, interactions=fresh)
    for new_only in (False, True):
        pd.testing.assert_frame_equal(both[new_only], model.recommend(users, 4, new_only, interactions=fresh))
    assert len(both[False]) > 0


def _random_shop(seed: int = 0) -> pd.DataFrame:
    """Many users over 300 items in categories of very different sizes (one unknown), popularity full of ties, and a
    wholesale buyer of most of the catalogue (as Online Retail's trade customers)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(300):
        for item in np.unique(rng.zipf(1.4, size=int(rng.integers(1, 12))) % 300):
            rows.append((f"u{u}", f"i{item}", "" if item % 17 == 0 else f"c{int(np.sqrt(item))}",
                         int(rng.integers(0, 3)), int(rng.integers(0, 2)), int(rng.random() < 0.4),
                         int(rng.integers(1, 60))))
    rows += [("wholesale", f"i{item}", "" if item % 17 == 0 else f"c{int(np.sqrt(item))}", 1, 0, 1, 3)
             for item in range(280)]
    return _rows(*rows)


@pytest.mark.parametrize("within_categories", [False, True])
def test_popularity_ranked_sparsely_equals_the_dense_ranking_of_the_whole_catalogue(within_categories):
    """Popularity scores only the k + b most popular items overall and of each of a user's categories (b: their
    bought items), never users x catalogue; the lists are exactly the dense ranking's, ties and wholesale buyers
    included."""
    interactions = _random_shop()
    model = Popularity(within_categories).fit(interactions)
    fresh = interactions.sample(frac=0.7, random_state=2)
    for view in (model.catalogue_.fitted, model.user_rows(fresh)):
        rows = np.arange(len(view.users))
        for new_only in (False, True):
            dense = model._scores(view, rows).astype(np.float32)
            if new_only:
                dense[view.purchases[rows].nonzero()] = -np.inf
            expected_ids = np.argsort(-dense, axis=1, kind="stable")  # every item ranked, ties by position
            expected_scores = np.take_along_axis(dense, expected_ids, axis=1)
            for k in (1, 10, 50):
                ids, scores = model._best(view, rows, k, (new_only,), None)[new_only]
                np.testing.assert_array_equal(scores, expected_scores[:, :k])
                finite = np.isfinite(scores)
                np.testing.assert_array_equal(ids[finite], expected_ids[:, :k][finite])
    bought = set(interactions[interactions.user_id.eq("wholesale")].item_id)
    not_bought = set(model.catalogue_.items) - bought
    wholesale = model.recommend(["wholesale"], k=10, new_only=True)
    assert 0 < len(not_bought) and len(wholesale) == min(10, len(not_bought)) and set(wholesale.item_id) <= not_bought


def test_a_popularity_model_registered_before_the_sparse_ranking_still_serves_the_same_lists():
    model = Popularity(within_categories=True).fit(_random_shop())
    old = Popularity.__new__(Popularity)
    old.__dict__.update({k: v for k, v in model.__dict__.items()
                         if k not in ("order_", "rank_", "category_items_", "category_start_", "category_size_")})
    users = model.catalogue_.users
    for new_only in (False, True):
        before, now = old.recommend(users, k=10, new_only=new_only), model.recommend(users, k=10, new_only=new_only)
        pd.testing.assert_frame_equal(before[["user_id", "rank", "score"]], now[["user_id", "rank", "score"]])
        # the same items and reasons, but where the dense ranking's selection chose among items tied at the k-th score
        below_the_last = now.score > now.groupby("user_id").score.transform("min")
        pd.testing.assert_frame_equal(before[below_the_last], now[below_the_last])
        assert (before.item_id != now.item_id).mean() < 0.05


def test_two_seeded_bpr_fits_of_the_same_rows_are_the_same_model():
    """implicit's BPR on several threads updates without locks (a different model each run); ours fits on one."""
    interactions = _communities()
    first, second = (BPR(factors=2, iterations=50).fit(interactions) for _ in range(2))
    np.testing.assert_array_equal(np.asarray(first.model_.item_factors), np.asarray(second.model_.item_factors))
