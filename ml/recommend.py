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
from dataclasses import dataclass

import numpy as np
import pandas as pd
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
    if interactions.duplicated(["user_id", "item_id"]).any():
        raise RecommendationInputError("interactions hold more than one row for a (user, item)")
    return interactions


def item_categories(interactions: pd.DataFrame) -> pd.Series:
    """Each item's category: the one most of its rows name (ties: the first by name), whatever order the rows come
    in; items whose rows name none are left out. (Sources can file one item under several categories.)"""
    named = interactions.dropna(subset=["category_id"])
    counts = named.groupby(["item_id", "category_id"]).size().rename("rows").reset_index()
    counts = counts.sort_values(["item_id", "rows", "category_id"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("item_id").set_index("item_id").category_id


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

    @classmethod
    def build(cls, interactions: pd.DataFrame, items: pd.Index) -> UserRows:
        cols = items.get_indexer(interactions.item_id)
        known = interactions[cols >= 0]
        cols = cols[cols >= 0]
        users = pd.Index(known.user_id.unique())
        rows = users.get_indexer(known.user_id)
        shape = (len(users), len(items))

        def matrix(values) -> sp.csr_matrix:
            built = sp.csr_matrix((np.asarray(values, dtype=np.float32), (rows, cols)), shape=shape)
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

    def recommend(self, users, k: int = 10, new_only: bool = False,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        view = self.user_rows(interactions)
        positions = view.users.get_indexer(pd.Index(users).unique())
        rows = positions[positions >= 0]  # users without rows get nothing here (see Fallback)
        batch = max(1, SCORE_CELLS_PER_BATCH // max(1, len(self.catalogue_.items)))
        frames = []
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            scores = np.asarray(self._scores(view, part), dtype=np.float32)
            if new_only:
                scores[view.purchases[part].nonzero()] = -np.inf
            frames.append(self._top_k(view, part, scores, k))
        if not frames:
            return _no_recommendations()
        return pd.concat(frames, ignore_index=True)

    def _top_k(self, view: UserRows, rows: np.ndarray, scores: np.ndarray, k: int) -> pd.DataFrame:
        k = min(k, scores.shape[1])
        # ties broken by item position (stable and reproducible), best first
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (len(rows), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        kept = np.isfinite(top_scores)
        reasons = self._reasons(view, np.repeat(rows[:, None], k, axis=1), top)
        user_ids = np.repeat(view.users[rows].to_numpy()[:, None], k, axis=1)
        ranks = np.tile(np.arange(1, k + 1), (len(rows), 1))
        return pd.DataFrame({"user_id": user_ids[kept], "rank": ranks[kept].astype("int64"),
                             "item_id": self.catalogue_.items[top[kept]].to_numpy(),
                             "score": top_scores[kept].astype("float64"), "reason": reasons[kept]})


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

    def _in_categories(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        known = self.categories_[self.item_category_code_] != ""
        user_categories = (view.weight[rows] > 0).astype(np.float32) @ self.item_categories_
        return (user_categories.toarray()[:, self.item_category_code_] > 0) & known

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        scores = np.tile(self.popularity_, (len(rows), 1))
        if self.within_categories:
            scores += self._in_categories(view, rows)  # the user's categories first, each by popularity
        return scores

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        reasons = np.full(items.shape, "popular", dtype=object)
        if self.within_categories:
            in_categories = np.take_along_axis(self._in_categories(view, rows[:, 0]), items, axis=1)
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

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        base = view.purchases[rows] if self.source == "bought" else view.weight[rows]
        scores = np.full(base.shape, -np.inf, dtype=np.float32)
        r, i = base.nonzero()
        # fresher first among equal counts: recency is in (0, 1]
        scores[r, i] = np.asarray(base[r, i]).ravel() + 0.5 * np.asarray(view.recency[rows][r, i]).ravel()
        return scores

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        c = view
        bought = np.asarray(c.purchases[rows.ravel(), items.ravel()]).reshape(items.shape) > 0
        carted = np.asarray(c.carts[rows.ravel(), items.ravel()]).reshape(items.shape) > 0
        return np.where(bought, "bought before", np.where(carted, "carted before", "viewed before")).astype(object)


class _ItemToItem(Recommender):
    """Scores = the user's interactions x an item-item matrix; the reason is the user's item that added the most."""

    binary = False
    reason_prefix = "bought with"

    def _user_rows(self, view: UserRows, rows: np.ndarray) -> sp.csr_matrix:
        rows_matrix = view.weight[rows]
        return (rows_matrix > 0).astype(np.float32) if self.binary else rows_matrix

    def _item_item(self, items: np.ndarray) -> np.ndarray:
        """Columns of the item-item matrix: from every item (rows) to the given items (columns)."""
        raise NotImplementedError

    def _reasons(self, view: UserRows, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        user_rows = self._user_rows(view, rows[:, 0]).toarray()
        reasons = np.empty(items.shape, dtype=object)
        names = self.catalogue_.items.to_numpy()
        for position in range(items.shape[1]):
            contribution = user_rows * self._item_item(items[:, position]).T  # users x items
            contribution[user_rows <= 0] = -np.inf  # only the user's own items explain
            contribution[np.arange(len(items)), items[:, position]] = -np.inf  # not the item itself
            best = contribution.argmax(axis=1)
            explained = np.isfinite(contribution[np.arange(len(items)), best])
            reasons[:, position] = [f"{self.reason_prefix} {names[b]}" if e else "from your history"
                                    for b, e in zip(best, explained)]
        return reasons


class ItemKNN(_ItemToItem):
    """Item-based nearest neighbours on cosine similarity (implicit's CosineRecommender), K neighbours per item."""

    def __init__(self, neighbours: int = 100):
        self.neighbours = neighbours
        self.name = "item_knn"

    def _fit(self, catalogue: Catalogue) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=self.neighbours)
        with warnings.catch_warnings():  # implicit normalises to COO itself, then warns that it was given COO
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(catalogue.weight, show_progress=False)
        self.similarity_ = model.similarity.tocsc()  # item x item

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        scores = np.asarray((self._user_rows(view, rows) @ self.similarity_).todense(), dtype=np.float32)
        scores[scores <= 0] = -np.inf  # no neighbour of anything the user touched
        return scores

    def _item_item(self, items: np.ndarray) -> np.ndarray:
        return self.similarity_[:, items].toarray()


class EASE(_ItemToItem):
    """Embarrassingly shallow autoencoder (Steck 2019): B = I - P / diag(P), P = (X'X + lambda I)^-1, on binary
    interactions over the `max_items` most popular items (an items x items dense matrix: memory is max_items^2 x 4
    bytes)."""

    binary = True

    def __init__(self, l2: float = 200.0, max_items: int = 10_000):
        self.l2, self.max_items = l2, max_items
        self.name = "ease"

    def _fit(self, catalogue: Catalogue) -> None:
        keep = np.argsort(-catalogue.popularity(), kind="stable")[:self.max_items]
        self.kept_ = np.sort(keep)
        X = (catalogue.weight[:, self.kept_] > 0).astype(np.float64)
        gram = (X.T @ X).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        P = np.linalg.inv(gram)
        B = -P / np.diag(P)
        B[np.diag_indices_from(B)] = 0.0
        self.B_ = B.astype(np.float32)  # over kept_ (every item, in order, when the catalogue fits)

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        X = self._user_rows(view, rows)[:, self.kept_]
        kept_scores = np.asarray(X @ self.B_, dtype=np.float32)
        if len(self.kept_) == len(self.catalogue_.items):
            return kept_scores
        scores = np.full((len(rows), len(self.catalogue_.items)), -np.inf, dtype=np.float32)
        scores[:, self.kept_] = kept_scores
        return scores

    def _item_item(self, items: np.ndarray) -> np.ndarray:
        column = np.zeros((len(self.catalogue_.items), len(items)), dtype=np.float32)
        where = np.searchsorted(self.kept_, items)
        where = np.clip(where, 0, len(self.kept_) - 1)
        present = self.kept_[where] == items
        column[np.ix_(self.kept_, np.flatnonzero(present))] = self.B_[:, where[present]]
        return column


class _Factors(_ItemToItem):
    """implicit's matrix factorisation (ALS, BPR): scores are user x item factor products; the reason is the user's
    item whose factors are nearest (cosine) the recommended one's."""

    reason_prefix = "similar to"

    def _model(self):
        raise NotImplementedError

    def _fit(self, catalogue: Catalogue) -> None:
        model = self._model()
        # implicit advises one BLAS thread: its own threads already use every core
        with threadpool_limits(1, "blas"):
            model.fit(catalogue.weight, show_progress=False)
        self.model_ = model
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        norms = np.linalg.norm(self.item_factors_, axis=1, keepdims=True)
        self.item_unit_ = self.item_factors_ / np.where(norms > 0, norms, 1.0)

    def _fold_in(self, rows_matrix: sp.csr_matrix) -> np.ndarray:
        """Factors of users the fit did not see as they are now: the least-squares factors that best reproduce their
        rows from the item factors (ridge, the fit's regularisation)."""
        Y = self.item_factors_.astype(np.float64)
        gram = Y.T @ Y + self.regularization * np.eye(Y.shape[1])
        return np.asarray(rows_matrix @ Y, dtype=np.float64) @ np.linalg.inv(gram)

    def _scores(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        if view is self.catalogue_.fitted:
            return self.user_factors_[rows] @ self.item_factors_.T
        return (self._fold_in(view.weight[rows]) @ self.item_factors_.T).astype(np.float32)

    def _item_item(self, items: np.ndarray) -> np.ndarray:
        return self.item_unit_ @ self.item_unit_[items].T


class ALS(_Factors):
    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, iterations: int = 15,
                 random_state: int = 0):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.random_state = iterations, random_state
        self.name = "als"

    def _model(self):
        from implicit.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                       iterations=self.iterations, random_state=self.random_state)

    def _fold_in(self, rows_matrix: sp.csr_matrix) -> np.ndarray:
        # ALS's own per-user solve, with the fit's confidence weighting
        with threadpool_limits(1, "blas"):
            return np.asarray(self.model_.recalculate_user(np.arange(rows_matrix.shape[0]), rows_matrix.tocsr()))


class BPR(_Factors):
    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, random_state: int = 0):
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.iterations, self.random_state = iterations, random_state
        self.name = "bpr"

    def _model(self):
        from implicit.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           random_state=self.random_state)


class Fallback(Recommender):
    """`first`'s list, then `then`'s items not already in it, up to k: the user's history then a learned model, or any
    model then the popularity of the user's categories (what every served list ends with)."""

    def __init__(self, first: Recommender, then: Recommender):
        self.first, self.then = first, then
        self.name = f"{first.name}_then_{then.name}"

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
    # 0.423 with 31 leaves at 0.05 against 0.430 here; Online Retail 0.330 and 0.329).
    def __init__(self, candidates: int = 50, n_estimators: int = 200, learning_rate: float = 0.02,
                 num_leaves: int = 15, random_state: int = 0, generators: dict[str, Recommender] | None = None):
        self.candidates, self.n_estimators, self.learning_rate = candidates, n_estimators, learning_rate
        self.num_leaves, self.random_state = num_leaves, random_state
        self.generators = generators
        self.name = "reranker"

    def get_params(self) -> dict:
        return {"candidates": self.candidates, "n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "generators": ",".join(self._generators())}

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
        self.models_, self.training_rows_ = {}, {}
        for new_only, parts in examples.items():
            data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if data.empty or data.label.nunique() < 2:
                raise RecommendationInputError(
                    f"the reranker learns from earlier snapshots with buyers: {len(history)} snapshot(s), "
                    f"{0 if data.empty else int(data.label.sum())} bought candidate(s)"
                    + (" of items new to their buyers" if new_only else ""))
            self.features_ = [c for c in data.columns if c not in ("user_id", "item_id", "label", "reason")]
            self.models_[new_only] = self._classifier().fit(data[self.features_], data.label.astype(int))
            self.training_rows_[new_only] = len(data)
        self.generators_ = {name: g.fit(interactions) for name, g in self._generators().items()}
        self.catalogue_ = next(iter(self.generators_.values())).catalogue_
        return self

    def _classifier(self):
        import lightgbm as lgb

        return lgb.LGBMClassifier(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
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
        rows = view.users.get_indexer(merged.user_id)
        cols = catalogue.items.get_indexer(merged.item_id)
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
