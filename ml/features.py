"""Model inputs: the documented numeric columns of marts.feat_user_daily, and unfitted preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

# Keys, dates and labels of the training set: never model inputs.
NON_FEATURES = {"user_id", "as_of_date", "cutoff_rank", "purchase_next_7d", "churn_next_7d", "revenue_next_28d"}
# Personal attributes (raw.users has age, gender, region): never model inputs unless personal_features is
# on. A column is personal when its name is one of these or starts with one and an underscore (age_band, gender_f).
PERSONAL_ATTRIBUTES = ("age", "birth_year", "date_of_birth", "gender", "sex", "region", "country", "city",
                       "postcode", "zip_code", "ethnicity", "religion", "income")


def is_personal(column: str) -> bool:
    name = column.lower()
    return any(name == p or name.startswith(p + "_") for p in PERSONAL_ATTRIBUTES)


def feature_columns(frame: pd.DataFrame, allow_personal: bool = False) -> list[str]:
    """Numeric feature columns, in the mart's order; keys, dates and labels excluded, personal attributes excluded
    unless allowed, and so are columns with no value at all in this data (a shop without checkout events has no
    recency of checkout)."""
    return [c for c in frame.columns
            if c not in NON_FEATURES and (allow_personal or not is_personal(c))
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


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
