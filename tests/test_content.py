"""The content-based recommender (ml/content.py): item texts known at the cutoff, and items nobody has touched."""

import numpy as np
import pandas as pd
import pytest

from ml.content import ContentBased, item_texts
from ml.recommend import RecommendationInputError

DESCRIPTIONS = pd.Series({
    "mug-red": "red ceramic coffee mug", "mug-blue": "blue ceramic coffee mug", "chair": "oak dining chair",
    "table": "oak dining table", "mug-new": "large red ceramic mug",  # mug-new: no interaction before the cutoff
})


def _interactions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "purchases"])


def test_a_user_is_offered_the_new_items_described_like_theirs_with_the_item_that_made_it():
    interactions = _interactions([("u1", "mug-red", 3.0, 1), ("u1", "mug-blue", 1.0, 0), ("u2", "chair", 2.0, 1)])
    model = ContentBased().fit(interactions, DESCRIPTIONS)
    cold = model.recommend(["u1", "u2", "nobody"], k=2, candidates=["mug-new", "table"])
    assert cold.groupby("user_id").item_id.apply(list).to_dict() == {"u1": ["mug-new", "table"],
                                                                      "u2": ["table", "mug-new"]}
    first = cold.set_index(["user_id", "rank"])
    assert first.loc[("u1", 1), "reason"] == "described like mug-red"
    assert first.loc[("u2", 1), "reason"] == "described like chair"
    assert first.loc[("u1", 1), "score"] > first.loc[("u1", 2), "score"] >= 0
    # the cross-sell list leaves out what the user bought, not what they only viewed
    anything = model.recommend(["u1"], k=5, new_only=True)
    assert "mug-red" not in set(anything.item_id) and "mug-blue" in set(anything.item_id)
    # reduced by an SVD the same neighbour wins
    lsa = ContentBased(dimensions=3).fit(interactions, DESCRIPTIONS)
    assert lsa.recommend(["u1"], k=1, candidates=["mug-new", "table"]).item_id.tolist() == ["mug-new"]


def test_item_texts_read_only_reviews_written_before_the_cutoff_and_join_description_and_category():
    reviews = pd.DataFrame({"item_id": ["a", "a", "b"], "review_ts": pd.to_datetime(["2026-01-01", "2026-02-01",
                                                                                     "2026-03-01"]),
                            "title": ["Great", "Broke", "Later"], "text": ["sturdy strings", "snapped", "x"]})
    texts = item_texts(pd.Series({"a": "Guitar strings", "c": "  "}), pd.Series({"a": "music"}), reviews,
                       before="2026-02-01")
    assert texts.to_dict() == {"a": "Guitar strings music Great sturdy strings"}  # b's review is after; c is blank
    with pytest.raises(ValueError, match="cutoff"):
        item_texts(reviews=reviews)


def test_non_finite_weights_or_no_text_are_refused():
    with pytest.raises(RecommendationInputError, match="non-finite"):
        ContentBased().fit(_interactions([("u1", "mug-red", np.inf, 1)]), DESCRIPTIONS)
    with pytest.raises(RecommendationInputError, match="no item has a text"):
        ContentBased().fit(_interactions([("u1", "mug-red", 1.0, 1)]), pd.Series(dtype=object))


def test_the_cold_start_protocol_scores_recall_against_the_truth_and_a_random_order_exactly():
    from ml.cold_start import none_drawn, recall_and_hits

    ranked = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "c"], "rank": [1, 2, 1]})
    truth = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "z", "y", "a"]})
    # u1: 1 of 2, u2: 0 of 1, u3 (no list): 0 of 1
    assert recall_and_hits(ranked, truth) == pytest.approx((0.5 / 3, 1 / 3))
    assert none_drawn(10, 1, 3) == pytest.approx(0.7) and none_drawn(4, 2, 3) == 0.0


def test_on_held_out_items_the_text_finds_what_users_buy_where_categories_and_chance_cannot():
    from ml.cold_start import cold_start_fold, measure

    kinds = {"mug": "red ceramic coffee mug", "chair": "oak dining chair"}
    items = [f"{kind}-{i}" for kind in kinds for i in range(10)]
    rows, bought = [], []
    for u in range(40):  # half the users buy mugs, half chairs: before the cutoff, and one more after it
        kind = "mug" if u % 2 else "chair"
        rows += [(f"u{u}", f"{kind}-{j}", "home", 1, 0, 0, 1.0, 3) for j in range(u % 3, 10, 3)]
        bought.append((f"u{u}", f"{kind}-{(u * 7) % 10}", "2026-02-03", 1))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "views", "carts", "purchases",
                                               "weight", "days_since_last"])
    item_days = pd.DataFrame(bought, columns=["user_id", "item_id", "activity_date", "n_purchase"])
    descriptions = pd.DataFrame({"item_id": items, "description": [f"{kinds[i.split('-')[0]]} {i}" for i in items],
                                 "described_at": pd.Timestamp("2026-01-01")})
    fold = cold_start_fold(pd.Timestamp("2026-02-01").date(), 7, interactions, item_days, descriptions, None,
                           share=0.5)
    assert fold.held_out_items == len(fold.candidates) > 0 and not fold.training.item_id.isin(fold.candidates).any()
    row = measure(fold, k=3)
    assert row["test_users"] > 5
    # one category for every item: the category rankings know nothing the random order does not
    assert row["content"]["recall_at_3"] > 1.5 * max(row["random"]["recall_at_3"],
                                                     row["user_categories"]["recall_at_3"])


def _fold_row(users: int, content: float, categories: float | None, random: float = 0.05) -> dict:
    row = {"cutoff": "2026-01-01", "test_users": users, "held_out_with_text": 50,
           "content": {"recall_at_10": content}, "random": {"recall_at_10": random}}
    if categories is not None:
        row |= {"user_categories": {"recall_at_10": categories}, "category_popularity": {"recall_at_10": 0.01}}
    return row


def test_the_cold_start_list_is_published_only_where_the_text_beats_the_strongest_ranking_without_it():
    from ml.cold_start import decide

    won = decide([_fold_row(40, 0.30, 0.20), _fold_row(35, 0.25, 0.22)], min_test_users=50)
    assert won.publish and won.baseline == "user_categories" and won.content == pytest.approx(0.275)
    assert won.reason.startswith("published: the text's Recall@10 on items held out from training 0.275 beats "
                                 "user_categories 0.210")
    lost = decide([_fold_row(40, 0.19, 0.20)], min_test_users=30)
    assert not lost.publish and lost.reason.startswith("not published") and "does not beat user_categories" in lost.reason
    # without categories the strongest ranking without text is chance; a margin raises the bar
    assert decide([_fold_row(40, 0.10, None)], 30).baseline == "random"
    assert not decide([_fold_row(40, 0.10, None)], 30, margin=0.06).publish
    few = decide([_fold_row(12, 0.9, 0.1)], min_test_users=30)
    assert not few.publish and few.reason.startswith("not published: 12 test users")


def test_new_items_are_those_first_seen_in_the_window_before_the_date():
    import datetime as dt

    from ml.cold_start import new_items

    first = pd.Series({"old": dt.date(2026, 1, 1), "new": dt.date(2026, 3, 1), "today": dt.date(2026, 3, 10)})
    assert list(new_items(first, dt.date(2026, 3, 10), 28)) == ["new"]  # "today" is not before the date
