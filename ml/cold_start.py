"""The cold-start protocol (issue 25): how well a method offers items nobody has interacted with, measured on items
held out from training; the evidence a served cold-start list will need (ml/content.py is the method).

At a cutoff T a stable share of the items with interactions before T (a hash of the item id) is held out: their
interactions are removed from what every method is fitted on, as if they had just entered the catalogue with their
text. Test users: users with other interactions before T who bought a held-out item in [T, T + horizon); truth: the
held-out items they bought. Every method ranks the held-out items alone and is scored by Recall@K = hits /
min(K, |truth|) and HitRate@K, means over the test users. Text-free rankings a shop has without text:
`category_popularity` (buyers of the item's category before T), `user_categories` (the user's own weight on the
item's category, then its popularity) and `random` (the expected recall of a random order, computed exactly).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.content import ContentBased, item_texts
from ml.recommend import RECOMMENDATION_COLUMNS, item_categories
from ml.recommendations import truth_after

K = 10
HELD_OUT_SHARE = 0.2
TEXT_FREE = ("user_categories", "category_popularity", "random")


def held_out(items: pd.Series, share: float = HELD_OUT_SHARE) -> pd.Series:
    """A stable share of the items (a hash of the id, the same at every cutoff and run)."""
    hashed = pd.util.hash_pandas_object(items.astype(str), index=False).to_numpy()
    return pd.Series((hashed % 1000) < share * 1000, index=items.index)


def recall_and_hits(ranked: pd.DataFrame, truth: pd.DataFrame, k: int = K) -> tuple[float, float]:
    """Mean Recall@k and HitRate@k over the truth's users (a user without a list scores 0)."""
    hits = ranked[ranked["rank"] <= k].merge(truth, on=["user_id", "item_id"]).groupby("user_id").size()
    sizes = truth.groupby("user_id").size()
    found = hits.reindex(sizes.index, fill_value=0)
    return float((found / np.minimum(k, sizes)).mean()), float((found > 0).mean())


def ranked_by(scores: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """user_id, item_id, score -> the best k per user with their rank (1 = best; ties by item id: reproducible)."""
    ordered = scores.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    ordered["rank"] = ordered.groupby("user_id").cumcount() + 1
    return ordered[ordered["rank"] <= k]


def category_scores(users: pd.Index, candidates: pd.DataFrame, training: pd.DataFrame, personal: bool) -> pd.DataFrame:
    """The candidates (item_id, category_id) ranked by their category's buyers in ``training``; ``personal``: first
    by the user's own weight on the category."""
    buyers = training[training.purchases > 0].groupby("category_id").user_id.nunique()
    popularity = candidates.category_id.map(buyers).fillna(0.0).to_numpy()
    grid = pd.DataFrame({"user_id": np.repeat(users.to_numpy(), len(candidates)),
                         "item_id": np.tile(candidates.item_id.to_numpy(), len(users)),
                         "category_id": np.tile(candidates.category_id.to_numpy(), len(users)),
                         "score": np.tile(popularity / (popularity.max() + 1.0), len(users))})
    if personal:
        own = training[training.user_id.isin(users)].groupby(["user_id", "category_id"]).weight.sum().rename("own")
        grid = grid.join(own, on=["user_id", "category_id"])
        grid["score"] += grid["own"].fillna(0.0)
    return ranked_by(grid[["user_id", "item_id", "score"]])


def none_drawn(n: int, good: int, draws: int) -> float:
    """P(no one of ``good`` items among ``draws`` drawn without replacement from ``n``)."""
    p = 1.0
    for i in range(draws):
        p *= max(0.0, (n - good - i) / (n - i))
    return p


def texts_at(day: dt.date, descriptions: pd.DataFrame, categories: pd.Series, reviews: pd.DataFrame | None
             ) -> pd.Series:
    """Each item's text known on ``day`` (ml/content.item_texts): its newest description described before it
    (``descriptions``: raw.items' item_id, description, described_at), its category, its reviews written before it."""
    known = descriptions[pd.to_datetime(descriptions.described_at) < pd.Timestamp(day)]
    known = known.sort_values("described_at").drop_duplicates("item_id", keep="last").set_index("item_id")
    return item_texts(known.description if len(known) else None, categories if len(categories) else None,
                      reviews, before=day)


@dataclass
class ColdStartFold:
    """One cutoff of the protocol: what the methods are fitted on and what they are judged by."""

    cutoff: dt.date
    training: pd.DataFrame     # the interactions before the cutoff, the held-out items' removed
    texts: pd.Series           # item_id -> text known at the cutoff (held-out items' included)
    categories: pd.Series      # item_id -> category (catalogue metadata: held-out items keep theirs)
    candidates: pd.Index       # the held-out items with a text: what every method ranks
    truth: pd.DataFrame        # user_id, item_id: held-out candidates the test users bought in the horizon
    items: int                 # items with interactions before the cutoff
    held_out_items: int

    @property
    def users(self) -> pd.Index:
        return pd.Index(self.truth.user_id.unique())

    def describe(self) -> dict:
        return {"cutoff": self.cutoff.isoformat(), "items": self.items, "held_out_items": self.held_out_items,
                "held_out_with_text": len(self.candidates), "test_users": len(self.users),
                "truth_pairs": len(self.truth)}


def cold_start_fold(cutoff: dt.date, horizon_days: int, interactions: pd.DataFrame, item_days: pd.DataFrame,
                    descriptions: pd.DataFrame, reviews: pd.DataFrame | None,
                    share: float = HELD_OUT_SHARE) -> ColdStartFold:
    """The fold at ``cutoff``: ``interactions`` as of it (INTERACTION_COLUMNS), ``item_days`` (int_user_item_daily's
    purchases, for the truth), ``descriptions`` (raw.items: item_id, description, described_at; each item's
    newest text before the cutoff is read) and ``reviews`` (item_id, review_ts, title, text; before the cutoff)."""
    items = pd.Series(interactions.item_id.unique())
    out = set(items[held_out(items, share)].astype(str))
    training = interactions[~interactions.item_id.astype(str).isin(out)]
    truth = truth_after(item_days, cutoff, horizon_days, training)
    categories = item_categories(interactions)
    texts = texts_at(cutoff, descriptions, categories, reviews)
    candidates = pd.Index(sorted(out & set(texts.index)))
    truth = truth[truth.item_id.astype(str).isin(candidates)].reset_index(drop=True)
    return ColdStartFold(cutoff, training, texts, categories, candidates, truth, len(items), len(out))


def content_methods() -> dict[str, ContentBased]:
    return {"content": ContentBased(), "content_lsa": ContentBased(dimensions=64)}


def measure(fold: ColdStartFold, methods: dict[str, ContentBased] | None = None, k: int = K) -> dict:
    """Each method's and each text-free ranking's Recall@k and HitRate@k on the fold (with the fold's sizes)."""
    row = fold.describe()
    users, truth, n = fold.users, fold.truth, len(fold.candidates)
    if users.empty:
        return row
    # a random order of the n candidates: expected hits k/n of each truth item; hit rate 1 - P(none drawn)
    sizes = truth.groupby("user_id").size()
    row["random"] = {f"recall_at_{k}": float((min(k, n) / n * sizes / np.minimum(k, sizes)).mean()),
                     f"hit_rate_at_{k}": float(np.mean([1 - none_drawn(n, int(s), min(k, n)) for s in sizes]))}
    for name, model in (methods if methods is not None else content_methods()).items():
        started = time.perf_counter()
        model.fit(fold.training, fold.texts)
        recall, hit = recall_and_hits(model.recommend(users, k=k, candidates=fold.candidates), truth, k)
        row[name] = {f"recall_at_{k}": recall, f"hit_rate_at_{k}": hit,
                     "seconds": round(time.perf_counter() - started, 2)}
    if len(fold.categories):
        frame = pd.DataFrame({"item_id": fold.candidates,
                              "category_id": fold.categories.reindex(fold.candidates).to_numpy()})
        training = fold.training.assign(category_id=fold.training.item_id.map(fold.categories))
        for name, personal in (("category_popularity", False), ("user_categories", True)):
            recall, hit = recall_and_hits(ranked_by(category_scores(users, frame, training, personal), k), truth, k)
            row[name] = {f"recall_at_{k}": recall, f"hit_rate_at_{k}": hit}
    return row


# -- the served cold-start list: published only where the text wins on the protocol ------------------------------

MODEL_NAME = "cold_start_items"   # the list's name in the decision log and the prediction table
METHOD = "content"                # what the list is made with (ml/content.py, TF-IDF)


@dataclass
class ColdStartDecision:
    publish: bool
    reason: str
    content: float                # mean Recall@K of the content list over the folds with test users
    baseline: str                 # the strongest text-free ranking on the same folds
    baseline_score: float
    folds: list[dict]             # each fold's sizes and scores (measure)


def decide(rows: list[dict], min_test_users: int, margin: float = 0.0, k: int = K) -> ColdStartDecision:
    """Publish the content list where its mean Recall@k over the folds beats the strongest text-free ranking's (the
    user's categories, the category's popularity, a random order) by more than ``margin``, on folds with at least
    ``min_test_users`` test users in all. A pure function of the measured folds."""
    metric = f"recall_at_{k}"
    judged = [r for r in rows if METHOD in r]
    users = sum(r["test_users"] for r in judged)
    if not judged or users < min_test_users:
        return ColdStartDecision(False, f"not published: {users} test users bought a held-out item with a text in "
                                        f"the folds (at least {min_test_users} needed)", float("nan"), "", float("nan"),
                                 rows)
    mean = lambda name: float(np.mean([r[name][metric] for r in judged if name in r]))
    content = mean(METHOD)
    baselines = {name: mean(name) for name in TEXT_FREE if all(name in r for r in judged)}
    baseline = max(baselines, key=baselines.get)
    publish = content > baselines[baseline] + margin
    verb = "published" if publish else "not published"
    relation = "beats" if publish else "does not beat"
    return ColdStartDecision(publish, f"{verb}: the text's Recall@{k} on items held out from training {content:.3f} "
                                      f"{relation} {baseline} {baselines[baseline]:.3f} (margin {margin}) over "
                                      f"{len(judged)} fold(s), {users} test users", content, baseline,
                             baselines[baseline], rows)


def new_items(first_seen: pd.Series, as_of: dt.date, window_days: int) -> pd.Index:
    """The items first seen (``first_seen``: item_id -> first business day with an event) within ``window_days``
    before ``as_of``: the new arrivals the cold-start list offers."""
    days = pd.to_datetime(first_seen)
    start, end = pd.Timestamp(as_of) - pd.Timedelta(days=window_days), pd.Timestamp(as_of)
    return pd.Index(first_seen.index[(days >= start) & (days < end)].astype(str))


def cold_start_lists(interactions: pd.DataFrame, texts: pd.Series, candidates: pd.Index, users, k: int = K
                     ) -> pd.DataFrame:
    """k of the ``candidates`` (new items with a text) per user, by ``ContentBased``: user_id, rank, item_id,
    score, reason; nothing the user bought, nothing for a user without an interaction on a described item."""
    if not len(candidates) or texts.empty:
        return pd.DataFrame({c: [] for c in RECOMMENDATION_COLUMNS})
    return ContentBased().fit(interactions, texts).recommend(users, k=k, new_only=True, candidates=candidates)
