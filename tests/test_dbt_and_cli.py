"""dbt unit tests, the Dagster CLI and the shopcast CLI, each as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import pytest

from dagster_project.settings import DBT_PROJECT_DIR, REPO_ROOT, load_settings

BIN = Path(sys.executable).parent


def _run(args, env=None, cwd=REPO_ROOT, timeout=1200):
    proc = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def empty_warehouse(home) -> dict:
    """What dbt's unit tests need and no more: every relation their models read, empty. The raw layer and the
    prediction tables as the pipeline creates them, then dbt's models built with --empty (no whole-graph build).
    Returns the dbt vars of the home."""
    import datetime as dt

    import pandas as pd

    from dagster_project.warehouse import connect, ensure_raw_schema, replace_dates
    from ml.predict import prediction_columns
    from ml.targets import TARGETS

    ensure_raw_schema(home.warehouse)
    with connect(home.warehouse) as con:
        for target in TARGETS.values():  # one typed row, written as scoring writes it, then removed
            row = dict.fromkeys(prediction_columns(target.score_column, True), "x")
            row |= {c: 0.0 for c in row if c.endswith(("_value", "_effect"))}
            row |= {"as_of_date": dt.date(2026, 1, 1), target.score_column: 0.5, "decile": 1,
                    "scored_at": dt.datetime(2026, 1, 1)}
            replace_dates(con, "predictions", target.name, pd.DataFrame([row]))
            con.execute(f"delete from predictions.{target.name}")
    dbt_vars = json.dumps({**load_settings().dbt_vars(), "training_cutoffs": 3, "training_cadence_days": 7})
    _run([str(BIN / "dbt"), "run", "--empty", "--select", "staging", "intermediate", "marts",
          "aud_likely_purchasers_7d", "aud_likely_churning_high_value", "aud_predicted_top_spenders", "--vars", dbt_vars],
         cwd=DBT_PROJECT_DIR)
    return dbt_vars


def test_dbt_unit_tests_pin_the_window_logic(empty_warehouse, tmp_path):
    target = tmp_path / "dbt_target"
    _run([str(BIN / "dbt"), "test", "--select", "test_type:unit", "--target-path", str(target), "--vars",
          empty_warehouse], cwd=DBT_PROJECT_DIR)
    results = json.loads((target / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"].split(".")[-1]: r["status"] for r in results}
    assert statuses == {
        "stg_events_computes_purchase_revenue_and_business_date": "pass",
        "activity_counts_per_day_and_derives_sessions_from_gaps": "pass",
        "features_use_only_events_strictly_before_as_of_date": "pass",
        "intent_prices_habits_and_rhythm_use_only_events_before_as_of_date": "pass",
        "labels_close_only_when_their_window_has_passed": "pass",
        "the_90_day_purchase_label_closes_after_90_days_and_counts_purchases_in_them_only": "pass",
        "rfm_counts_repeat_purchase_days_before_the_as_of_date_only": "pass",
        "outcomes_only_for_closed_windows_and_matching_users": "pass",
        # business days in a zone other than UTC, and across a daylight-saving change (issue 21)
        "business_days_follow_the_business_zone_across_a_daylight_saving_change": "pass",
        "features_use_only_events_before_the_business_day_in_a_zone_ahead_of_utc": "pass",
        # expected buyers and revenue per audience (issue 22)
        "purchasers_carry_their_revenue_forecast_where_revenue_is_published": "pass",
        "audience_sizes_sum_expected_buyers_and_revenue_and_leave_unpublished_ones_null": "pass",
        # what the recommenders are fitted on (issue 23)
        "item_days_count_each_kind_and_leave_out_events_without_an_item": "pass",
        "interactions_use_the_lookback_before_the_as_of_date_only_and_weight_by_type_and_age": "pass",
        "items_take_the_catalogue_first_then_the_latest_category_and_price_seen": "pass",
        # what the sequence models read (issue 24)
        "sequences_hold_the_last_events_strictly_before_the_as_of_date_with_gaps_and_sessions": "pass",
        # what the review features read (issue 25)
        "stg_reviews_dates_a_review_by_the_business_day": "pass",
    }


def test_dagster_definitions_validate():
    proc = _run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"])
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_cli_generate_then_ingest_through_the_dagster_cli_then_status(home):
    _run([str(BIN / "shopcast"), "generate", "--events", "5000", "--days", "20"])
    landed = list((home.landing / "canonical").glob("*.parquet"))
    assert len(landed) == 1
    # the raw asset materialized by Dagster's own CLI, reading the landing folder
    _run([str(BIN / "dagster"), "asset", "materialize", "--select", "raw/events", "-m", "dagster_project.definitions"])
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        rows, loads = con.execute("select (select count(*) from raw.events), (select count(*) from raw.load_audit)").fetchone()
    assert 4_000 < rows < 6_000 and loads == 1
    # the partitions start on the data's first business day (UTC here), not at the 2010 default (issue 26)
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        first_day = con.execute("select cast(min(event_ts) as date) from raw.events").fetchone()[0]
    assert tomllib.loads((home.home / "shopcast.toml").read_text())["partitions_start"] == first_day
    proc = _run([str(BIN / "shopcast"), "ingest", str(landed[0])])
    assert "accepted 0" in proc.stdout and f"duplicate {rows:,}" in proc.stdout
    status = json.loads(_run([str(BIN / "shopcast"), "status", "--json"]).stdout)
    assert {"table": "raw.events", "rows": rows} in status["tables"]
    passed = [c for c in status["checks"] if c["check"] == "raw/events:raw_events_loads_reconcile"]
    assert passed and passed[0]["passed"] is True


def test_cli_reports_a_bad_file_clearly(home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,when\nu1,2026-01-01\n")
    proc = subprocess.run([str(BIN / "shopcast"), "ingest", str(bad)], capture_output=True, text=True,
                          env=dict(os.environ), cwd=REPO_ROOT, check=False)
    assert proc.returncode == 1
    assert "bad.csv: missing required column(s) user_id, event_ts, event_type" in proc.stderr


def test_cli_ingests_a_mapped_export_and_refuses_a_mapping_for_other_formats(home, tmp_path):
    export = tmp_path / "shop_export.csv"
    export.write_text("visitor|when|what|sku\nv1|1767261600|PAGE|s1\nv1|1767265200|BUY|s1\nv2|1767265200|BUY|s2\n")
    mapping = tmp_path / "shop.yaml"
    mapping.write_text("file: {delimiter: '|'}\ncolumns: {user_id: visitor, event_ts: when, event_type: what, "
                       "item_id: sku}\nevent_types: {page: view, buy: purchase}\ntimestamp: {format: epoch_seconds}\n")
    proc = _run([str(BIN / "shopcast"), "ingest", "--format", "mapped", "--mapping", str(mapping), str(export)])
    assert "rows read 3, accepted 3, rejected 0" in proc.stdout
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        assert con.execute("select event_type, count(*) from raw.events group by 1 order by 1").fetchall() == [
            ("purchase", 2), ("view", 1)]
    refused = subprocess.run([str(BIN / "shopcast"), "ingest", "--mapping", str(mapping), str(export)],
                             capture_output=True, text=True, env=dict(os.environ), cwd=REPO_ROOT, check=False)
    assert refused.returncode == 2 and "--mapping applies to --format mapped only" in refused.stderr
