"""Recommenders: which items each user will buy next (issue 23).

Every candidate is an unfitted object with one interface, like the scikit-learn families of the other targets:

    fit(interactions)                     one row per (user, item) seen before the cutoff (INTERACTION_COLUMNS)
    recommend(users, k, new_only=False)   -> user_id, rank (1..k), item_id, score, reason

`new_only=True` leaves out what the user has bought before: the cross-sell list (`new_items`); without it the list
is `next_items` (anything, repurchases included). A user the model has not seen gets nothing from it: `Fallback`
fills every list up to k from a second recommender (the popularity of the user's categories, then overall), so that
a served list always has k items and says where each came from. `score` orders one model's list; its scale is the
model's own (counts, similarities, factor products) and is not comparable across models.

Candidates: popularity (overall or within the user's categories), the user's own history (bought before, or anything
viewed, carted or bought), item-kNN (cosine, `implicit`), ALS and BPR (`implicit`), EASE (closed form, Steck 2019),
and `Fallback(first, then)`: the history of a user, then a learned model. Reasons: `bought before`, `carted before`,
`viewed before`, `bought with <item>` (the user's item that contributed most to an item-item score), `similar to
<item>` (factor models: the user's item nearest the recommended one), `popular in <category>`, `popular`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

# The interactions a recommender is fitted on, one row per (user, item) before the cutoff (marts.fct_user_item_
# interactions): event counts by kind, the weight the mart gives them (event type and recency, settings) and how many
# days before the cutoff the last one was.
INTERACTION_COLUMNS = ("user_id", "item_id", "category_id", "views", "carts", "purchases", "weight",
                       "days_since_last")
RECOMMENDATION_COLUMNS = ("user_id", "rank", "item_id", "score", "reason")
# rows x items of dense scores held at once while ranking: bounds memory (float32: 4 bytes each)
SCORE_CELLS_PER_BATCH = 20_000_000
# users whose reasons are worked out at once: (user, recommended item, own item) triples, ~k x 50 per user
REASON_USERS_PER_BATCH = 10_000
# a recommendation is explained by one of the user's this many strongest items: bounds the work per user
REASON_OWN_ITEMS = 20
# users whose popularity lists are made at once (sparse: ~k candidates per category of theirs, no users x items)
POPULARITY_USERS_PER_BATCH = 50_000


def _no_recommendations() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        RECOMMENDATION_COLUMNS, (object, "int64", object, "float64", object))})


class RecommendationInputError(ValueError):
    """Interactions a recommender cannot be fitted on (missing columns, non-finite or negative weights)."""


def _checked(interactions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        raise RecommendationInputError(f"interactions lack the columns {missing}")
    numeric = interactions[["views", "carts", "purchases", "weight", "days_since_last"]].to_numpy(dtype=float)
    bad = ~np.isfinite(numeric).all(axis=1) | (numeric < 0).any(axis=1)
    if bad.any():
        first = interactions[bad].iloc[0]
        raise RecommendationInputError(
            f"{int(bad.sum())} interaction rows have a negative or non-finite count, weight or age, e.g. user "
            f"{first.user_id} item {first.item_id}: {first[['views', 'carts', 'purchases', 'weight', 'days_since_last']].to_dict()}")
    return interactions  # one row per (user, item): UserRows.build checks it on the codes, cheaper than on the ids


def _values_at(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[i], cols[i]] for each i (0 where nothing is stored), as a flat array: from the rows asked for
    alone, without scipy's fancy indexing (whose result type changes with the number of cells asked for)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if not len(rows):
        return np.zeros(0, dtype=matrix.dtype)
    unique, local = np.unique(rows, return_inverse=True)
    sub = sp.csr_matrix(matrix[unique])
    sub.sum_duplicates()  # canonical: sorted columns within each row, so the keys below are sorted
    width = matrix.shape[1]
    keys = np.repeat(np.arange(len(unique), dtype=np.int64), np.diff(sub.indptr)) * width + sub.indices
    if not len(keys):
        return np.zeros(len(rows), dtype=matrix.dtype)
    wanted = local.ravel() * width + cols
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, sub.data[at], 0)


def item_categories(interactions: pd.DataFrame) -> pd.Series:
    """Each item's category: the one most of its rows name (ties: the first by name), whatever order the rows come
    in; items whose rows name none are left out. (Sources can file one item under several categories.)"""
    named = interactions.dropna(subset=["category_id"])
    counts = named.groupby(["item_id", "category_id"]).size().rename("rows").reset_index()
    counts = counts.sort_values(["item_id", "rows", "category_id"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("item_id").set_index("item_id").category_id


def positions_in(index: pd.Index, values) -> np.ndarray:
    """``index.get_indexer(values)`` (-1 where absent) for string ids by Arrow's hash lookup: about 7x faster than
    pandas' at the millions of rows a scoring chunk holds (measured: 0.26 s against 1.8 s for 7M ids). Other id
    types take pandas' way."""
    values = pd.Series(values, copy=False)
    if not (pd.api.types.is_string_dtype(index) and pd.api.types.is_string_dtype(values)):  # inferred for object
        return index.get_indexer(values)
    found = pc.index_in(pa.array(values, type=pa.large_string(), from_pandas=True),
                        value_set=pa.array(index, type=pa.large_string(), from_pandas=True))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


@dataclass
class UserRows:
    """Users' interactions as matrices over a model's items: the fit's own, or (at scoring) fresh ones, where an
    item the model has not seen is left out (it cannot be scored until the model is refitted)."""

    users: pd.Index
    weight: sp.csr_matrix  # users x items: the mart's interaction weight
    purchases: sp.csr_matrix  # users x items: purchase events
    carts: sp.csr_matrix
    recency: sp.csr_matrix  # users x items: 1 / (1 + days since the last interaction)
    unknown_item_rows: int = 0  # fresh rows on items the model has not seen
    cache: dict = field(default_factory=dict, repr=False)  # what a model derives from these rows once (fold-in)

    @classmethod
    def build(cls, interactions: pd.DataFrame, items: pd.Index) -> UserRows:
        cols = positions_in(items, interactions.item_id)
        known = interactions[cols >= 0]
        cols = cols[cols >= 0]
        rows, users = pd.factorize(known.user_id, use_na_sentinel=False)  # the users in order of first appearance, as unique() gives them
        users = pd.Index(users)
        shape = (len(users), len(items))

        def matrix(values) -> sp.csr_matrix:
            built = sp.csr_matrix((np.asarray(values, dtype=np.float32), (rows, cols)), shape=shape)
            if built.nnz < len(rows):  # the conversion summed rows of one (user, item)
                raise RecommendationInputError("interactions hold more than one row for a (user, item)")
            built.eliminate_zeros()  # a removal-only row weighs 0: stored, it made cosine similarities NaN
            return built

        return cls(users, matrix(known.weight), matrix(known.purchases), matrix(known.carts),
                   matrix(1.0 / (1.0 + known.days_since_last.to_numpy(float))), len(interactions) - len(known))


@dataclass
class Catalogue:
    """The items of the training interactions as matrix positions, and the training users' rows over them."""

    items: pd.Index
    item_category: np.ndarray  # category per item position ("" when unknown)
    fitted: UserRows

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame) -> Catalogue:
        interactions = _checked(interactions)
        items = pd.Index(interactions.item_id.unique())
        category = item_categories(interactions).reindex(items).fillna("").astype(str).to_numpy()
        return cls(items, category, UserRows.build(interactions, items))

    # the training users' matrices, as the families fit on them
    users = property(lambda self: self.fitted.users)
    weight = property(lambda self: self.fitted.weight)
    purchases = property(lambda self: self.fitted.purchases)

    def popularity(self) -> np.ndarray:
        """Distinct buyers per item, then distinct users with any interaction as a tie-break below one buyer."""
        buyers = np.asarray((self.purchases > 0).sum(axis=0), dtype=float).ravel()
        users = np.asarray((self.weight > 0).sum(axis=0), dtype=float).ravel()
        return buyers + users / (users.max() + 1.0)


class Recommender:
    """Fit on interactions before a cutoff; recommend k items per user with a score and a reason.

    `recommend` scores the users' rows of the fit by default; given `interactions` (the same columns, as of a later
    date), it scores those instead with what the model learned: how a model fitted weekly serves each day."""

    name = "recommender"

    def fit(self, interactions: pd.DataFrame) -> Recommender:
        self.catalogue_ = Catalogue.from_interactions(interactions)
        self._fit(self.catalogue_)
        return self

    def _fit(self, catalogue: Catalogue) -> None:
        pass

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        """Dense scores, users (rows of ``view``) x items; -inf where the model does not recommend the item."""
        raise NotImplementedError

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """A reason per recommended (row, item position): rows and items of equal shape (users x k)."""
        raise NotImplementedError

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def user_rows(self, interactions: pd.DataFrame | None) -> UserRows:
        if interactions is None:
            return self.catalogue_.fitted
        return UserRows.build(_checked(interactions), self.catalogue_.items)

    def candidate_items(self) -> np.ndarray | None:
        """The item positions this model recommends from (sorted), or None for the whole catalogue."""
        return None

    def recommend(self, users, k: int = 10, new_only: bool = False,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        return self._recommend(self.user_rows(interactions), users, k, (new_only,))[new_only]

    def recommend_lists(self, users, k: int = 10, interactions: pd.DataFrame | None = None
                        ) -> dict[bool, pd.DataFrame]:
        """{new_only: list}: both lists from one scoring of the users (their rows, the model's scores of each batch
        and what the model derives from the rows built once)."""
        if type(self).recommend is not Recommender.recommend:  # a family with its own way of recommending
            return {new_only: self.recommend(users, k, new_only, interactions) for new_only in (False, True)}
        return self._recommend(self.user_rows(interactions), users, k, (False, True))

    def _recommend(self, view: UserRows, users, k: int, lists: tuple[bool, ...]) -> dict[bool, pd.DataFrame]:
        positions = positions_in(view.users, pd.Index(users).unique())
        rows = positions[positions >= 0]  # users without rows get nothing here (see Fallback)
        columns = self.candidate_items()
        width = len(self.catalogue_.items) if columns is None else len(columns)
        k = min(k, width)
        if not len(rows) or k == 0:
            return dict.fromkeys(lists, _no_recommendations())
        batch = self._rows_per_batch(width)
        top = {new_only: np.empty((len(rows), k), dtype=np.int64) for new_only in lists}
        top_scores = {new_only: np.empty((len(rows), k), dtype=np.float32) for new_only in lists}
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            for new_only, (found, found_scores) in self._best(view, part, k, lists, columns).items():
                top[new_only][start:start + len(part)] = found
                top_scores[new_only][start:start + len(part)] = found_scores
        return {new_only: self._frame(view, rows, top[new_only], top_scores[new_only]) for new_only in lists}

    def _frame(self, view: UserRows, rows: np.ndarray, top: np.ndarray, top_scores: np.ndarray) -> pd.DataFrame:
        k = top.shape[1]
        kept = np.isfinite(top_scores)
        reasons = np.empty(top.shape, dtype=object)
        for start in range(0, len(rows), REASON_USERS_PER_BATCH):
            end = start + REASON_USERS_PER_BATCH
            reasons[start:end] = self._reasons(view, np.repeat(rows[start:end, None], k, axis=1), top[start:end])
        user_ids = np.repeat(view.users[rows].to_numpy()[:, None], k, axis=1)
        ranks = np.tile(np.arange(1, k + 1), (len(rows), 1))
        return pd.DataFrame({"user_id": user_ids[kept], "rank": ranks[kept].astype("int64"),
                             "item_id": self.catalogue_.items[top[kept]].to_numpy(),
                             "score": top_scores[kept].astype("float64"), "reason": reasons[kept]})

    def _rows_per_batch(self, width: int) -> int:
        return max(1, SCORE_CELLS_PER_BATCH // max(1, width))

    def _best(self, view: UserRows, rows: np.ndarray, k: int, lists: tuple[bool, ...], columns: np.ndarray | None
              ) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
        """{new_only: (catalogue positions, scores)}: the k best of ``columns`` (None: every item) for each row,
        best first (-inf: none), for each list asked for, from one scoring."""
        return _rank(self._scores(view, rows), view, rows, k, lists, columns)


def _rank(scores: np.ndarray, view: UserRows, rows: np.ndarray, k: int, lists: tuple[bool, ...],
          columns: np.ndarray | None) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """{new_only: (catalogue positions, scores)} of each row's k best among dense scores (rows x ``columns``)."""
    scores = np.asarray(scores, dtype=np.float32)
    found = {}
    for new_only in sorted(lists):  # the whole list first: the cross-sell one then masks the same scores
        if new_only:
            bought = view.purchases[rows] if columns is None else view.purchases[rows][:, columns]
            scores[bought.nonzero()] = -np.inf
        ids, top_scores = _top_k(scores, k)
        found[new_only] = (ids if columns is None else columns[ids]), top_scores
    return found


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(column positions, scores) of each row's k best, best first; ties broken by column (stable, reproducible)."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def _heads(rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray, ordered: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs: for each i, the first lengths[i] items of ``ordered`` from starts[i], for rows[i]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(rows, lengths), ordered[np.repeat(starts, lengths) + offsets]


def _first_k_per_row(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The first k (item, score) of each row from candidates sorted by row, best first: rows x k, -inf where a row
    has fewer."""
    position = np.arange(len(rows))
    first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    kept = rank < k
    top = np.zeros((n_rows, k), dtype=np.int64)
    top_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    top[rows[kept], rank[kept]] = items[kept]
    top_scores[rows[kept], rank[kept]] = scores[kept]
    return top, top_scores


class Popularity(Recommender):
    """The most bought items overall, or first those of the categories the user has interacted with."""

    def __init__(self, within_categories: bool = False):
        self.within_categories = within_categories
        self.name = "popularity_in_categories" if within_categories else "popularity"

    def _fit(self, catalogue: Catalogue) -> None:
        popularity = catalogue.popularity()
        self.popularity_ = (popularity / (popularity.max() + 1.0)).astype(np.float32)  # in [0, 1)
        self.categories_, codes = np.unique(catalogue.item_category, return_inverse=True)
        self.item_category_code_ = codes
        # items x categories, to find the categories a user has interacted with
        self.item_categories_ = sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)),
                                              shape=(len(codes), len(self.categories_)))
        # every item by popularity, best first (ties by position, as every family), and grouped by category
        self.order_ = np.argsort(-self.popularity_, kind="stable")
        by_category = self.order_[np.argsort(codes[self.order_], kind="stable")]
        self.category_items_ = by_category
        self.category_start_ = np.searchsorted(codes[by_category], np.arange(len(self.categories_)))
        self.category_size_ = np.bincount(codes, minlength=len(self.categories_))
        self.rank_ = np.empty(len(self.order_), dtype=np.int64)
        self.rank_[self.order_] = np.arange(len(self.order_))

    def _user_categories(self, view: UserRows, rows: np.ndarray) -> sp.csr_matrix:
        return ((view.weight[rows] > 0).astype(np.float32) @ self.item_categories_).tocsr()

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        """Dense scores: the reference the sparse ranking below is tested against."""
        scores = np.tile(self.popularity_, (len(rows), 1))
        if self.within_categories:  # the user's categories first, each by popularity
            codes = self.item_category_code_
            scores += (self._user_categories(view, rows).toarray()[:, codes] > 0) & (self.categories_[codes] != "")
        return scores

    def _rows_per_batch(self, width: int) -> int:
        return POPULARITY_USERS_PER_BATCH if hasattr(self, "order_") else super()._rows_per_batch(width)

    def _best(self, view: UserRows, rows: np.ndarray, k: int, lists: tuple[bool, ...], columns: np.ndarray | None
              ) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
        if not hasattr(self, "order_"):  # fitted before the sparse ranking: the dense one
            return super()._best(view, rows, k, lists, columns)
        # Sparse and exact: a row's k best are among the k + b most popular items overall (b: the row's bought items,
        # which the cross-sell list masks) and the k + b_c most popular of each of its categories (b_c: its bought
        # items there). Each candidate is keyed by (row, outside the row's categories, popularity rank): one integer
        # sort ranks them as the dense scores would, ties by position included.
        n = len(self.order_)
        bought = view.purchases[rows]
        user_categories = self._user_categories(view, rows) if self.within_categories else None
        found = {}
        for new_only in lists:
            extra = np.diff(bought.indptr) if new_only else np.zeros(len(rows), dtype=np.int64)
            pair_rows, items = _heads(np.arange(len(rows)), np.zeros(len(rows), dtype=np.int64),
                                      np.minimum(k + extra, n), self.order_)
            outside = np.ones(len(items), dtype=bool)
            if user_categories is not None:
                codes = self.item_category_code_[items]
                outside = (_values_at(user_categories, pair_rows, codes) == 0) | (self.categories_[codes] == "")
                mine = user_categories.tocoo()
                known = self.categories_[mine.col] != ""
                cat_rows, cat_codes = mine.row[known].astype(np.int64), mine.col[known]
                cat_extra = (_values_at(bought @ self.item_categories_, cat_rows, cat_codes).astype(np.int64)
                             if new_only else 0)
                more_rows, more_items = _heads(cat_rows, self.category_start_[cat_codes],
                                               np.minimum(k + cat_extra, self.category_size_[cat_codes]),
                                               self.category_items_)
                pair_rows = np.concatenate([pair_rows, more_rows])
                items = np.concatenate([items, more_items])
                outside = np.concatenate([outside, np.zeros(len(more_items), dtype=bool)])
            if new_only:
                keep = _values_at(bought, pair_rows, items) == 0
                pair_rows, items, outside = pair_rows[keep], items[keep], outside[keep]
            keys = np.sort(pair_rows * (2 * n) + outside * n + self.rank_[items])
            keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys  # an item from both sources once
            key_rows, rest = np.divmod(keys, 2 * n)
            top_items = self.order_[rest % n]
            scores = self.popularity_[top_items] + (rest < n).astype(np.float32) * (user_categories is not None)
            found[new_only] = _first_k_per_row(key_rows, top_items, scores.astype(np.float32), len(rows), k)
        return found

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        reasons = np.full(items.shape, "popular", dtype=object)
        if self.within_categories:
            # the user's categories at the recommended items' categories only: a users x catalogue matrix would not
            # fit for a large catalogue
            user_categories = self._user_categories(view, rows[:, 0])
            codes = self.item_category_code_[items]
            in_categories = (_values_at(user_categories, np.repeat(np.arange(len(items)), items.shape[1]),
                                        codes.ravel()).reshape(items.shape) > 0) & (self.categories_[codes] != "")
            names = self.catalogue_.item_category[items]
            reasons[in_categories] = "popular in " + names[in_categories].astype(object)
        return reasons


class History(Recommender):
    """The user's own items: bought before (by purchases, fresher first), or anything they engaged with (by weight)."""

    def __init__(self, source: str = "bought"):
        if source not in ("bought", "engaged"):
            raise ValueError(f"History source must be 'bought' or 'engaged', not {source!r}")
        self.source = source
        self.name = f"history_{source}"

    def recommend(self, users, k: int = 10, new_only: bool = False,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        """The same lists as the dense scoring of the other families (ties by item position), from the users' own
        sparse rows alone: a user's history is a few items of a catalogue that can hold hundreds of thousands."""
        return self._sparse_lists(self.user_rows(interactions), users, k, (new_only,))[new_only]

    def recommend_lists(self, users, k: int = 10, interactions: pd.DataFrame | None = None
                        ) -> dict[bool, pd.DataFrame]:
        return self._sparse_lists(self.user_rows(interactions), users, k, (False, True))  # the rows built once

    def _sparse_lists(self, view: UserRows, users, k: int, lists: tuple[bool, ...]) -> dict[bool, pd.DataFrame]:
        positions = positions_in(view.users, pd.Index(users).unique())
        rows = positions[positions >= 0]
        base = (view.purchases if self.source == "bought" else view.weight)[rows]
        base.sort_indices()  # columns ascending within each row: ties go to the first item by position
        base = base.tocoo()
        all_r, all_c = base.row, base.col
        all_score = base.data.astype(np.float32) + 0.5 * _values_at(view.recency[rows], all_r, all_c).astype(np.float32)
        bought = _values_at(view.purchases[rows], all_r, all_c) > 0 if any(lists) else None
        found = {}
        for new_only in lists:
            r, c, score = (all_r[~bought], all_c[~bought], all_score[~bought]) if new_only \
                else (all_r, all_c, all_score)
            order = np.lexsort((-score, r))  # the users in the order asked, each best first (c ascends within r)
            r, c, score = r[order], c[order], score[order]
            starts = np.r_[0, np.flatnonzero(np.diff(r)) + 1]
            rank = np.arange(len(r)) - np.repeat(starts, np.diff(np.r_[starts, len(r)])) + 1 if len(r) else r
            kept = rank <= k
            r, c, score, rank = r[kept], c[kept], score[kept], rank[kept]
            if not len(r):
                found[new_only] = _no_recommendations()
                continue
            reasons = self._reasons(view, rows[r][:, None], c[:, None])[:, 0]
            found[new_only] = pd.DataFrame({
                "user_id": view.users[rows[r]].to_numpy(), "rank": rank.astype("int64"),
                "item_id": self.catalogue_.items[c].to_numpy(), "score": score.astype("float64"), "reason": reasons})
        return found

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        # The definition of the lists in the dense form every family shares: recommend() serves the same lists from
        # the sparse rows (users x catalogue would not fit at scale), and a test holds the two equal.
        base = view.purchases[rows] if self.source == "bought" else view.weight[rows]
        scores = np.full(base.shape, -np.inf, dtype=np.float32)
        r, i = base.nonzero()
        # fresher first among equal counts: recency is in (0, 1]
        scores[r, i] = np.asarray(base[r, i]).ravel() + 0.5 * np.asarray(view.recency[rows][r, i]).ravel()
        return scores

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        bought = _values_at(view.purchases, rows.ravel(), items.ravel()).reshape(items.shape) > 0
        carted = _values_at(view.carts, rows.ravel(), items.ravel()).reshape(items.shape) > 0
        return np.where(bought, "bought before", np.where(carted, "carted before", "viewed before")).astype(object)


class _ItemToItem(Recommender):
    """Scores = the user's interactions x an item-item matrix; the reason is the user's item that added the most.

    Recommends from the `max_items` most popular items (all of them when the catalogue is smaller): what bounds
    scoring at any catalogue size (every user x those items, in batches); the long tail is left to the user's own
    history and to the fallback."""

    binary = False
    reason_prefix = "bought with"
    max_items: int | None = None

    def _keep_popular(self, catalogue: Catalogue) -> None:
        if self.max_items is None or len(catalogue.items) <= self.max_items:
            self.kept_ = None
        else:
            self.kept_ = np.sort(np.argsort(-catalogue.popularity(), kind="stable")[:self.max_items])

    def candidate_items(self) -> np.ndarray | None:
        return getattr(self, "kept_", None)

    def __setstate__(self, state: dict) -> None:
        # a model registered before recommending was bounded to the popular items scores every item, as it did
        self.__dict__.update(state)
        if "catalogue_" in state and "scored_" not in state and "columns_" not in state:
            self._from_before_the_bound()

    def _from_before_the_bound(self) -> None:
        self.kept_ = None

    def _user_rows(self, view: UserRows, rows: np.ndarray) -> sp.csr_matrix:
        rows_matrix = view.weight[rows]
        return (rows_matrix > 0).astype(np.float32) if self.binary else rows_matrix

    def _pair_values(self, own: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        """The item-item matrix at (own[i], recommended[i]): what an item of the user adds to a recommended one."""
        raise NotImplementedError

    def _pair_grid(self, own: np.ndarray, items: np.ndarray) -> np.ndarray:
        """users x recommended x own: the item-item matrix from each user's own items (own: users x M) to their
        recommended ones (items: users x k)."""
        shape = (*items.shape, own.shape[1])
        return self._pair_values(np.broadcast_to(own[:, None, :], shape).ravel(),
                                 np.broadcast_to(items[:, :, None], shape).ravel()).reshape(shape)

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Per (user, recommended item): which of the user's own items (their REASON_OWN_ITEMS strongest) adds the
        most to it (ties: the first by position), not the item itself."""
        own, weight = strongest_items(self._user_rows(view, rows[:, 0]), REASON_OWN_ITEMS)
        reasons = np.full(items.shape, "from your history", dtype=object)
        if not own.shape[1]:
            return reasons
        values = self._pair_grid(np.maximum(own, 0), items).astype(np.float32) * weight[:, None, :]
        values[(own[:, None, :] < 0) | (own[:, None, :] == items[:, :, None])] = -np.inf
        best = values.argmax(axis=2)
        explained = np.isfinite(np.take_along_axis(values, best[:, :, None], axis=2)[:, :, 0])
        names = self.catalogue_.items.to_numpy().astype(object)
        chosen = np.take_along_axis(own, best, axis=1)
        reasons[explained] = f"{self.reason_prefix} " + names[chosen[explained]]
        return reasons


def strongest_items(user_rows: sp.csr_matrix, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(item positions, weights), users x M: each user's at most ``limit`` items of largest positive weight, in
    position order, padded with -1 and weight 0 (M: the most any user has, up to ``limit``)."""
    coo = sp.coo_matrix(user_rows)
    keep = coo.data > 0
    row, col, data = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float32)
    order = np.lexsort((col, -data, row))  # per user, strongest first
    row, col, data = row[order], col[order], data[order]
    starts = np.r_[0, np.flatnonzero(np.diff(row)) + 1] if len(row) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    kept = rank < limit
    row, col, data = row[kept], col[kept], data[kept]
    order = np.lexsort((col, row))  # back to position order: ties then go to the first by position
    row, col, data = row[order], col[order], data[order]
    counts = np.bincount(row, minlength=user_rows.shape[0])
    width = int(counts.max()) if len(counts) else 0
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    own = np.full((user_rows.shape[0], width), -1, dtype=np.int64)
    weight = np.zeros((user_rows.shape[0], width), dtype=np.float32)
    own[row, slot], weight[row, slot] = col, data
    return own, weight


class ItemKNN(_ItemToItem):
    """Item-based nearest neighbours on cosine similarity (implicit's CosineRecommender), K neighbours per item."""

    def __init__(self, neighbours: int = 100, max_items: int = 20_000):
        self.neighbours, self.max_items = neighbours, max_items
        self.name = "item_knn"

    def _fit(self, catalogue: Catalogue) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=self.neighbours)
        with warnings.catch_warnings():  # implicit normalises to COO itself, then warns that it was given COO
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(catalogue.weight, show_progress=False)
        self.similarity_ = model.similarity.tocsr()  # item x item
        self._keep_popular(catalogue)
        # the columns scored: from every item to the recommendable ones
        self.scored_ = self.similarity_ if self.kept_ is None else self.similarity_[:, self.kept_].tocsr()

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        scores = np.asarray((self._user_rows(view, rows) @ self.scored_).todense(), dtype=np.float32)
        scores[scores <= 0] = -np.inf  # no neighbour of anything the user touched
        return scores

    def _pair_values(self, own: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        return _values_at(self.similarity_, own, recommended)

    def _from_before_the_bound(self) -> None:
        self.kept_, self.scored_ = None, self.similarity_


class EASE(_ItemToItem):
    """Embarrassingly shallow autoencoder (Steck 2019): B = I - P / diag(P), P = (X'X + lambda I)^-1, on binary
    interactions over the `max_items` most popular items (an items x items dense matrix: memory is max_items^2 x 4
    bytes)."""

    binary = True

    def __init__(self, l2: float = 200.0, max_items: int = 10_000):
        self.l2, self.max_items = l2, max_items
        self.name = "ease"

    def _fit(self, catalogue: Catalogue) -> None:
        self._keep_popular(catalogue)
        self.columns_ = np.arange(len(catalogue.items)) if self.kept_ is None else self.kept_
        X = (catalogue.weight[:, self.columns_] > 0).astype(np.float64)
        gram = (X.T @ X).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        P = np.linalg.inv(gram)
        B = -P / np.diag(P)
        B[np.diag_indices_from(B)] = 0.0
        self.B_ = B.astype(np.float32)  # over columns_ (every item, in order, when the catalogue fits)

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        X = self._user_rows(view, rows)[:, self.columns_]
        return np.asarray(X @ self.B_, dtype=np.float32)

    def _pair_values(self, own: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        a = np.clip(np.searchsorted(self.columns_, own), 0, len(self.columns_) - 1)
        b = np.clip(np.searchsorted(self.columns_, recommended), 0, len(self.columns_) - 1)
        present = (self.columns_[a] == own) & (self.columns_[b] == recommended)
        return np.where(present, self.B_[a, b], 0.0)

    def _from_before_the_bound(self) -> None:  # B_ was over kept_, every item when the catalogue fitted
        self.columns_ = self.kept_
        if len(self.kept_) == len(self.catalogue_.items):
            self.kept_ = None


class _Factors(_ItemToItem):
    """implicit's matrix factorisation (ALS, BPR): scores are user x item factor products; the reason is the user's
    item whose factors are nearest (cosine) the recommended one's."""

    reason_prefix = "similar to"
    PAIRS_PER_CHUNK = 500_000  # (own, recommended) pairs whose factors are gathered at once

    def _model(self):
        raise NotImplementedError

    def _fit(self, catalogue: Catalogue) -> None:
        model = self._model()
        # implicit advises one BLAS thread: its own threads already use every core
        with threadpool_limits(1, "blas"):
            model.fit(catalogue.weight, show_progress=False)
        self.model_ = model
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self._keep_popular(catalogue)
        self._use_item_factors(np.asarray(model.item_factors, dtype=np.float32))

    def _use_item_factors(self, factors: np.ndarray) -> None:
        """The items' factors (catalogue positions x f), their unit vectors (the reasons' cosines) and the rows
        scored (the kept popular items: _keep_popular first)."""
        self.item_factors_ = factors
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        self.item_unit_ = factors / np.where(norms > 0, norms, 1.0)
        self.scored_ = factors if self.kept_ is None else factors[self.kept_]

    def _fold_in(self, view: UserRows) -> np.ndarray:
        """Factors of users the fit did not see as they are now: the least-squares factors that best reproduce their
        rows from the item factors (ridge, the fit's regularisation)."""
        rows_matrix = view.weight
        Y = self.item_factors_.astype(np.float64)
        gram = Y.T @ Y + self.regularization * np.eye(Y.shape[1])
        return np.asarray(rows_matrix @ Y, dtype=np.float64) @ np.linalg.inv(gram)

    def _user_factors(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        if view is self.catalogue_.fitted:
            return self.user_factors_[rows]
        key = ("factors", id(self))
        if key not in view.cache:  # every row's at once: both lists use them
            view.cache[key] = self._fold_in(view).astype(np.float32)
        return view.cache[key][rows]

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        return (self._user_factors(view, rows) @ self.scored_.T).astype(np.float32)

    def _best(self, view: UserRows, rows: np.ndarray, k: int, lists: tuple[bool, ...], columns: np.ndarray | None
              ) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
        # implicit's own top-k: the products and the selection in its threads, no rows x items matrix in Python
        from implicit.cpu.topk import topk

        items = np.ascontiguousarray(self.scored_, dtype=np.float32)
        factors = np.ascontiguousarray(self._user_factors(view, rows), dtype=np.float32)
        found = {}
        for new_only in lists:
            bought = None
            if new_only:
                bought = view.purchases[rows] if columns is None else view.purchases[rows][:, columns]
                bought = sp.csr_matrix(bought, dtype=np.float32)
            ids, scores = topk(items, factors, k, filter_query_items=bought)
            scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
            ids = np.where(ids < 0, 0, ids)
            # ties by position, as every family: implicit's order among equal scores is its own
            order = np.lexsort((ids, -scores), axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
            found[new_only] = (ids if columns is None else columns[ids]), np.take_along_axis(scores, order, axis=1)
        return found

    def _pair_grid(self, own: np.ndarray, items: np.ndarray) -> np.ndarray:
        # cosines by batched products: users x k x f against users x f x M
        return np.matmul(self.item_unit_[items], self.item_unit_[own].transpose(0, 2, 1))

    def _pair_values(self, own: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        values = np.empty(len(own), dtype=np.float32)
        for start in range(0, len(own), self.PAIRS_PER_CHUNK):
            end = start + self.PAIRS_PER_CHUNK
            values[start:end] = np.einsum("ij,ij->i", self.item_unit_[own[start:end]],
                                          self.item_unit_[recommended[start:end]])
        return values

    def _from_before_the_bound(self) -> None:
        self.kept_, self.scored_ = None, self.item_factors_


class ALS(_Factors):
    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, iterations: int = 15,
                 random_state: int = 0, max_items: int = 20_000):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.random_state, self.max_items = iterations, random_state, max_items
        self.name = "als"

    def _model(self):
        from implicit.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                       iterations=self.iterations, random_state=self.random_state)

    def _fold_in(self, view: UserRows) -> np.ndarray:
        # ALS's own per-user solve, with the fit's confidence weighting
        with threadpool_limits(1, "blas"):
            return np.asarray(self.model_.recalculate_user(np.arange(view.weight.shape[0]), view.weight.tocsr()))


class BPR(_Factors):
    """`num_threads=1` by default: implicit's BPR updates the factors from several threads at once without locks, so a
    seeded fit on two threads differs run to run (measured: four fits of the same rows, four different models); one
    thread makes a materialization reproducible, more are for shops that accept that."""

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, random_state: int = 0, max_items: int = 20_000, num_threads: int = 1):
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.iterations, self.random_state, self.max_items = iterations, random_state, max_items
        self.num_threads = num_threads
        self.name = "bpr"

    def _model(self):
        from implicit.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           random_state=self.random_state, num_threads=self.num_threads)


class Fallback(Recommender):
    """`first`'s list, then `then`'s items not already in it, up to k: the user's history then a learned model, or any
    model then the popularity of the user's categories (what every served list ends with)."""

    def __init__(self, first: Recommender, then: Recommender):
        self.first, self.then = first, then
        self.name = f"{first.name}_then_{then.name}"

    @property
    def needs(self) -> str | None:  # an optional extra either part cannot run without
        return getattr(self.first, "needs", None) or getattr(self.then, "needs", None)

    def get_params(self) -> dict:
        return {"first": self.first.name, **{f"first__{k}": v for k, v in self.first.get_params().items()},
                "then": self.then.name, **{f"then__{k}": v for k, v in self.then.get_params().items()}}

    def fit(self, interactions: pd.DataFrame) -> Fallback:
        self.first.fit(interactions)
        self.then.fit(interactions)
        self.catalogue_ = self.first.catalogue_
        return self

    def recommend(self, users, k: int = 10, new_only: bool = False,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        first = self.first.recommend(users, k, new_only, interactions)
        then = self.then.recommend(users, k, new_only, interactions).assign(rank=lambda f: f["rank"] + k)
        combined = pd.concat([first, then], ignore_index=True).drop_duplicates(["user_id", "item_id"])
        combined = combined.sort_values(["user_id", "rank"], kind="stable")
        combined["rank"] = combined.groupby("user_id", sort=False).cumcount() + 1
        return combined[combined["rank"] <= k].reset_index(drop=True)


@dataclass
class Snapshot:
    """Interactions as of an earlier cutoff and what each user then bought in the horizon after it (user_id,
    item_id): a labelled example of the task, closed before the cutoff a learned ranker is fitted for."""

    interactions: pd.DataFrame
    truth: pd.DataFrame


def default_generators() -> dict[str, Recommender]:
    """The reranker's candidate generators: each proposes its top items and its rank and score become features."""
    return {"history": History("engaged"), "popular_in_categories": Popularity(within_categories=True),
            "item_knn": ItemKNN(), "als": ALS(), "ease": EASE()}


class Reranker(Recommender):
    """A learned blend: several generators propose their top `candidates` items per user; a gradient-boosted
    classifier (LightGBM) scores each (user, item) from the generators' ranks and scores, the user's own
    interactions with the item, the item's popularity and the user's activity, and ranks by that probability. The
    cross-sell list (new_only) has its own classifier, learned on the items new to their buyers.

    It learns from `history`: snapshots of earlier cutoffs whose horizon closed before this fit's cutoff (fit(...,
    history=[Snapshot, ...])); the generators are fitted on each snapshot to make its training rows, then on the
    fit's interactions to serve. The reason is the user's history where the item is in it, else that of the
    generator that ranked the item highest."""

    needs_history = True

    # Small trees learned slowly: a shop's labelled snapshots hold a few hundred to a few thousand buyers (GA: ~90
    # a fortnight), and deeper, faster boosting fitted their noise (measured on the issue 23 protocol: GA Recall@10
    # 0.423 with 31 leaves at 0.05 against 0.430 here; Online Retail 0.330 and 0.329). How many trees is learned
    # from the shop itself: boosting on the older snapshots stops when the newest one's log loss has not improved
    # for `early_stopping_rounds` trees, and the ranker is refitted on every snapshot with that many (at most
    # `n_estimators`; the fixed `default_trees` with one snapshot). GA: 108-233 trees chosen per fold; Recall@10
    # against 200 fixed 0.4268 -> 0.4273 and 0.4315 -> 0.4372 on two builds of the same events, Online Retail
    # 0.3300 -> 0.3307 (benchmarks/recommendations_notes.md).
    def __init__(self, candidates: int = 50, n_estimators: int = 1000, learning_rate: float = 0.02,
                 num_leaves: int = 15, random_state: int = 0, generators: dict[str, Recommender] | None = None,
                 early_stopping_rounds: int = 30, default_trees: int = 200):
        self.candidates, self.n_estimators, self.learning_rate = candidates, n_estimators, learning_rate
        self.num_leaves, self.random_state = num_leaves, random_state
        self.early_stopping_rounds, self.default_trees = early_stopping_rounds, default_trees
        self.generators = generators
        self.name = "reranker"

    def get_params(self) -> dict:
        return {"candidates": self.candidates, "n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "early_stopping_rounds": self.early_stopping_rounds,
                "generators": ",".join(self._generators())}

    def projected_fold_seconds(self, seconds_per_fold: dict[str, float]) -> float | None:
        """What one fold of this reranker should take, from what its generators took per fold as candidates
        (seconds_per_fold: candidate name -> seconds): each is fitted once per labelled snapshot and once more on
        the fold. None when a generator was not measured."""
        measured = [seconds_per_fold.get(g.name) for g in self._generators().values()]
        if any(m is None for m in measured):
            return None
        from ml.recommendations import RERANKER_SNAPSHOTS

        return float(sum(measured)) * (RERANKER_SNAPSHOTS + 1)

    def _generators(self) -> dict[str, Recommender]:
        import copy

        return copy.deepcopy(self.generators) if self.generators is not None else default_generators()

    def fit(self, interactions: pd.DataFrame, history: list[Snapshot] = ()) -> Reranker:
        # two rankers: one for next_items (everything a user buys, mostly repurchases where a shop sells
        # consumables) and one for new_items, learned only on the items the users had not bought: what wins the
        # cross-sell list (similar users, categories) is drowned by repurchases in the first
        examples = {False: [], True: []}
        for snapshot in history:
            generators = {name: g.fit(snapshot.interactions) for name, g in self._generators().items()}
            bought_before = snapshot.interactions[snapshot.interactions.purchases > 0]
            for new_only, truth in ((False, snapshot.truth), (True, new_item_truth(snapshot.truth, bought_before))):
                frame = self._candidates(generators, truth.user_id.unique(), new_only, None)
                bought = truth[["user_id", "item_id"]].drop_duplicates().assign(label=1)
                examples[new_only].append(frame.merge(bought, on=["user_id", "item_id"], how="left")
                                          .fillna({"label": 0}))
        self.models_, self.training_rows_, self.trees_ = {}, {}, {}
        for new_only, parts in examples.items():
            data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if data.empty or data.label.nunique() < 2:
                raise RecommendationInputError(
                    f"the reranker learns from earlier snapshots with buyers: {len(history)} snapshot(s), "
                    f"{0 if data.empty else int(data.label.sum())} bought candidate(s)"
                    + (" of items new to their buyers" if new_only else ""))
            self.features_ = [c for c in data.columns if c not in ("user_id", "item_id", "label", "reason")]
            self.trees_[new_only] = self._trees(parts)
            self.models_[new_only] = self._classifier(self.trees_[new_only]).fit(data[self.features_],
                                                                                 data.label.astype(int))
            self.training_rows_[new_only] = len(data)
        self.generators_ = {name: g.fit(interactions) for name, g in self._generators().items()}
        self.catalogue_ = next(iter(self.generators_.values())).catalogue_
        return self

    def _trees(self, parts: list[pd.DataFrame]) -> int:
        """How many trees: boosting on the older snapshots' rows (``parts`` newest first, as the snapshots come)
        until the newest snapshot's log loss stops improving; the fixed default when there is nothing to stop on
        (one snapshot, or one without both outcomes)."""
        import lightgbm as lgb

        newest, older = parts[0], parts[1:]
        older = pd.concat(older, ignore_index=True) if older else pd.DataFrame(columns=newest.columns)
        if older.label.nunique() < 2 or newest.label.nunique() < 2:
            return min(self.default_trees, self.n_estimators)
        probe = self._classifier(self.n_estimators).fit(
            older[self.features_], older.label.astype(int), eval_X=(newest[self.features_],),
            eval_y=(newest.label.astype(int),), eval_metric="binary_logloss",
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
        return max(1, int(probe.best_iteration_ or self.n_estimators))

    def _classifier(self, trees: int):
        import lightgbm as lgb

        return lgb.LGBMClassifier(n_estimators=trees, learning_rate=self.learning_rate,
                                  num_leaves=self.num_leaves, min_child_samples=20, random_state=self.random_state,
                                  n_jobs=2, verbose=-1)

    def _candidates(self, generators: dict[str, Recommender], users, new_only: bool,
                    interactions: pd.DataFrame | None) -> pd.DataFrame:
        """One row per (user, item) any generator proposes, with every generator's rank and score as features."""
        merged, reasons = None, []
        for name, generator in generators.items():
            proposed = generator.recommend(users, self.candidates, new_only, interactions)
            # the user's own history explains best ("carted before"); else the generator that ranked it highest
            reasons.append(proposed[["user_id", "item_id", "rank", "reason"]].assign(
                own=0 if isinstance(generator, History) else 1))
            proposed = proposed[["user_id", "item_id", "rank", "score"]].rename(
                columns={"rank": f"{name}_rank", "score": f"{name}_score"})
            merged = proposed if merged is None else merged.merge(proposed, on=["user_id", "item_id"], how="outer")
        for column in merged.columns:
            if column.endswith("_rank"):
                merged[column] = merged[column].fillna(self.candidates + 1)
        best = (pd.concat(reasons).sort_values(["own", "rank"], kind="stable").drop_duplicates(["user_id", "item_id"])
                [["user_id", "item_id", "reason"]])
        merged = merged.merge(best, on=["user_id", "item_id"], how="left")
        # the user's own interactions with the item, the item's popularity, the user's activity
        any_generator = next(iter(generators.values()))
        catalogue, view = any_generator.catalogue_, any_generator.user_rows(interactions)
        rows = positions_in(view.users, merged.user_id)
        cols = positions_in(catalogue.items, merged.item_id)
        for name, matrix in (("weight", view.weight), ("purchases", view.purchases), ("carts", view.carts),
                             ("recency", view.recency)):
            merged[f"user_item_{name}"] = np.asarray(matrix[rows, cols]).ravel()
        buyers = np.asarray((catalogue.purchases > 0).sum(axis=0)).ravel()
        users_per_item = np.asarray((catalogue.weight > 0).sum(axis=0)).ravel()
        trend = np.asarray(catalogue.weight.sum(axis=0)).ravel()
        merged["item_buyers"], merged["item_users"], merged["item_weight"] = buyers[cols], users_per_item[cols], trend[cols]
        merged["user_items"] = np.diff(view.weight.indptr)[rows]
        merged["user_purchases"] = np.asarray(view.purchases.sum(axis=1)).ravel()[rows]
        merged["user_recency"] = np.asarray(view.recency.max(axis=1).todense()).ravel()[rows]
        return merged

    def recommend(self, users, k: int = 10, new_only: bool = False,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        frame = self._candidates(self.generators_, users, new_only, interactions)
        if frame.empty:
            return _no_recommendations()
        frame["score"] = self.models_[new_only].predict_proba(frame[self.features_])[:, 1]
        frame = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
        frame["rank"] = frame.groupby("user_id", sort=False).cumcount() + 1
        return frame.loc[frame["rank"] <= k, list(RECOMMENDATION_COLUMNS)].reset_index(drop=True)


def ranking_metrics(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """Recall@k (hits / min(k, |truth|)), NDCG@k and HitRate@k, averaged over the users with a truth; a user without
    recommendations counts as zero. truth: user_id, item_id (distinct items bought in the horizon)."""
    truth = truth[["user_id", "item_id"]].drop_duplicates()
    if truth.empty:
        return {f"recall_at_{k}": float("nan"), f"ndcg_at_{k}": float("nan"), f"hit_rate_at_{k}": float("nan"),
                "users": 0}
    top = recommendations[recommendations["rank"] <= k][["user_id", "item_id", "rank"]]
    hits = top.merge(truth, on=["user_id", "item_id"])
    per_user = truth.groupby("user_id").size().rename("relevant").to_frame()
    per_user["hits"] = hits.groupby("user_id").size().reindex(per_user.index).fillna(0)
    per_user["dcg"] = (1.0 / np.log2(hits["rank"] + 1.0)).groupby(hits.user_id).sum().reindex(per_user.index).fillna(0)
    ideal_cumulative = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    per_user["idcg"] = ideal_cumulative[np.minimum(per_user.relevant.to_numpy(), k) - 1]
    return {f"recall_at_{k}": float((per_user.hits / np.minimum(per_user.relevant, k)).mean()),
            f"ndcg_at_{k}": float((per_user.dcg / per_user.idcg).mean()),
            f"hit_rate_at_{k}": float((per_user.hits > 0).mean()), "users": len(per_user)}


def coverage(recommendations: pd.DataFrame, catalogue_size: int, k: int = 10) -> float:
    """Share of the catalogue that appears in someone's top k."""
    return float(recommendations.loc[recommendations["rank"] <= k, "item_id"].nunique() / max(1, catalogue_size))


def new_item_truth(truth: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """The items of the truth each user had not bought before the cutoff (the cross-sell list's truth)."""
    bought = interactions.loc[interactions.purchases > 0, ["user_id", "item_id"]].assign(_bought=True)
    merged = truth[["user_id", "item_id"]].merge(bought, on=["user_id", "item_id"], how="left")
    return merged[merged._bought.isna()].drop(columns="_bought").reset_index(drop=True)
