"""monitoring.model_decisions: every gate decision (and every retrain that could not be decided), with its trigger,
reason and figures. Appended, never rewritten: it is the history BI and auditors read."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

MODEL_DECISIONS_DDL = """
create schema if not exists monitoring;
create table if not exists monitoring.model_decisions (
    decided_at timestamp, as_of_date date, target varchar, trigger varchar, dagster_run_id varchar,
    decision varchar, promoted boolean, candidate_version varchar, candidate_family varchar, incumbent varchar,
    metric varchar, candidate_score double, incumbent_score double, margin double, backtest_folds varchar,
    reason varchar
)
"""
COLUMNS = ["decided_at", "as_of_date", "target", "trigger", "dagster_run_id", "decision", "promoted",
           "candidate_version", "candidate_family", "incumbent", "metric", "candidate_score", "incumbent_score",
           "margin", "backtest_folds", "reason"]

# Run tags that say why a training run started (the retraining sensor sets the first; schedules set the second).
TRIGGER_TAG = "shopcast/trigger"
SCHEDULE_TAG = "dagster/schedule_name"


def trigger_of(tags: dict) -> str:
    """drift / performance (the retraining sensor), schedule:<name>, or manual (the UI, the CLI)."""
    if tags.get(TRIGGER_TAG):
        return tags[TRIGGER_TAG]
    if tags.get(SCHEDULE_TAG):
        return f"schedule:{tags[SCHEDULE_TAG]}"
    return "manual"


def record(con, **values) -> None:
    """Append one decision (missing fields are NULL)."""
    con.execute(MODEL_DECISIONS_DDL)
    row = {c: values.get(c) for c in COLUMNS}
    row["decided_at"] = row["decided_at"] or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if isinstance(row["backtest_folds"], list):
        row["backtest_folds"] = json.dumps(row["backtest_folds"])
    frame = pd.DataFrame([row], columns=COLUMNS)
    con.register("decision_row", frame)
    try:
        con.execute(f"insert into monitoring.model_decisions select {', '.join(COLUMNS)} from decision_row")
    finally:
        con.unregister("decision_row")
