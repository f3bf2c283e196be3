"""Batch scoring: a probability (or an amount) and its decile, each row stamped with the model that made it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ml.evaluate import predict_scores
from ml.explain import TOP_REASONS, reason_codes
from ml.features import to_matrix

REASON_COLUMNS = [f"reason_{k}{suffix}" for k in range(1, TOP_REASONS + 1) for suffix in ("", "_value", "_effect")]


def prediction_columns(score_column: str = "probability", reasons: bool = True) -> list[str]:
    return ["user_id", "as_of_date", score_column, "decile", *(REASON_COLUMNS if reasons else []),
            "model_name", "model_version", "scored_at"]


PREDICTION_COLUMNS = prediction_columns()


def deciles(probability: pd.Series) -> pd.Series:
    """1 for the highest 10 % of scores, 10 for the lowest; ties broken by order, so the sizes are even."""
    ranks = probability.rank(method="first", ascending=False)
    return np.ceil(ranks * 10 / len(probability)).astype(int).clip(1, 10)


def score(frame: pd.DataFrame, model, model_name: str, model_version: str,
          scored_at: dt.datetime | None = None, *, score_column: str = "probability",
          regression: bool = False, reasons: bool = True) -> pd.DataFrame:
    """One row per input row: user_id, as_of_date, the score (probability, or an amount for regression), its
    decile (per as_of_date, 1 = highest), the three reason codes (ml/explain.py), model name and version,
    scored_at."""
    if frame.empty:
        raise ValueError("nothing to score: the scoring population is empty")
    columns = list(model.feature_names_in_)
    X = to_matrix(frame, columns)
    out = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(),
        "as_of_date": pd.to_datetime(frame["as_of_date"]).dt.date.to_numpy(),
        score_column: predict_scores(model, X, regression),
    })
    out["decile"] = out.groupby("as_of_date")[score_column].transform(deciles).astype(int)
    if reasons:  # against each date's own median user, so a range of dates scores as the days one by one would
        X = X.reset_index(drop=True)
        # each date's rows in user order: the importance sample behind the reasons does not depend on the row order
        per_date = [reason_codes(model, X.loc[rows.sort_values("user_id", kind="stable").index], regression)
                    for _, rows in out.groupby("as_of_date", sort=False)]
        out = pd.concat([out, pd.concat(per_date).sort_index()], axis=1)
    out["model_name"] = model_name
    out["model_version"] = str(model_version)
    out["scored_at"] = (scored_at or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    return out[prediction_columns(score_column, reasons)]
