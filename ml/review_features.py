"""Point-in-time review features of users (issue 25): per (user, as-of date) from the reviews written strictly
before the date, and what their text says.

``ReviewFeatures`` is unfitted: ``fit`` learns the text encoder (ml/text.py) and a satisfaction model (the text's
probability of a low rating) from the reviews written before a cutoff only; ``transform`` then gives, for any
(user, as-of date) keys, the features of the reviews before each date. Fitted once per training run and kept with
the model version (the artifact ``review_features.skops`` of the version's MLflow run, beside its model), so that
scoring computes the features as training did.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from ml.features import REVIEW_PREFIX, is_review
from ml.text import text_columns, text_encoder

LOW_RATING = 2            # a rating at or below it is a low one (of 1-5)
COUNT_COLUMNS = ("review_count", "review_mean_rating", "review_last_rating", "review_low_share",
                 "review_days_since_last", "review_helpful_share", "review_text_dissatisfaction")


ARTIFACT = "review_features.skops"   # its name in the training run (the parent of the version's run)
MAX_TERMS = 20_000  # words and word pairs each encoder keeps: enough for a few dimensions, and a small artifact
# what skops may rebuild when loading it (the scikit-learn parts are trusted by skops itself)
TRUSTED_TYPES = ["ml.review_features.ReviewFeatures", "ml.text.TfidfSvdEncoder", "ml.text.SentenceEncoder"]


def review_text_columns(dimensions: int) -> list[str]:
    return [f"{REVIEW_PREFIX}{c}" for c in text_columns(dimensions)]


def reads_reviews(columns) -> bool:
    """Whether a model with these input columns reads review features (and so needs its ReviewFeatures)."""
    return any(is_review(c) for c in columns)


def with_review_columns(frame: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``features`` (a ReviewFeatures.transform of its rows, in their order) as its review columns,
    replacing any it had; the frame's index is kept."""
    kept = frame[[c for c in frame.columns if not is_review(c)]]
    return pd.concat([kept, features.set_axis(frame.index)], axis=1)


def save(model: ReviewFeatures, path: Path) -> Path:
    # compressed: skops writes the encoders' vocabularies as JSON, term by term (60 MB for 2 x 50,000 terms; ~6 %
    # of it compressed). skops is imported here, not above: importing it imports every scikit-learn estimator (and
    # PyTorch through them), seconds that every process loading the pipeline's definitions paid
    import skops.io

    skops.io.dump(model, path, compression=zipfile.ZIP_DEFLATED)
    return path


def load(path: Path) -> ReviewFeatures:
    import skops.io

    return skops.io.load(path, trusted=TRUSTED_TYPES)


class ReviewFeatures(BaseEstimator):
    """Features of each user's reviews before an as-of date. ``dimensions``: the mean text embedding's size;
    ``text_model_dir``: a local sentence-transformers model folder to encode with (ml/text.py), else TF-IDF."""

    def __init__(self, dimensions: int = 4, random_state: int = 0, text_model_dir: str | None = None):
        self.dimensions, self.random_state, self.text_model_dir = dimensions, random_state, text_model_dir

    def fit(self, reviews: pd.DataFrame, cutoff) -> ReviewFeatures:
        """Learn the encoder and the satisfaction model from the reviews written before ``cutoff`` only."""
        before = reviews[pd.to_datetime(reviews["review_ts"]) < pd.Timestamp(cutoff)]
        texts = _text(before)
        self.cutoff_ = pd.Timestamp(cutoff).isoformat()  # a string: what skops stores without trusting pandas
        self.reviews_fitted_on_ = len(before)
        self.encoder_ = text_encoder(self.dimensions, self.text_model_dir, MAX_TERMS, self.random_state).fit(texts)
        low = (before["rating"].to_numpy(dtype=float) <= LOW_RATING).astype(int)
        # the text's own reading of satisfaction: its richer encoding (more dimensions than the features keep)
        self.satisfaction_encoder_ = text_encoder(32, self.text_model_dir, MAX_TERMS, self.random_state).fit(texts)
        self.satisfaction_ = (LogisticRegression(C=1.0, max_iter=1000).fit(
            self.satisfaction_encoder_.transform(texts), low) if len(np.unique(low)) == 2 else None)
        return self

    def transform(self, reviews: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
        """One row per row of ``keys`` (user_id, as_of_date), in its order: the features of the user's reviews
        written strictly before the as-of date; NaN where there are none (the count is 0)."""
        keys = keys[["user_id", "as_of_date"]].reset_index(drop=True)
        out = pd.DataFrame(index=keys.index, columns=[*COUNT_COLUMNS, *review_text_columns(self.dimensions)],
                           dtype=float)
        out["review_count"] = 0.0
        if reviews.empty or keys.empty:
            return out
        rows = reviews.assign(review_ts=pd.to_datetime(reviews["review_ts"]))
        rows = rows.assign(_low=(rows["rating"] <= LOW_RATING).astype(float),
                           _dissatisfaction=self._dissatisfaction(rows))
        embedded = pd.DataFrame(self.encoder_.transform(_text(rows)), columns=review_text_columns(self.dimensions),
                                index=rows.index)
        rows = pd.concat([rows, embedded], axis=1)
        # every (key, review before its date) pair: keys and reviews meet on the user
        pairs = keys.reset_index(names="_key").merge(rows, on="user_id")
        pairs = pairs[pairs["review_ts"] < pd.to_datetime(pairs["as_of_date"])]
        if pairs.empty:
            return out
        pairs = pairs.sort_values(["_key", "review_ts"], kind="stable")
        grouped = pairs.groupby("_key")
        helpful, total = grouped["helpful_votes"].sum(min_count=1), grouped["total_votes"].sum(min_count=1)
        found = pd.DataFrame({
            "review_count": grouped.size().astype(float),
            "review_mean_rating": grouped["rating"].mean(),
            "review_last_rating": grouped["rating"].last(),
            "review_low_share": grouped["_low"].mean(),
            "review_days_since_last": (pd.to_datetime(grouped["as_of_date"].first())
                                       - grouped["review_ts"].max()).dt.total_seconds() / 86_400,
            "review_helpful_share": helpful / total.where(total > 0),
            "review_text_dissatisfaction": grouped["_dissatisfaction"].mean(),
            **{c: grouped[c].mean() for c in review_text_columns(self.dimensions)},
        })
        out.loc[found.index, found.columns] = found.to_numpy(dtype=float)
        return out

    def _dissatisfaction(self, rows: pd.DataFrame) -> np.ndarray:
        """The satisfaction model's probability that a review's text goes with a low rating (NaN without one)."""
        if self.satisfaction_ is None:
            return np.full(len(rows), np.nan)
        return self.satisfaction_.predict_proba(self.satisfaction_encoder_.transform(_text(rows)))[:, 1]


def _text(reviews: pd.DataFrame) -> list[str]:
    title = reviews["title"] if "title" in reviews else pd.Series("", index=reviews.index)
    return (title.fillna("").astype(str) + ". " + reviews["text"].fillna("").astype(str)).str.strip(". ").tolist()
