"""Model inputs: the documented numeric columns of marts.feat_user_daily, and unfitted preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ml.sequences import is_token
from ml.targets import LABELS

# Keys, dates and labels of the training set: never model inputs.
NON_FEATURES = {"user_id", "as_of_date", "cutoff_rank", "features_version", *LABELS}
# Personal attributes (raw.users has age, gender, region): never model inputs unless personal_features is
# on. A column is personal when its name is one of these or starts with one and an underscore (age_band, gender_f).
PERSONAL_ATTRIBUTES = ("age", "birth_year", "date_of_birth", "gender", "sex", "region", "country", "city",
                       "postcode", "zip_code", "ethnicity", "religion", "income")


def is_personal(column: str) -> bool:
    name = column.lower()
    return any(name == p or name.startswith(p + "_") for p in PERSONAL_ATTRIBUTES)


# Feature sets, a dimension of the model search (ml/train.py): each family is a candidate on every set (its grid
# searched on the tuning cutoff), and the candidates meet the floor, the choice on validation and the gate like any
# other, so a set stays only where it wins. (The tuning cutoff alone chose the set at first: on GA, with ~40 buyers
# per cutoff, it picked the behaviour set for noise and nothing passed the floor.)
#   counts     window counts (1/7/28/90 days), recencies in days, revenue, sessions, conversion rates, breadth,
#              tenure, and the BG/NBD outputs
#   behaviour  counts, plus what a stronger model on web data used (issue 22): prices of the items viewed and carted,
#              hour-of-day and weekend habits, gaps between active days and how overdue the next one is, 14-day and
#              whole-history windows, distinct purchase days, hours since the last view/cart/checkout, and the open
#              cart (items carted and neither bought nor removed, their value and age)
#   reviews    behaviour, plus what the user's reviews before the date say (ml/review_features.py: counts, ratings,
#              the text's dissatisfaction and its mean embedding), where the shop loads reviews (issue 25)
#   sequence   behaviour, plus each user's last events as tokens (ml/sequences.py): only the sequence families read
#              it, and only where the frame carries the tokens
FEATURE_SETS = ("counts", "behaviour", "reviews", "sequence")
REVIEW_PREFIX = "review_"  # every column of ml/review_features.py
BEHAVIOUR_COLUMNS = frozenset({
    "purchase_days_28d", "purchase_days_90d", "purchase_days_all", "revenue_all",
    "mean_viewed_price_28d", "max_viewed_price_28d", "mean_carted_price_28d", "max_carted_price_28d",
    "mean_event_hour_90d", "evening_event_share_90d", "night_event_share_90d", "weekend_event_share_90d",
    "mean_days_between_active_days_90d", "min_days_between_active_days_90d", "active_day_overdue_days_90d",
    "mean_days_between_purchase_days_all", "purchase_overdue_days_all",
    "hours_since_last_view", "hours_since_last_cart", "hours_since_last_checkout", "hours_since_last_event",
    "open_cart_items", "open_cart_value", "open_cart_age_hours",
})


def is_behaviour(column: str) -> bool:
    return column in BEHAVIOUR_COLUMNS or column.endswith("_14d")


def is_review(column: str) -> bool:
    return column.startswith(REVIEW_PREFIX)


def feature_sets(columns: list[str], names: list[str] | None = None) -> dict[str, list[str]]:
    """The named sets (default all) restricted to ``columns``, in their order; a set with the same columns as an
    earlier one (data without any behaviour column) is left out."""
    unknown = [n for n in names or [] if n not in FEATURE_SETS]
    if unknown:
        raise ValueError(f"unknown feature sets: {', '.join(unknown)} (known: {', '.join(FEATURE_SETS)})")
    aggregated = [c for c in columns if not is_token(c) and not is_review(c)]
    reviews = [c for c in columns if not is_token(c)]
    tokens = [c for c in columns if not is_review(c)]
    sets = {"counts": [c for c in aggregated if not is_behaviour(c)], "behaviour": aggregated,
            "reviews": reviews if len(reviews) > len(aggregated) else [],
            "sequence": tokens if len(tokens) > len(aggregated) else []}
    chosen: dict[str, list[str]] = {}
    for name in names or FEATURE_SETS:
        if sets[name] and sets[name] not in chosen.values():
            chosen[name] = sets[name]
    return chosen


def feature_columns(frame: pd.DataFrame, allow_personal: bool = False) -> list[str]:
    """Numeric feature columns, in the mart's order; keys, dates and labels excluded, personal attributes excluded
    unless allowed, and so are columns with no value at all in this data (a shop without checkout events has no
    recency of checkout)."""
    return [c for c in frame.columns
            if c not in NON_FEATURES and (allow_personal or not is_personal(c))
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def varies(values: pd.Series) -> bool:
    """Whether a column varies in the rows models are fitted on. A (nearly) constant one says nothing there, and a
    scaler would blow its tiny spread up to unit variance: BG/NBD's P(alive) within 1e-5 of 1 at every training cutoff
    of a sparse shop (the Amazon reviews), then 0.37 for one user at scoring, was 10^5 standard deviations, and a
    logistic regression then gave the whole population a mean probability of 0.90 against a base rate of 0.32."""
    known = values.dropna().astype(float)
    if known.empty:
        return False
    return float(known.max() - known.min()) > 1e-4 * max(1.0, float(known.abs().max()))


def to_matrix(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The model input frame: the given columns as float64 (NULLs become NaN), in that order."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the input: {', '.join(missing)}")
    return frame[columns].astype("float64")


def _signed_log1p(values):
    return np.sign(values) * np.log1p(np.abs(values))


def scaled_preprocessor(columns: list[str]) -> ColumnTransformer:
    """For linear models, SVMs and neural networks: impute (with missing indicators), compress heavy tails, scale."""
    steps = Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ("log", FunctionTransformer(_signed_log1p, feature_names_out="one-to-one")),
        ("scale", StandardScaler()),
    ])
    return ColumnTransformer([("numeric", steps, columns)], verbose_feature_names_out=False)


def tree_preprocessor(columns: list[str]) -> ColumnTransformer:
    """For trees that cannot take NaN: a sentinel below every real value (recency NULL = 'never')."""
    return ColumnTransformer(
        [("numeric", SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True), columns)],
        verbose_feature_names_out=False,
    )
