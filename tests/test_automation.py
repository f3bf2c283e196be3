import shutil

import dagster as dg

from dagster_project import runs
from dagster_project.defs.automation import landing_sensor


def test_landing_sensor_keys_each_file_by_its_content(home, tmp_path):
    folder = home.landing / "canonical"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("user_id,event_ts,event_type\nu1,2026-01-01,view\n")
    shutil.copy(folder / "a.csv", folder / "a_copy.csv")  # same bytes, another name
    (folder / "b.csv").write_text("user_id,event_ts,event_type\nu2,2026-01-01,view\n")
    (folder / "notes.txt.bak").write_text("ignored")
    requests = list(landing_sensor(dg.build_sensor_context()))
    keys = [r.run_key for r in requests]
    assert len(requests) == 3 and len(set(keys)) == 2  # the copy has the copy's key: Dagster runs it once
    assert all(k.startswith("canonical:") for k in keys)
    config = requests[0].run_config["ops"]["raw__events"]["config"]
    assert config["format"] == "canonical" and config["paths"][0].endswith("a.csv")


def test_jobs_and_schedules_are_defined():
    defs = runs.definitions()
    assert {"shopcast_graph", "feature_backfill", "daily_scoring", "weekly_training", "ingest"} <= {
        j.name for j in defs.jobs}
    daily = defs.resolve_schedule_def("shopcast_daily")
    weekly = defs.resolve_schedule_def("shopcast_weekly_training")
    assert daily.job_name == "daily_scoring" and weekly.cron_schedule == "0 1 * * 1"
    selected = defs.resolve_job_def("daily_scoring").asset_layer.executable_asset_keys
    assert dg.AssetKey(["predictions", "purchase_propensity_7d"]) in selected
    assert dg.AssetKey(["models", "purchase_propensity_7d_candidates"]) not in selected
    # the training cutoffs' BG/NBD fits go with training: a daily run fits its own date only
    cutoffs = dg.AssetKey(["predictions", "clv_training_cutoffs"])
    assert dg.AssetKey(["predictions", "clv"]) in selected and cutoffs not in selected
    assert dg.AssetKey(["marts", "fct_training_set"]) not in selected  # rebuilt when a run trains
    checks = defs.resolve_job_def("daily_scoring").asset_layer.asset_graph.asset_check_keys
    sample = dg.AssetKey(["training", "training_sample"])
    assert sample not in selected and not any(check.asset_key == sample for check in checks)
    # the targets train on the sample drawn once per run, and its suite blocks them
    assert sample in defs.resolve_job_def("weekly_training").asset_layer.executable_asset_keys
    assert sample in defs.resolve_asset_graph().get(dg.AssetKey(["models", "churn_probability_7d_candidates"])).parent_keys
    assert cutoffs in defs.resolve_job_def("weekly_training").asset_layer.executable_asset_keys
    # so do the features of training cutoffs that are missing; the training set reads them
    cutoff_features = dg.AssetKey(["marts", "training_cutoff_features"])
    assert cutoff_features not in selected
    assert cutoff_features in defs.resolve_job_def("weekly_training").asset_layer.executable_asset_keys
    assert cutoff_features in defs.resolve_asset_graph().get(dg.AssetKey(["marts", "fct_training_set"])).parent_keys


def test_the_landing_sensor_picks_up_mapped_exports_but_not_their_mappings(home):
    folder = home.landing / "mapped"
    folder.mkdir(parents=True)
    (folder / "shop.csv").write_text("who,when,what\nu1,2026-01-01,view\n")
    (folder / "shop.yaml").write_text("columns: {user_id: who, event_ts: when, event_type: what}\n")
    (requested,) = list(landing_sensor(dg.build_sensor_context()))
    assert requested.run_key.startswith("mapped:")
    assert requested.run_config["ops"]["raw__events"]["config"]["paths"] == [str(folder / "shop.csv")]
    runs.ingest("mapped", [str(folder / "shop.csv")])  # the mapping is found beside the file
    with runs.connect(home.warehouse, read_only=True) as con:
        assert con.execute("select user_id, event_type from raw.events").fetchall() == [("u1", "view")]


def test_a_fresh_home_lets_duckdb_spill_a_query_larger_than_its_memory_limit(home, monkeypatch):
    # DuckDB creates only the last level of its temp_directory: without tmp/ a query that spills fails
    # (found by the 10M-event benchmark, where dbt's feature build spilled)
    monkeypatch.setenv("SHOPCAST_DUCKDB_MEMORY_LIMIT", "64MB")
    with runs.connect(home.warehouse) as con:
        con.execute("set threads = 1")
        rows = con.execute("select count(*) from (select i, md5(cast(i as varchar)) as h from range(3000000) t(i) "
                           "order by h)").fetchone()[0]
    assert rows == 3_000_000
    assert (home.home / "tmp" / "duckdb").is_dir()


def _signal(instance: dg.DagsterInstance, asset: dg.AssetKey, as_of: str, signals: dict) -> None:
    """What the monitoring assets record when they call for a retrain (defs/monitoring.py: RETRAIN_METADATA)."""
    from dagster_project.defs.monitoring import RETRAIN_METADATA

    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=asset, partition=as_of, metadata={RETRAIN_METADATA: dg.MetadataValue.json(signals)}))


def test_a_realised_drop_requests_one_retrain_then_waits_out_the_cooldown(home):
    from dagster_project.asset_keys import candidates_key
    from dagster_project.defs.monitoring import PERFORMANCE

    drop = "realised pr_auc 0.210 over 7 closed date(s) is below the validation figure 0.300 by more than 0.05"
    with runs.instance() as instance:
        _signal(instance, PERFORMANCE, "2026-11-01", {"purchase_propensity_7d": drop})
    (request,), cursor = runs.evaluate_retraining_sensor()
    assert (request.partition_key, request.run_key) == ("2026-11-01", "retrain:purchase_propensity_7d:2026-11-01")
    assert request.tags["shopcast/trigger"] == "performance" and request.tags["shopcast/retrain_reason"] == drop
    assert request.asset_selection[:2] == [candidates_key("purchase_propensity_7d"),
                                           dg.AssetKey(["models", "purchase_propensity_7d_champion"])]
    # the drop persists day after day (the retrain has not run yet): no new request inside the cooldown (7 days)
    for day in ("2026-11-02", "2026-11-07"):
        with runs.instance() as instance:
            _signal(instance, PERFORMANCE, day, {"purchase_propensity_7d": drop})
        requests, cursor = runs.evaluate_retraining_sensor(cursor)
        assert requests == [], day
    with runs.instance() as instance:
        _signal(instance, PERFORMANCE, "2026-11-08", {"purchase_propensity_7d": drop,
                                                       "churn_probability_7d": drop.replace("pr_auc", "roc_auc")})
    requests, cursor = runs.evaluate_retraining_sensor(cursor)
    assert sorted(r.run_key for r in requests) == ["retrain:churn_probability_7d:2026-11-08",
                                                   "retrain:purchase_propensity_7d:2026-11-08"]
    # a target already retrained for the signal's date (by the weekly run, say) is not asked again
    with runs.instance() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=candidates_key("purchase_propensity_7d"), partition="2026-11-20"))
        _signal(instance, PERFORMANCE, "2026-11-20", {"purchase_propensity_7d": drop})
    assert runs.evaluate_retraining_sensor(cursor)[0] == []


def test_the_cooldown_setting_is_the_sensors_and_the_monitoring_policys(home, monkeypatch):
    from dagster_project.defs.monitoring import DRIFT
    from dagster_project.defs.resources import MonitoringPolicy
    from ml.registry import RegisteredModel

    monkeypatch.setenv("SHOPCAST_RETRAIN_COOLDOWN_DAYS", "2")
    with runs.instance() as instance:
        _signal(instance, DRIFT, "2026-11-01", {"churn_probability_7d": "drift: view_count_7d psi 0.4"})
    (first,), cursor = runs.evaluate_retraining_sensor()
    assert first.tags["shopcast/trigger"] == "drift"
    with runs.instance() as instance:
        _signal(instance, DRIFT, "2026-11-03", {"churn_probability_7d": "drift: view_count_7d psi 0.4"})
    (second,), _ = runs.evaluate_retraining_sensor(cursor)  # 2 days later: the cooldown of 2 days has passed
    assert second.partition_key == "2026-11-03"
    # the monitoring assets do not even signal for a champion trained fewer than cooldown days before the date
    policy = MonitoringPolicy(retrain_cooldown_days=7)
    champion = RegisteredModel("churn_probability_7d", "3", "run", {"as_of_date": "2026-11-01"})
    assert [policy.may_retrain(champion, day) for day in ("2026-11-01", "2026-11-07", "2026-11-08")] == [
        False, False, True]
    assert policy.may_retrain(None, "2026-11-01")  # no champion yet: nothing to protect
