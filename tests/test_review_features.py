"""Point-in-time review features (issue 25): only reviews before the as-of date count, and the text model learns
from reviews before the cutoff only."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.review_features import COUNT_COLUMNS, ReviewFeatures, review_text_columns

PRAISE, COMPLAINT = "works great, love it", "stopped working, returned it, waste of money"


def _reviews() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):  # half the users complain and rate low, half praise and rate high
        unhappy = u % 2 == 0
        for k in range(3):
            rows.append({"user_id": f"u{u}", "item_id": f"i{k}", "review_ts": pd.Timestamp("2026-01-01")
                         + pd.Timedelta(days=int(rng.integers(0, 60))),
                         "rating": float(rng.integers(1, 3) if unhappy else rng.integers(4, 6)),
                         "title": None, "text": COMPLAINT if unhappy else PRAISE,
                         "helpful_votes": 1, "total_votes": 2})
    return pd.DataFrame(rows)


def test_the_features_count_only_the_reviews_before_each_date():
    reviews = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2"],
        "review_ts": pd.to_datetime(["2026-01-01", "2026-01-05", "2026-01-10", "2026-01-02"]),
        "rating": [5.0, 1.0, 1.0, 4.0], "title": ["", "", "", ""],
        "text": [PRAISE, COMPLAINT, COMPLAINT, PRAISE], "helpful_votes": [1, 3, 0, None],
        "total_votes": [2, 4, 0, None]})
    model = ReviewFeatures(dimensions=2).fit(reviews, "2026-01-20")
    keys = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"],
                         "as_of_date": [dt.date(2026, 1, 10), dt.date(2026, 1, 1), dt.date(2026, 1, 10),
                                        dt.date(2026, 1, 10)]})
    out = model.transform(reviews, keys)
    assert list(out.columns) == [*COUNT_COLUMNS, *review_text_columns(2)]
    first = out.iloc[0]  # u1 on 01-10: the reviews of 01-01 and 01-05, not the one at midnight of 01-10
    assert (first.review_count, first.review_mean_rating, first.review_last_rating, first.review_low_share) == (
        2, 3.0, 1.0, 0.5)
    assert first.review_days_since_last == pytest.approx(5.0) and first.review_helpful_share == pytest.approx(4 / 6)
    assert out.iloc[1].review_count == 0 and out.iloc[1, 1:].isna().all()  # nothing before 01-01
    assert out.iloc[2].review_count == 1 and np.isnan(out.iloc[2].review_helpful_share)  # no votes: unknown
    assert out.iloc[3].review_count == 0  # a user without reviews


def test_later_reviews_change_neither_the_features_nor_the_fitted_text_model():
    reviews = _reviews()
    cutoff, as_of = pd.Timestamp("2026-02-01"), dt.date(2026, 2, 1)
    keys = pd.DataFrame({"user_id": [f"u{u}" for u in range(60)], "as_of_date": [as_of] * 60})
    model = ReviewFeatures(dimensions=3).fit(reviews, cutoff)
    before = model.transform(reviews, keys)
    # reviews after the cutoff with words and ratings the earlier ones never had
    later = pd.concat([reviews, reviews.assign(review_ts=reviews["review_ts"] + pd.Timedelta(days=120),
                                               text="brand new vocabulary entirely", rating=3.0)])
    refitted = ReviewFeatures(dimensions=3).fit(later, cutoff)
    pd.testing.assert_frame_equal(refitted.transform(later, keys), before)
    # the text's dissatisfaction reads the complaints: the unhappy half scores higher
    unhappy = before.index % 2 == 0
    seen = before["review_count"] > 0
    assert (before.loc[unhappy & seen, "review_text_dissatisfaction"].mean()
            > before.loc[~unhappy & seen, "review_text_dissatisfaction"].mean() + 0.3)


def test_a_training_run_fits_the_review_features_once_and_new_reviews_before_the_cutoff_refit_them(
        tmp_path, monkeypatch):
    import duckdb

    from dagster_project.defs.resources import WarehouseResource
    from dagster_project.defs.reviews import fit_review_features

    reviews = _reviews().assign(review_id=lambda f: [f"r{i}" for i in range(len(f))], title="",
                                review_ts_local=lambda f: f.review_ts, review_date=lambda f: f.review_ts.dt.date)
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema staging")
        con.execute("create table staging.stg_shop__reviews as select * from reviews")
    warehouse, cache = WarehouseResource(path=str(path)), tmp_path / "cache"
    first = fit_review_features(warehouse, "2026-02-15", cache_dir=cache)
    assert len(list(cache.glob("*.skops"))) == 1

    def refit(*args, **kwargs):
        raise AssertionError("fitted again")

    with monkeypatch.context() as patched:  # the other targets of the run load the same fit
        patched.setattr(ReviewFeatures, "fit", refit)
        again = fit_review_features(warehouse, "2026-02-15", cache_dir=cache)
        keys = reviews[["user_id"]].drop_duplicates().assign(as_of_date=dt.date(2026, 2, 15))
        pd.testing.assert_frame_equal(again.transform(reviews, keys), first.transform(reviews, keys))
        with duckdb.connect(str(path)) as con:  # a review after the cutoff is not what the fit learns from
            con.execute("insert into staging.stg_shop__reviews select * replace ('late' as review_id, "
                        "timestamp '2026-03-20' as review_ts_local, date '2026-03-20' as review_date) "
                        "from staging.stg_shop__reviews where review_id = 'r0'")
        fit_review_features(warehouse, "2026-02-15", cache_dir=cache)
    with duckdb.connect(str(path)) as con:  # one that arrives late but was written before it is
        con.execute("insert into staging.stg_shop__reviews select * replace ('arrived-late' as review_id, "
                    "timestamp '2026-01-02' as review_ts_local, date '2026-01-02' as review_date) "
                    "from staging.stg_shop__reviews where review_id = 'r0'")
    refitted = fit_review_features(warehouse, "2026-02-15", cache_dir=cache)
    assert refitted.reviews_fitted_on_ == first.reviews_fitted_on_ + 1 and len(list(cache.glob("*.skops"))) == 2
