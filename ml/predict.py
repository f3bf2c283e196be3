"""Batch scoring: probabilities and deciles, each row stamped with the model that made it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ml.features import to_matrix

PREDICTION_COLUMNS = ["user_id", "as_of_date", "probability", "decile", "model_name", "model_version", "scored_at"]


def deciles(probability: pd.Series) -> pd.Series:
    """1 for the highest 10 % of scores, 10 for the lowest; ties broken by order, so the sizes are even."""
    ranks = probability.rank(method="first", ascending=False)
    return np.ceil(ranks * 10 / len(probability)).astype(int).clip(1, 10)


def score(frame: pd.DataFrame, model, model_name: str, model_version: str,
          scored_at: dt.datetime | None = None) -> pd.DataFrame:
    """One row per input row: user_id, as_of_date, probability, decile (per as_of_date), model name/version."""
    if frame.empty:
        raise ValueError("nothing to score: the scoring population is empty")
    columns = list(model.feature_names_in_)
    probability = model.predict_proba(to_matrix(frame, columns))[:, 1]
    out = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(),
        "as_of_date": pd.to_datetime(frame["as_of_date"]).dt.date.to_numpy(),
        "probability": probability,
    })
    out["decile"] = out.groupby("as_of_date")["probability"].transform(deciles).astype(int)
    out["model_name"] = model_name
    out["model_version"] = str(model_version)
    out["scored_at"] = (scored_at or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    return out[PREDICTION_COLUMNS]
