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
