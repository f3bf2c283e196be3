"""End to end through Dagster on a small generated data set: table contents, leakage, idempotency, the gate."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import duckdb
import pandas as pd
import pytest

from dagster_project import runs
from tests.conftest import DEMO_AS_OF
from tests.support import materialize

pytestmark = pytest.mark.slow

FEATURES_SQL = "select * from marts.feat_user_daily where as_of_date = ? order by user_id"
INTERACTIONS_SQL = "select * from marts.fct_user_item_interactions where as_of_date = ? order by user_id, item_id"
SEQUENCES_SQL = "select * from marts.fct_user_event_sequences where as_of_date = ? order by user_id, position"


def _read(paths, sql, params=None) -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute(sql, params or []).df()


def _metadata(key: list[str]) -> dict:
    with runs.instance() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_whole_graph_materializes_point_in_time_marts(pipeline):
    counts = _read(pipeline, """
        select
            (select count(*) from raw.events) as raw_events,
            (select count(*) from marts.feat_user_daily where as_of_date = ?) as features_today,
            (select count(distinct as_of_date) from marts.fct_training_set) as training_cutoffs,
            (select min(as_of_date) from marts.fct_training_set) as oldest_cutoff,
            (select count(*) from marts.fct_scoring_population) as scoring_rows,
            (select count(*) - count(distinct (user_id, as_of_date)) from marts.feat_user_daily) as duplicate_rows
    """, [DEMO_AS_OF]).iloc[0]
    assert counts.raw_events > 35_000
    assert counts.features_today > 100
    assert counts.training_cutoffs == 3 and counts.oldest_cutoff.date() == DEMO_AS_OF - dt.timedelta(days=21)
    assert counts.scoring_rows == counts.features_today
    assert counts.duplicate_rows == 0
    # the population: users with an event in the 28 days before, and nobody else
    expected_users = _read(pipeline, """
        select count(distinct user_id) from raw.events
        where event_ts >= cast(? as date) - interval 28 day and event_ts < cast(? as date)
    """, [DEMO_AS_OF, DEMO_AS_OF]).iloc[0, 0]
    assert counts.features_today == expected_users
    # features agree with a direct count over raw events for one user
    user = _read(pipeline, FEATURES_SQL, [DEMO_AS_OF]).sort_values("events_28d").iloc[-1]
    direct = _read(pipeline, """
        select count(*) filter (where event_type = 'view'), count(*) filter (where event_type = 'purchase'),
               coalesce(sum(price * quantity) filter (where event_type = 'purchase'), 0)
        from raw.events where user_id = ? and event_ts >= cast(? as date) - interval 28 day and event_ts < cast(? as date)
    """, [user.user_id, DEMO_AS_OF, DEMO_AS_OF]).iloc[0]
    assert (user.view_count_28d, user.purchase_count_28d) == (direct.iloc[0], direct.iloc[1])
    assert user.revenue_28d == pytest.approx(direct.iloc[2])
    labels = _read(pipeline, "select avg(purchase_next_7d) as rate, count(*) filter (where revenue_next_28d is not null) as closed from marts.fct_training_set")
    assert 0.01 < labels.rate[0] < 0.6
    assert labels.closed[0] == 0  # 3 weekly cutoffs: no 28-day window has closed yet


def test_the_first_run_computes_the_features_of_its_training_cutoffs_not_of_every_day(pipeline):
    cutoffs = {DEMO_AS_OF - dt.timedelta(days=7 * k) for k in (1, 2, 3)}
    for table in ("feat_user_daily", "feat_user_rfm"):
        built = set(_read(pipeline, f"select distinct as_of_date from marts.{table}").as_of_date.dt.date)
        assert built == cutoffs | {DEMO_AS_OF}, table
    metadata = _metadata(["marts", "training_cutoff_features"])
    assert (metadata["cutoffs"], metadata["computed"], metadata["already_built"]) == (3, 3, 0)
    assert metadata["dagster/row_count"] == _read(pipeline, "select count(*) from marts.fct_training_set").iloc[0, 0]
    # a retrain of the same date finds them built and computes nothing (the asset alone, as the weekly training
    # job runs it: the rest of that job adds nothing to what is asserted)
    materialize(dg.AssetSelection.assets(["marts", "training_cutoff_features"]), DEMO_AS_OF)
    metadata = _metadata(["marts", "training_cutoff_features"])
    assert (metadata["computed"], metadata["already_built"]) == (0, 3)


def test_dbt_parses_the_project_once_per_run_and_learns_each_runs_values_apart(pipeline):
    # each invocation's target folder lies in the home, oldest first; the run's process parsed the project once, in
    # a folder of its own, whole (the home is new: no earlier parse), and every build used that parse
    invocations = sorted(p for p in pipeline.dbt_invocations.iterdir() if p.is_dir())
    logs = {p.name.split("-")[1]: (p / "dbt.log").read_text() for p in invocations}
    assert [p.name.split("-")[1] for p in invocations] == [
        "dbt_staging", "parse", "training_cutoff_features", "dbt_marts", "cutoff_interactions", "dbt_audiences"]
    assert "Unable to do partial parsing" in logs.pop("parse")
    assert all(re.search(r"Found \d+ models", log) and "partial parsing" not in log.lower() for log in logs.values())
    # the run's values reached dbt all the same: the run's 3 training cutoffs, not dbt_project.yml's 12
    compiled = invocations[3] / "compiled" / "shopcast" / "models" / "marts" / "fct_training_set.sql"
    assert "range(1, 3 + 1)" in compiled.read_text()


def test_a_home_built_before_the_feature_columns_changed_recomputes_its_cutoffs(pipeline):
    """An upgrade: the warehouse was built by the release before the behaviour features (no features_version, no
    new columns in the activity table). The training cutoffs count as not built; recomputing them appends the new
    columns, recounts the activity days of their window, and gives the features a fresh build gives."""
    from dagster_project.defs.dbt_assets import TRAINING_CUTOFF_FEATURES

    cutoffs = sorted(DEMO_AS_OF - dt.timedelta(days=7 * k) for k in (1, 2, 3))
    rows = "select * from marts.feat_user_daily where as_of_date in (select unnest(?)) order by as_of_date, user_id"
    fresh = _read(pipeline, rows, [cutoffs])
    with duckdb.connect(str(pipeline.warehouse)) as con:
        for column in ("features_version", "open_cart_items", "hours_since_last_cart", "events_14d"):
            con.execute(f"alter table marts.feat_user_daily drop column {column}")
        for column in ("last_event_ts", "last_cart_ts", "cart_price_max", "event_hour_sum"):
            con.execute(f"alter table intermediate.int_user_daily_activity drop column {column}")
    runs._execute("weekly_training", partition_key=DEMO_AS_OF.isoformat(), asset_selection=[TRAINING_CUTOFF_FEATURES])
    assert (_metadata(["marts", "training_cutoff_features"])["computed"]) == 3
    upgraded = _read(pipeline, rows, [cutoffs])
    pd.testing.assert_frame_equal(fresh, upgraded[fresh.columns])
    unstamped = _read(pipeline, "select count(*) from intermediate.int_user_daily_activity where last_event_ts is null "
                                "and activity_date >= ? and activity_date < ?",
                      [cutoffs[0] - dt.timedelta(days=90), cutoffs[-1]]).iloc[0, 0]
    assert unstamped == 0


def test_every_target_trains_on_the_one_sample_the_run_drew_and_validated(pipeline):
    sample = _read(pipeline, "select as_of_date, count(*) as n from training.training_sample group by 1 order by 1")
    training_set = _read(pipeline, "select as_of_date, count(*) as n from marts.fct_training_set group by 1 order by 1")
    # the demo's cutoffs are below the bound: the sample is the whole training set, with the BG/NBD columns
    assert sample.equals(training_set)
    columns = set(_read(pipeline, "select * from training.training_sample limit 0").columns)
    assert {"clv_p_alive", "clv_expected_revenue_28d", "purchase_next_7d"} <= columns
    assert _metadata(["training", "training_sample"])["dagster/row_count"] == sample.n.sum()
    for target in ("purchase_propensity_7d", "churn_probability_7d", "predicted_revenue_28d"):
        assert _metadata(["models", f"{target}_candidates"])["training_set_rows_loaded"] == sample.n.sum(), target
    # a target run alone after the training set moved on refuses the older sample, loudly
    with duckdb.connect(str(pipeline.warehouse)) as con:
        con.execute("delete from training.training_sample where as_of_date = (select max(as_of_date) from "
                    "training.training_sample)")
    with pytest.raises(runs.RunFailed, match="materialize training/training_sample with the models"):
        runs._execute("weekly_training", partition_key=DEMO_AS_OF.isoformat(),
                      asset_selection=[dg.AssetKey(["models", "churn_probability_7d_candidates"])])


def test_feature_counts_are_bigint_not_hugeint_for_arrow_and_bi_readers(pipeline):
    types = _read(pipeline, """
        select table_name, column_name, data_type from information_schema.columns
        where table_schema in ('intermediate', 'marts', 'training') and data_type like 'HUGEINT%'
    """)
    assert types.empty, types.to_string()
    kinds = _read(pipeline, "select data_type from information_schema.columns where table_name = 'feat_user_daily' "
                            "and column_name in ('events_7d', 'view_count_28d', 'sessions_28d')")
    assert set(kinds.data_type) == {"BIGINT"}


def test_every_check_of_the_run_passed_and_status_reports_it(pipeline):
    from dagster_project.status import collect

    report = collect()
    checks = {c["check"]: c for c in report["checks"]}
    for name in ("staging/stg_shop__events:raw_events_suite", "marts/feat_user_daily:feat_user_daily_suite",
                 "training/training_sample:training_set_suite", "marts/fct_scoring_population:scoring_population_suite"):
        assert checks[name]["passed"] is True, checks[name]
    tables = {t["table"]: t["rows"] for t in report["tables"]}
    assert tables["raw.events"] > 35_000 and tables["marts.fct_training_set"] > 0


def test_status_lists_the_checks_the_run_stored_and_reads_the_definitions_again_when_the_settings_change(
        pipeline, monkeypatch):
    expected = sorted(runs.definitions().resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())
    assert len(expected) > 80

    def not_loaded():
        raise AssertionError("the definitions were loaded")

    monkeypatch.setattr(runs, "definitions", not_loaded)
    assert runs.asset_check_keys() == expected  # stored by the run that built the home (this is a copy of it)
    # another target (a new process's definitions hold its checks too): the stored list is not trusted
    monkeypatch.setenv("SHOPCAST_EXTRA_TARGETS", "purchase_propensity_90d")
    with pytest.raises(AssertionError, match="definitions were loaded"):
        runs.asset_check_keys()
    monkeypatch.undo()
    monkeypatch.setenv("SHOPCAST_EXTRA_TARGETS", "purchase_propensity_90d")
    again = runs.asset_check_keys()
    assert again == sorted(runs.definitions().resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())
    monkeypatch.setattr(runs, "definitions", not_loaded)
    assert runs.asset_check_keys() == again  # and stored for the next status


def _build_interactions(as_of: dt.date, with_features: bool = False) -> None:
    """The user x item interactions (and the item days they sum) of one as-of date, as a Dagster materialization;
    ``with_features``: the features and their checks too, in the same run (one dbt build of each layer for both)."""
    features = [["marts", "feat_user_daily"], ["marts", "feat_user_rfm"]] if with_features else []
    materialize(dg.AssetSelection.assets(["marts", "fct_user_item_interactions"], *features).upstream()
                - dg.AssetSelection.groups("ingest"), as_of)


def _build_sequences(as_of: dt.date) -> None:
    """The event sequences of one as-of date (dbt, as the sequence models will ask for them)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from dagster_project.settings import DBT_PROJECT_DIR, load_settings

    subprocess.run([str(Path(sys.executable).parent / "dbt"), "build", "--select", "fct_user_event_sequences",
                    "--exclude-resource-type", "unit_test", "--vars",
                    json.dumps({**load_settings().dbt_vars(), "as_of_date": as_of.isoformat(),
                                "min_as_of_date": as_of.isoformat(), "training_cutoffs": 3,
                                "training_cadence_days": 7})],
                   cwd=DBT_PROJECT_DIR, check=True, capture_output=True, timeout=600)


def test_events_after_the_as_of_date_change_no_feature_row(pipeline, tmp_path):
    as_of = DEMO_AS_OF - dt.timedelta(days=7)
    _build_interactions(as_of)  # the demo run built the interactions of its own date only
    _build_sequences(as_of)
    before = _read(pipeline, FEATURES_SQL, [as_of])
    interactions_before = _read(pipeline, INTERACTIONS_SQL, [as_of])
    sequences_before = _read(pipeline, SEQUENCES_SQL, [as_of])
    assert len(interactions_before) > 1000 and len(sequences_before) > 1000
    users = before.user_id.head(20).tolist()
    # every kind of event, at midnight of the as-of date and days later: the open cart, prices, hours since the
    # last event and whole-history purchases must not see them either
    kinds = ["purchase", "cart", "remove_from_cart", "view", "checkout"]
    late = pd.DataFrame({
        "user_id": users * 2,
        "event_ts": [pd.Timestamp(as_of)] * len(users) + [pd.Timestamp(as_of) + pd.Timedelta(days=3)] * len(users),
        "event_type": [kinds[i % len(kinds)] for i in range(2 * len(users))],
        "item_id": [f"late-{i % 3}" for i in range(2 * len(users))],
        "price": [99.0] * (2 * len(users)),
    })
    late.to_parquet(tmp_path / "late.parquet")
    runs.ingest("canonical", [str(tmp_path / "late.parquet")])
    _build_interactions(as_of, with_features=True)
    _build_sequences(as_of)
    after = _read(pipeline, FEATURES_SQL, [as_of])
    pd.testing.assert_frame_equal(before, after)
    pd.testing.assert_frame_equal(interactions_before, _read(pipeline, INTERACTIONS_SQL, [as_of]))
    pd.testing.assert_frame_equal(sequences_before, _read(pipeline, SEQUENCES_SQL, [as_of]))
    # the same kind of event one day earlier does change the features: the comparison can fail
    early = late.head(2).assign(event_ts=pd.Timestamp(as_of) - pd.Timedelta(hours=1), item_id=["early-0", "early-1"])
    early.to_parquet(tmp_path / "early.parquet")
    runs.ingest("canonical", [str(tmp_path / "early.parquet")])
    _build_interactions(as_of, with_features=True)
    _build_sequences(as_of)
    changed = _read(pipeline, FEATURES_SQL, [as_of]).set_index("user_id")
    was = before.set_index("user_id")
    assert changed.loc[users[0], "purchase_count_1d"] == was.loc[users[0], "purchase_count_1d"] + 1
    bought_yesterday = was.loc[users[0], "days_since_last_purchase"]
    assert changed.loc[users[0], "purchase_days_all"] == was.loc[users[0], "purchase_days_all"] + (
        0 if not pd.isna(bought_yesterday) and bought_yesterday == 1 else 1)
    # a cart an hour before midnight: one more open item, carted an hour ago, at the highest price
    assert changed.loc[users[1], "open_cart_items"] == was.loc[users[1], "open_cart_items"] + 1
    assert changed.loc[users[1], "hours_since_last_cart"] == pytest.approx(1.0)
    assert changed.loc[users[1], "max_carted_price_28d"] >= 99.0
    # and the interactions: the user who bought early-0 an hour before midnight has it, bought, a day ago
    interactions = _read(pipeline, INTERACTIONS_SQL, [as_of])
    bought = interactions[(interactions.user_id == users[0]) & (interactions.item_id == "early-0")]
    assert bought[["purchases", "days_since_last"]].values.tolist() == [[1, 1]]
    assert len(interactions) == len(interactions_before) + 2
    # and the sequences: the early purchase is the user's most recent event, the others move one position down
    sequences = _read(pipeline, SEQUENCES_SQL, [as_of])
    latest = sequences[(sequences.user_id == users[0]) & (sequences.position == 1)].iloc[0]
    assert (latest.item_id, latest.event_type) == ("early-0", "purchase")
    was_first = sequences_before[(sequences_before.user_id == users[0]) & (sequences_before.position == 1)].iloc[0]
    now_second = sequences[(sequences.user_id == users[0]) & (sequences.position == 2)].iloc[0]
    assert now_second.event_id == was_first.event_id


def test_materializing_a_partition_twice_gives_identical_tables(pipeline):
    tables = ["marts.feat_user_daily", "marts.fct_training_set", "intermediate.int_user_daily_activity"]
    snapshot = {t: _read(pipeline, f"select * from {t} order by all") for t in tables}
    materialize(dg.AssetSelection.groups("staging", "intermediate", "marts"), DEMO_AS_OF)
    for table, rows in snapshot.items():
        pd.testing.assert_frame_equal(rows, _read(pipeline, f"select * from {table} order by all"), obj=table)


def test_a_broken_batch_fails_its_check_and_blocks_downstream(pipeline):
    broken_day = DEMO_AS_OF - dt.timedelta(days=1)
    # a writer that bypassed ingest's validation: a duplicated event id and a zero quantity on the last day
    with duckdb.connect(str(pipeline.warehouse)) as con:
        con.execute("""
            insert into raw.events
            select event_id, user_id, event_ts, event_type, item_id, category_id, price, 0, session_id, 'manual'
            from raw.events where cast(event_ts as date) = ? limit 5
        """, [broken_day])
    features_before = _read(pipeline, FEATURES_SQL, [DEMO_AS_OF])
    with runs.instance() as instance:
        latest_before = instance.get_latest_materialization_event(dg.AssetKey(["marts", "feat_user_daily"]))
    with pytest.raises(runs.RunFailed, match="raw_events_suite failed") as failure:
        runs.run_partition(DEMO_AS_OF)
    failed_run = failure.value.result.run_id
    with runs.instance() as instance:
        latest_after = instance.get_latest_materialization_event(dg.AssetKey(["marts", "feat_user_daily"]))
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["staging", "stg_shop__events"]), "raw_events_suite")]
        )
    assert latest_after.run_id == latest_before.run_id != failed_run
    (record,) = check.values()
    assert record.run_id == failed_run and record.event.dagster_event.event_specific_data.passed is False
    pd.testing.assert_frame_equal(features_before, _read(pipeline, FEATURES_SQL, [DEMO_AS_OF]))


def test_a_run_after_an_empty_business_day_is_blocked_and_the_cli_says_why_in_one_line(pipeline):
    # the documented policy (docs/raw_schema.md): a day without events inside the history is a day without
    # activity; the newest day of a run without events blocks it (a stopped feed is not a quiet day)
    emptied = DEMO_AS_OF - dt.timedelta(days=8)
    with duckdb.connect(str(pipeline.warehouse)) as con:
        removed = con.execute("delete from raw.events where cast(event_ts as date) = ?", [emptied]).fetchone()[0]
    assert removed > 0
    from tests.support import shopcast

    proc = shopcast(["run", "--as-of", (emptied + dt.timedelta(days=1)).isoformat()], check=False)
    assert proc.returncode == 1
    assert (f"no events on business day {emptied}, the day before the as-of date "
            f"{emptied + dt.timedelta(days=1)}: a source outage or a closed day") in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"check staging/stg_shop__events:raw_events_suite failed for partition "
                     rf"{emptied + dt.timedelta(days=1)} \(blocking", proc.stderr), proc.stderr[-3000:]
    assert re.search(rf"raw_events-{emptied}: expect_table_row_count_to_be_between: observed 0, allowed "
                     rf"min_value=1", proc.stderr), proc.stderr[-3000:]
    assert "Data Docs: " in proc.stderr


def test_the_champion_scores_the_population_and_a_separate_client_can_read_it(pipeline):
    import json
    import subprocess
    import sys

    from dagster_project.status import collect

    targets = {t["target"]: t for t in collect()["targets"]}
    target = targets["purchase_propensity_7d"]
    champion = target["champion"]
    assert champion is not None and champion["validation_metrics"]["roc_auc"] > 0.7
    assert champion["validation_as_of_date"] == (DEMO_AS_OF - dt.timedelta(days=7)).isoformat()
    population = _read(pipeline, "select count(*) from marts.fct_scoring_population where as_of_date = ?",
                       [DEMO_AS_OF]).iloc[0, 0]
    assert target["latest_predictions"] == {"as_of_date": DEMO_AS_OF.isoformat(), "rows": population,
                                            "model_version": champion["version"]}
    reader = subprocess.run([sys.executable, "-c", (
        "import duckdb, json, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(json.dumps(con.execute('select count(*), min(probability), max(probability), min(decile), "
        "max(decile), count(distinct model_name) from predictions.purchase_propensity_7d').fetchone()))"),
        str(pipeline.warehouse)], capture_output=True, text=True, check=True)
    rows, low, high, best_decile, worst_decile, names = json.loads(reader.stdout)
    assert rows == population and 0 <= low < high <= 1 and (best_decile, worst_decile, names) == (1, 10, 1)


def test_churn_is_scored_for_users_active_in_the_last_7_days_only(pipeline):
    from dagster_project.status import collect

    churn = {t["target"]: t for t in collect()["targets"]}["churn_probability_7d"]
    assert churn["champion"] is not None, churn
    assert churn["champion"]["validation_metrics"]["roc_auc"] > 0.6
    counts = _read(pipeline, """
        select
            (select count(*) from marts.fct_scoring_population where as_of_date = $1 and events_7d > 0) as active,
            (select count(*) from marts.fct_scoring_population where as_of_date = $1) as everyone,
            (select count(*) from predictions.churn_probability_7d where as_of_date = $1) as scored,
            (select count(*) from predictions.churn_probability_7d c
               join marts.fct_scoring_population p using (user_id, as_of_date)
             where c.as_of_date = $1 and p.events_7d = 0) as inactive_scored
    """, [DEMO_AS_OF]).iloc[0]
    assert counts.scored == counts.active < counts.everyone and counts.inactive_scored == 0


def test_revenue_is_not_published_without_a_closed_28_day_window_and_says_why(pipeline):
    from dagster_project.status import collect, render

    report = collect()
    revenue = {t["target"]: t for t in report["targets"]}["predicted_revenue_28d"]
    # 3 weekly cutoffs (7, 14, 21 days back): no 28-day revenue window has closed, so there is nothing to learn from
    assert revenue["champion"] is None and revenue["latest_predictions"] is None
    assert "0 cutoff(s) with a closed 28-day label" in revenue["not_published_reason"]
    assert "predicted_revenue_28d:\n  not published in the latest run: predicted_revenue_28d: 0 cutoff(s)" in render(report)


def test_bgnbd_is_fitted_per_date_registered_and_is_the_baseline_to_beat(pipeline):
    from dagster_project.status import collect
    from ml.registry import CHAMPION, Store, version_by_alias

    counts = _read(pipeline, """
        select c.as_of_date, count(*) as users, count(c.clv_p_alive) as fitted, any_value(c.model_version) as version,
               (select count(*) from marts.feat_user_rfm r where r.as_of_date = c.as_of_date) as rfm_users
        from predictions.clv c group by 1 order by 1
    """)
    # the run's date and its 3 training cutoffs, each fitted on its own history, every user of feat_user_rfm
    expected_dates = [DEMO_AS_OF - dt.timedelta(days=d) for d in (21, 14, 7, 0)]
    assert [d.date() for d in counts.as_of_date] == expected_dates
    assert (counts.users == counts.fitted).all() and (counts.users == counts.rfm_users).all()
    registered = version_by_alias(Store(pipeline.mlflow_tracking_uri, pipeline.mlflow_artifacts), "clv_bgnbd", CHAMPION)
    assert registered is not None and counts.version.iloc[-1] == registered.version
    assert set(counts.version.iloc[:-1]) == {"refit per cutoff"}
    purchase = {t["target"]: t for t in collect()["targets"]}["purchase_propensity_7d"]
    assert purchase["latest_training"]["baseline_name"] == "BG/NBD"
    assert purchase["latest_training"]["baseline"]["roc_auc"] > 0.6  # a real baseline, not noise


def test_audiences_and_latest_scores_are_built_from_the_prediction_tables(pipeline):
    from dagster_project.status import collect

    found = _read(pipeline, """
        select
            (select count(*) from audiences.aud_likely_purchasers_7d where as_of_date = $1) as purchasers,
            (select count(*) from predictions.purchase_propensity_7d where as_of_date = $1 and decile = 1) as top_decile,
            (select count(*) from audiences.aud_likely_churning_high_value a
               join predictions.churn_probability_7d c using (user_id, as_of_date)
             where a.as_of_date = $1 and c.decile <= 5) as churning_checked,
            (select count(*) from audiences.aud_likely_churning_high_value where as_of_date = $1) as churning,
            (select count(*) from audiences.aud_predicted_top_spenders) as spenders,
            (select count(*) from predictions.user_scores_latest) as latest_users,
            (select count(distinct user_id) from predictions.purchase_propensity_7d where as_of_date = $1) as scored,
            (select count(*) from predictions.user_scores_latest
              where purchase_decile = 1 and purchase_reason_1 is null) as missing_reasons
    """, [DEMO_AS_OF]).iloc[0]
    assert found.purchasers == found.top_decile > 0 and found.churning == found.churning_checked > 0
    assert found.spenders == 0  # revenue is not published on this short history (see the revenue test)
    assert found.latest_users >= found.scored > 0 and found.missing_reasons == 0
    sizes = {a["audience"]: a for a in collect()["audiences"]}
    assert sizes["likely_purchasers_7d"]["users"] == found.purchasers
    assert sizes["predicted_top_spenders"] == {"audience": "predicted_top_spenders", "as_of_date": DEMO_AS_OF.isoformat(),
                                               "users": 0, "scored_users": 0, "expected_buyers_7d": None,
                                               "expected_revenue_28d": None}
    # expected buyers: the sum of the audience's calibrated purchase probabilities
    expected = _read(pipeline, "select sum(purchase_probability_7d) from audiences.aud_likely_purchasers_7d "
                               "where as_of_date = $1", [DEMO_AS_OF]).iloc[0, 0]
    assert sizes["likely_purchasers_7d"]["expected_buyers_7d"] == pytest.approx(expected, abs=0.05) and expected > 1


def test_a_backfill_can_compute_only_some_dates_of_its_range(pipeline):
    # the weekly cutoffs of a training date, without the days between (the run names them in a tag)
    first, last = DEMO_AS_OF - dt.timedelta(days=45), DEMO_AS_OF - dt.timedelta(days=31)
    wanted = [first, first + dt.timedelta(days=7), last]
    runs.backfill_features(first, last, only=wanted)
    for table in ("feat_user_daily", "feat_user_rfm"):
        dates = set(_read(pipeline, f"select distinct as_of_date from marts.{table} where as_of_date < ?",
                          [DEMO_AS_OF - dt.timedelta(days=21)]).as_of_date.dt.date)
        assert dates == set(wanted), table


def test_both_recommendation_lists_are_published_ranked_and_gated(pipeline):
    """Every user of the scoring population gets k distinct items in next_items and in new_items (the cross-sell
    list, nothing bought before), each with a reason; the first champion was the best naive recommender, and a
    learned one replaced it only by beating it on the same cutoffs."""
    population = set(_read(pipeline, "select user_id from marts.fct_scoring_population where as_of_date = ?",
                           [DEMO_AS_OF]).user_id)
    bought = _read(pipeline, "select user_id, item_id from marts.fct_user_item_interactions "
                             "where as_of_date = ? and purchases > 0", [DEMO_AS_OF])
    for table in ("next_items", "new_items"):
        lists = _read(pipeline, f"select * from predictions.{table} where as_of_date = ?", [DEMO_AS_OF])
        assert set(lists.user_id) == population, table
        ranks = lists.sort_values(["user_id", "rank"]).groupby("user_id")["rank"].apply(list)
        assert all(r == list(range(1, 11)) for r in ranks), table
        assert not lists.duplicated(["user_id", "item_id"]).any() and lists.reason.notna().all()
        assert lists.model_version.notna().all() and lists.category_id.notna().mean() > 0.9
    new_items = _read(pipeline, "select user_id, item_id from predictions.new_items where as_of_date = ?",
                      [DEMO_AS_OF])
    assert new_items.merge(bought, on=["user_id", "item_id"]).empty
    decisions = _read(pipeline, "select * from monitoring.model_decisions where target = 'next_items' "
                                "order by decided_at")
    assert decisions.reason.iloc[0].startswith("first champion: the best naive candidate")
    assert decisions.candidate_family.iloc[0] in ("popularity", "popularity_in_categories", "history_bought",
                                                  "history_engaged")
    for _, later in decisions.iloc[1:].iterrows():  # a promotion beat its predecessor on the same cutoffs
        assert later.promoted == (later.candidate_score > later.incumbent_score), later.reason
    # `shopcast status` names the champion the decisions left and the latest lists
    from dagster_project.status import collect

    shown = collect()["recommendations"]
    promoted = decisions[decisions.promoted]
    assert shown["champion"]["candidate"] == promoted.candidate_family.iloc[-1]
    assert shown["lists"]["next_items"] == {"as_of_date": DEMO_AS_OF.isoformat(), "users": len(population),
                                            "rows": 10 * len(population),
                                            "fallback_rows": shown["lists"]["next_items"]["fallback_rows"]}


def _cold_start_run(as_of: dt.date, *, check_only: bool = False) -> dg.ExecuteInProcessResult:
    """The cold-start list of one date and its blocking check; ``check_only``: the check and what is below the list
    (the serving file), as a run of the graph's job."""
    key = dg.AssetKey(["predictions", "cold_start_items"])
    check = dg.AssetCheckKey(key, "lists_offer_new_items_only")
    below = set(runs.definitions().resolve_asset_graph().get(key).child_keys)
    job = runs.definitions().resolve_job_def("shopcast_graph").get_subset(
        asset_selection=below if check_only else {key}, asset_check_selection={check})
    with runs.instance() as instance:
        return job.execute_in_process(instance=instance, partition_key=as_of.isoformat(), raise_on_error=False)


def test_the_cold_start_list_is_decided_on_held_out_items_and_offers_new_items_by_their_text(pipeline, tmp_path):
    """The gate of the cold-start list measured the text (here the items' categories: the generator names no item)
    on items held out from training and published the list, with its figures. The test shop's 400 items are all
    seen in its first days, so the list is empty until new items arrive: then each user gets items first seen in
    the 28 days before the date, none they bought, each with the item of theirs it is described like, and the
    blocking check refuses a broken list."""
    decision = _read(pipeline, "select * from monitoring.model_decisions where target = 'cold_start_items'")
    assert len(decision) == 1
    row = decision.iloc[0]
    assert row.promoted and row.reason.startswith("published: the text's Recall@10 on items held out from training")
    assert row.candidate_score > row.incumbent_score
    assert row.incumbent in ("user_categories", "category_popularity", "random")
    assert len(pd.read_json(pd.io.common.StringIO(row.backtest_folds))) >= 1
    assert _read(pipeline, "select count(*) as n from predictions.cold_start_items").n.iloc[0] == 0
    # five new items, each viewed once in the last days before the date by a scored user of its category
    favourite = _read(pipeline, """
        select user_id, category_id from (
            select user_id, category_id, row_number() over (partition by user_id order by sum(weight) desc,
                                                            category_id) as k
            from marts.fct_user_item_interactions where as_of_date = ? and category_id is not null
              and user_id in (select user_id from marts.fct_scoring_population where as_of_date = ?)
            group by 1, 2)
        where k = 1 order by user_id limit 5""", [DEMO_AS_OF, DEMO_AS_OF])
    arrivals = pd.DataFrame({"user_id": favourite.user_id, "category_id": favourite.category_id,
                             "item_id": [f"new-{i}" for i in range(len(favourite))], "event_type": "view",
                             "event_ts": pd.Timestamp(DEMO_AS_OF) - pd.Timedelta(days=3)})
    arrivals.to_parquet(tmp_path / "arrivals.parquet")
    runs.ingest("canonical", [str(tmp_path / "arrivals.parquet")])
    _build_interactions(DEMO_AS_OF)
    assert _cold_start_run(DEMO_AS_OF).success
    lists = _read(pipeline, "select * from predictions.cold_start_items where as_of_date = ?", [DEMO_AS_OF])
    population = set(_read(pipeline, "select user_id from marts.fct_scoring_population where as_of_date = ?",
                           [DEMO_AS_OF]).user_id)
    assert set(lists.item_id) <= set(arrivals.item_id) and lists.item_id.nunique() > 1
    assert len(set(lists.user_id)) > 5 and set(lists.user_id) <= population
    assert lists.reason.str.startswith("described like ").all() and lists.model_name.eq("cold_start_items").all()
    # the text here is the category: a user's first item is one of their favourite category
    first = lists[lists["rank"] == 1].merge(favourite, on="user_id", suffixes=("", "_favourite"))
    assert len(first) == len(favourite) and (first.category_id == first.category_id_favourite).all()
    with duckdb.connect(str(pipeline.warehouse)) as con:
        con.execute("update predictions.cold_start_items set rank = rank + 1 where user_id = "
                    "(select min(user_id) from predictions.cold_start_items)")
    broken = _cold_start_run(DEMO_AS_OF, check_only=True)
    (evaluation,) = broken.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["broken_lists"].value == 1
    assert not broken.success and broken.get_asset_materialization_events() == []  # the serving file waits


def test_served_lists_are_measured_once_their_horizon_has_closed(pipeline):
    """The feedback SQL on a real warehouse: the lists of a date whose 28 days have passed (the demo's, copied 30
    days back) are judged on the purchases that followed; today's are not judged yet."""
    from dagster_project.defs.monitoring import realised_recommendations
    from dagster_project.defs.resources import WarehouseResource

    earlier = DEMO_AS_OF - dt.timedelta(days=30)
    with duckdb.connect(str(pipeline.warehouse)) as con:
        for table in ("next_items", "new_items"):
            con.execute(f"insert into predictions.{table} select * replace (cast(? as date) as as_of_date) "
                        f"from predictions.{table} where as_of_date = ?", [earlier, DEMO_AS_OF])
        buyers = con.execute("select count(distinct user_id) from intermediate.int_user_item_daily where n_purchase > 0 "
                             "and activity_date >= ? and activity_date < ? and user_id in (select user_id from "
                             "predictions.next_items where as_of_date = ?)",
                             [earlier, earlier + dt.timedelta(days=28), earlier]).fetchone()[0]
    table = realised_recommendations(WarehouseResource(path=str(pipeline.warehouse)), 28, DEMO_AS_OF)
    assert set(table.as_of_date) == {earlier} and set(table.target) == {"next_items", "new_items"}
    judged = table.set_index("target").loc["next_items"]
    assert judged.users == buyers > 0 and 0 < judged.recall_at_10 <= 1 and judged.model_version != "fallback"


def test_the_exploration_report_describes_the_window_before_the_as_of_date(pipeline):
    """Issue 26: the data exploration asset of the run's date, its HTML served beside the Data Docs (self-contained:
    no script or style from elsewhere), its funnel equal to the raw events', its cohorts unknown where a week has
    not begun."""
    from dagster_project.defs.exploration import EXPLORATION
    from dagster_project.explore import FUNNEL, WINDOW_DAYS, explore

    with runs.instance() as instance:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=EXPLORATION, asset_partitions=[DEMO_AS_OF.isoformat()]), limit=1).records
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert meta["report"] == f"http://127.0.0.1:3001/exploration/{DEMO_AS_OF.isoformat()}.html"
    page = pipeline.data_docs_site / "exploration" / f"{DEMO_AS_OF.isoformat()}.html"
    text = page.read_text()
    # (the metadata names the file where the run wrote it: the home this one was copied from)
    assert meta["report_file"].endswith(f"local_site/exploration/{DEMO_AS_OF.isoformat()}.html")
    assert text.count("<img ") == 4
    assert not re.search(r"<(script|link)\b", text) and "http://" not in text and "https://" not in text
    start = DEMO_AS_OF - dt.timedelta(days=WINDOW_DAYS)
    with duckdb.connect(str(pipeline.warehouse), read_only=True) as con:
        found = explore(con, DEMO_AS_OF)
        by_type = dict(con.execute(
            "select event_type, count(distinct user_id) from raw.events where event_ts >= ? and event_ts < ? "
            "group by 1", [start, DEMO_AS_OF]).fetchall())
        events = con.execute("select count(*) from raw.events where event_ts >= ? and event_ts < ?",
                             [start, DEMO_AS_OF]).fetchone()[0]
    assert dict(zip(found.funnel.stage, found.funnel.users)) == {s: by_type.get(s, 0) for s in FUNNEL}
    assert meta["events"] == events == found.events_by_day.events.sum()
    weeks = [c for c in found.cohorts.columns if c.startswith("week_")]
    assert (found.cohorts.week_0 == 1).all() and found.cohorts[weeks].stack().dropna().between(0, 1).all()
    newest = found.cohorts.iloc[-1]
    assert newest[weeks[1:]].isna().all() and newest.cohort_week > DEMO_AS_OF - dt.timedelta(days=14)
    assert set(found.features_by_label.label) == {0, 1} and found.label_date < DEMO_AS_OF
