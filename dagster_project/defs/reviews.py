"""Review features for the models that read them (issue 25): the reviews of staging.stg_shop__reviews turned into
each user's point-in-time features (ml/review_features.py) for training, the gate, scoring and drift.

Training fits one ReviewFeatures per run on the reviews written before the training sample's newest cutoff (the
validation cutoff: no text of its label window or later reaches the encoder), and each candidate that reads its
columns is logged with it. Every target's candidates need the same fit, so the first one saves it in the home
(``cache/review_features``) under a fingerprint of what it learned from (the cutoff, the reviews before it, the
encoder's settings, the text model's files) and the others load it; new or late reviews change the fingerprint. Every later reader (the gate's backtest, scoring, drift) recomputes a version's features
with that version's own fitted copy, so that a champion keeps reading the encoding it was trained on.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from dagster_project.defs.resources import WarehouseResource
from ml.registry import RegisteredModel, Store, load_review_features
from ml.review_features import ReviewFeatures, load, reads_reviews, save, with_review_columns
from ml.text import folder_checksum

STAGED_REVIEWS = "staging.stg_shop__reviews"
# the encoder learns from at most the newest this many reviews before the cutoff (memory and time stay bounded on
# a shop with millions; the features themselves read every review of the users they describe)
FIT_REVIEWS_AT_MOST = 200_000
CACHED_FITS_KEPT = 8  # the newest fits stay in the home's cache (one per training date and review state)
# a review counts for an as-of date when its business day is before it: its local time is compared with midnight
_SELECT = (f"select user_id, review_ts_local as review_ts, rating, title, text, helpful_votes, total_votes "
           f"from {STAGED_REVIEWS}")


def reviews_before(warehouse: WarehouseResource, cutoff) -> int:
    """How many reviews were written before ``cutoff`` (0 where the shop loads none)."""
    if not warehouse.has_table("staging", "stg_shop__reviews"):
        return 0
    return int(warehouse.scalar(f"select count(*) from {STAGED_REVIEWS} where review_date < ?",
                                [pd.Timestamp(cutoff).date()]))


def reviews_of(warehouse: WarehouseResource, keys: pd.DataFrame) -> pd.DataFrame:
    """The reviews of the users of ``keys`` (user_id, as_of_date) written before their newest as-of date."""
    newest = pd.Timestamp(keys["as_of_date"].max()).date()
    return warehouse.query_df(f"{_SELECT} where review_date < ? and user_id in (select unnest(?))",
                              [newest, keys["user_id"].astype(str).unique().tolist()])


def fit_review_features(warehouse: WarehouseResource, cutoff, text_model_dir: str = "",
                        cache_dir: Path | None = None) -> ReviewFeatures:
    """A ReviewFeatures fitted on the reviews written before ``cutoff`` (the newest FIT_REVIEWS_AT_MOST), its text
    encoded by the local model in ``text_model_dir`` where set (ml/text.py), else by TF-IDF. With ``cache_dir``,
    the same fit made earlier (by another target's candidates) is loaded instead of refitted."""
    day = pd.Timestamp(cutoff).date()
    unfitted = ReviewFeatures(text_model_dir=text_model_dir or None)
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{_fingerprint(warehouse, day, unfitted)}.skops"
        if cached.is_file():
            return load(cached)
    reviews = warehouse.query_df(f"{_SELECT} where review_date < ? order by review_ts_local desc, user_id limit ?",
                                 [day, FIT_REVIEWS_AT_MOST])
    fitted = unfitted.fit(reviews, day)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".tmp", delete=False) as part:
            save(fitted, Path(part.name))
        os.replace(part.name, cached)  # whole or absent: a concurrent reader never sees half a file
        for old in sorted(cached.parent.glob("*.skops"), key=lambda p: p.stat().st_mtime)[:-CACHED_FITS_KEPT]:
            old.unlink(missing_ok=True)
    return fitted


def _fingerprint(warehouse: WarehouseResource, day, unfitted: ReviewFeatures) -> str:
    """What a fit at ``day`` learns from: the reviews before it (count and an order-free hash of their ids, times
    and texts), the encoder's settings and the text model's files."""
    count, content = warehouse.query_df(
        f"select count(*) as n, coalesce(sum(hash(review_id, review_ts_local, title, text, rating)), 0) as h "
        f"from {STAGED_REVIEWS} where review_date < ?", [day]).iloc[0]
    model = unfitted.text_model_dir
    described = {"day": str(day), "reviews": int(count), "content": str(content), "at_most": FIT_REVIEWS_AT_MOST,
                 "params": {k: str(v) for k, v in unfitted.get_params().items()},
                 "text_model": folder_checksum(Path(model)) if model else None}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def training_review_features(warehouse: WarehouseResource, frame: pd.DataFrame, text_model_dir: str = "",
                             cache_dir: Path | None = None) -> tuple[pd.DataFrame, ReviewFeatures | None, str]:
    """(the training frame with its review columns, the ReviewFeatures fitted for them, what was done): the frame
    unchanged and None where there are no reviews before its newest cutoff."""
    cutoff = frame["as_of_date"].max()
    written = reviews_before(warehouse, cutoff)
    if written == 0:
        return frame, None, f"no review features: no review written before {pd.Timestamp(cutoff).date()}"
    fitted = fit_review_features(warehouse, cutoff, text_model_dir, cache_dir)
    out = with_review_columns(frame, fitted.transform(reviews_of(warehouse, frame), frame))
    reviewers = int((out["review_count"] > 0).sum())
    encoder = f"the text model in {text_model_dir}" if text_model_dir else "TF-IDF"
    return out, fitted, (f"review features ({encoder}) fitted on {fitted.reviews_fitted_on_} reviews before "
                         f"{pd.Timestamp(cutoff).date()}; {reviewers} of {len(out)} training rows have reviews")


def with_version_review_features(warehouse: WarehouseResource, store: Store, entry: RegisteredModel, model,
                                 rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the review features of a registered version that reads them, computed by the ReviewFeatures
    logged with it; unchanged for a version that reads none."""
    if not reads_reviews(getattr(model, "feature_names_in_", [])):
        return rows
    fitted = load_review_features(store, entry)
    return with_review_columns(rows, fitted.transform(reviews_of(warehouse, rows), rows))
