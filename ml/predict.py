"""Batch scoring: a probability (or an amount) and its decile, each row stamped with the model that made it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml.evaluate import predict_scores
from ml.explain import TOP_REASONS, ReasonPlan, reason_codes, reason_plan
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
          regression: bool = False, reasons: bool = True, rows_scorer: RowsScorer | None = None) -> pd.DataFrame:
    """One row per input row: user_id, as_of_date, the score (probability, or an amount for regression), its
    decile (per as_of_date, 1 = highest), the three reason codes (ml/explain.py), model name and version,
    scored_at.

    What depends on a whole date's population (the reasons' plan: each date's median user and its most important
    features; the deciles) is computed here; what depends on each row alone (its score and its reasons) by
    ``rows_scorer``: ``score_rows`` in this process by default, or batches of the rows elsewhere (Spark's
    partitions: dagster_project/spark_engine.py), with the same result."""
    if frame.empty:
        raise ValueError("nothing to score: the scoring population is empty")
    plans = reason_plans(frame, model, regression) if reasons else None
    out = (rows_scorer or score_rows)(frame.reset_index(drop=True), model, plans, score_column, regression)
    out["decile"] = out.groupby("as_of_date")[score_column].transform(deciles).astype(int)
    out["model_name"] = model_name
    out["model_version"] = str(model_version)
    out["scored_at"] = (scored_at or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    return out[prediction_columns(score_column, reasons)]


# (rows, model, the reasons' plan of each date or None, score column, regression) -> the rows' scores and reasons
RowsScorer = Callable[[pd.DataFrame, object, "dict[dt.date, ReasonPlan] | None", str, bool], pd.DataFrame]


def _dates(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(pd.to_datetime(frame["as_of_date"]).dt.date.to_numpy(), index=frame.index)


def reason_plans(frame: pd.DataFrame, model, regression: bool) -> dict[dt.date, ReasonPlan]:
    """Each date's reasons' plan, against its own median user, so that a range of dates scores as the days one by
    one would; from the date's rows in user order (the importance sample does not depend on the row order)."""
    X = to_matrix(frame, list(model.feature_names_in_))
    dates = _dates(frame)
    return {day: reason_plan(model, X.loc[frame.loc[rows.index, "user_id"].sort_values(kind="stable").index],
                             regression)
            for day, rows in dates.groupby(dates, sort=False)}


def score_rows(frame: pd.DataFrame, model, plans: dict[dt.date, ReasonPlan] | None, score_column: str,
               regression: bool) -> pd.DataFrame:
    """user_id, as_of_date, the score and (with ``plans``) the reasons of each row of ``frame``, in its order: each
    row's values depend on that row and its date's plan alone."""
    X = to_matrix(frame, list(model.feature_names_in_)).reset_index(drop=True)
    dates = _dates(frame.reset_index(drop=True))
    out = pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "as_of_date": dates.to_numpy(),
                        score_column: predict_scores(model, X, regression)})
    if plans is not None:
        per_date = [reason_codes(model, X.loc[rows.index], regression, plan=plans[day])
                    for day, rows in dates.groupby(dates, sort=False)]
        out = pd.concat([out, pd.concat(per_date).sort_index()], axis=1)
    return out
