"""Content-based recommendations (issue 25): items described like the ones a user chose, for the items nobody has
interacted with yet, which no collaborative model can recommend (the cold-start list).

An item's text is its name or description (``marts.dim_items.description``), its category, and the titles and texts
of its newest reviews written before the cutoff (``item_texts``). ``ContentBased`` encodes every described item's
text (TF-IDF, TF-IDF reduced by a truncated SVD, or a local sentence-transformers model: ml/text.py), fitted only on
the texts known at the cutoff; a user's profile is the weighted mean of the encodings of the items they interacted
with before it (the interaction mart's weight), and an item's score is the cosine of the profile and the item's
encoding. Any described item can be recommended, one without interactions too. The reason names the user's item
most like the recommended one: ``described like <item>``.

Measured on items held out from training (benchmarks/cold_start.py, docs/reviews.md): it is judged there against
what a shop has without text, the popularity of the item's category and a random order of the new items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from ml.recommend import RECOMMENDATION_COLUMNS, RecommendationInputError, positions_in, strongest_items
from ml.text import SentenceEncoder, TfidfSvdEncoder

ITEM_TEXT_REVIEWS = 20          # an item's text holds its newest this many reviews before the cutoff
SCORE_CELLS_PER_BATCH = 20_000_000  # users x candidate items scored at once (float32): bounds memory
REASON_OWN_ITEMS = 20           # a recommendation is explained by one of the user's this many strongest items
REASON_PAIRS = 2_000_000        # (recommended, own) item pairs compared at once: bounds the reasons' memory


def _clean(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).str.strip()


def item_texts(descriptions: pd.Series | None = None, categories: pd.Series | None = None,
               reviews: pd.DataFrame | None = None, before=None) -> pd.Series:
    """Each item's text (index: item_id): its description, its category and its newest ITEM_TEXT_REVIEWS reviews'
    titles and texts written before ``before`` (reviews: item_id, review_ts, title, text); items with none of these
    are left out. No review written at or after ``before`` is read."""
    parts = []
    for values in (descriptions, categories):
        if values is not None:
            parts.append(_clean(values).groupby(level=0).first())
    if reviews is not None and len(reviews):
        if before is None:
            raise ValueError("item_texts: reviews need the cutoff they were written before")
        written = reviews[pd.to_datetime(reviews["review_ts"]) < pd.Timestamp(before)]
        newest = written.sort_values("review_ts", ascending=False, kind="stable").groupby("item_id").head(ITEM_TEXT_REVIEWS)
        text = (_clean(newest["title"]) + " " + _clean(newest["text"])).str.strip()
        parts.append(text.groupby(newest["item_id"].to_numpy()).agg(" ".join))
    if not parts:
        return pd.Series(dtype=object, name="text")
    joined = pd.concat(parts, axis=1).fillna("").astype(str).agg(" ".join, axis=1).str.strip()
    joined.index = joined.index.astype(str)
    return joined[joined != ""].rename("text")


class ContentBased:
    """Cosine of a user's text profile and each described item's text encoding. ``dimensions`` None: TF-IDF
    itself (words and word pairs; exact words matter in short product names); an int: TF-IDF reduced to that many
    dimensions by a truncated SVD (related words meet). Fitted on interactions before a cutoff and the item texts
    known then; recommends from every described item or from ``candidates``."""

    name = "content"

    def __init__(self, dimensions: int | None = None, min_df: int = 1, text_model_dir: str | None = None):
        self.dimensions, self.min_df, self.text_model_dir = dimensions, min_df, text_model_dir

    def get_params(self) -> dict:
        return {"dimensions": self.dimensions, "min_df": self.min_df, "text_model_dir": self.text_model_dir}

    def fit(self, interactions: pd.DataFrame, texts: pd.Series) -> ContentBased:
        missing = [c for c in ("user_id", "item_id", "weight", "purchases") if c not in interactions.columns]
        if missing:
            raise RecommendationInputError(f"interactions lack column(s) {', '.join(missing)}")
        texts = texts[~texts.index.duplicated()]
        if texts.empty:
            raise RecommendationInputError("ContentBased: no item has a text to encode")
        self.items_ = pd.Index(texts.index.astype(str), name="item_id")
        if self.text_model_dir:  # a local sentence-transformers model (ml/text.py)
            self.encoder_ = SentenceEncoder(self.text_model_dir, self.dimensions or 64).fit(texts.to_numpy())
            self.vectors_ = sp.csr_matrix(self.encoder_.transform(texts.to_numpy()), dtype=np.float32)
        elif self.dimensions is None:
            self.encoder_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode",
                                            min_df=min(self.min_df, len(texts)))
            self.vectors_ = sp.csr_matrix(self.encoder_.fit_transform(texts.to_numpy()), dtype=np.float32)
        else:
            self.encoder_ = TfidfSvdEncoder(self.dimensions, min_df=self.min_df).fit(texts.to_numpy())
            self.vectors_ = sp.csr_matrix(self.encoder_.transform(texts.to_numpy()), dtype=np.float32)
        self.interactions_ = self._described(interactions)
        return self

    def _described(self, interactions: pd.DataFrame) -> pd.DataFrame:
        """The interactions on described items, with the item's position."""
        rows = interactions[["user_id", "item_id", "weight", "purchases"]].copy()
        rows["item_id"] = rows["item_id"].astype(str)
        rows["position"] = positions_in(self.items_, rows["item_id"])
        if not np.isfinite(rows["weight"].to_numpy(dtype=float)).all():
            raise RecommendationInputError("interactions hold non-finite weights")
        return rows[(rows.position >= 0) & (rows.weight > 0)]

    def recommend(self, users, k: int = 10, new_only: bool = False, candidates=None,
                  interactions: pd.DataFrame | None = None) -> pd.DataFrame:
        """k items per user among ``candidates`` (item ids; default every described item), best first, with the
        cosine as score and a reason. Users without an interaction on a described item get nothing. ``new_only``
        leaves out what the user bought; ``interactions`` (as of a later date) replace the fitted ones."""
        rows = self.interactions_ if interactions is None else self._described(interactions)
        wanted = pd.Index(pd.Index(users).astype(str).unique())
        rows = rows[rows.user_id.astype(str).isin(wanted)]
        columns = np.arange(len(self.items_)) if candidates is None else \
            np.unique(positions_in(self.items_, pd.Index(candidates).astype(str)))
        columns = columns[columns >= 0]
        if rows.empty or not len(columns):
            return pd.DataFrame({c: [] for c in RECOMMENDATION_COLUMNS})
        user_codes, user_ids = pd.factorize(rows.user_id.astype(str))
        shape = (len(user_ids), len(self.items_))
        weights = sp.csr_matrix((rows.weight.to_numpy(np.float32), (user_codes, rows.position.to_numpy())), shape=shape)
        bought = sp.csr_matrix(((rows.purchases.to_numpy() > 0).astype(np.float32),
                                (user_codes, rows.position.to_numpy())), shape=shape)
        profiles = normalize(weights @ self.vectors_)       # users x dimensions (sparse for TF-IDF)
        targets = self.vectors_[columns]
        k = min(k, len(columns))
        batch = max(1, SCORE_CELLS_PER_BATCH // len(columns))
        frames = []
        for start in range(0, len(user_ids), batch):
            part = np.arange(start, min(start + batch, len(user_ids)))
            scores = np.asarray((profiles[part] @ targets.T).todense(), dtype=np.float32)
            if new_only:
                own = bought[part][:, columns]
                scores[own.nonzero()] = -np.inf
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            kept = np.isfinite(top_scores)  # -inf (bought) sorts last: what is kept is each row's first ranks
            local = np.repeat(np.arange(len(part))[:, None], k, axis=1)[kept]
            items = columns[top[kept]]
            frames.append(pd.DataFrame({
                "user_id": user_ids[part[local]], "rank": np.tile(np.arange(1, k + 1), (len(part), 1))[kept],
                "item_id": self.items_[items].to_numpy(), "score": top_scores[kept].astype(float),
                "reason": self._reasons(weights[part], local, items)}))
        return pd.concat(frames, ignore_index=True)[list(RECOMMENDATION_COLUMNS)]

    def _reasons(self, user_weights: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``described like <item>`` for each recommended (row of ``user_weights``, item position): of the row's user's
        REASON_OWN_ITEMS strongest items, the one whose encoding is nearest the recommended one's (ties: the first
        by position). Worked out for REASON_PAIRS (recommended, own) pairs at a time."""
        own, _ = strongest_items(user_weights, REASON_OWN_ITEMS)
        reasons = np.full(len(items), "", dtype=object)
        if not len(items) or own.shape[1] == 0:
            return reasons
        step = max(1, REASON_PAIRS // own.shape[1])
        for start in range(0, len(items), step):
            candidates = own[rows[start:start + step]]                     # recommendations x own items
            valid = candidates >= 0
            recommended = np.repeat(items[start:start + step], own.shape[1])[valid.ravel()]
            similarity = np.full(candidates.shape, -np.inf)
            similarity[valid] = np.asarray(self.vectors_[recommended].multiply(
                self.vectors_[candidates[valid]]).sum(axis=1)).ravel()
            nearest = candidates[np.arange(len(candidates)), similarity.argmax(axis=1)]
            found = nearest >= 0
            reasons[start:start + step][found] = "described like " + self.items_[nearest[found]].astype(str)
        return reasons
