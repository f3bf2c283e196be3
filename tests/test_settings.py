"""The one typed settings model: precedence (default < project file < environment), clear errors, no other reader
of SHOPCAST_* variables, the README's table generated from it, and the training windows sized to the data."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_project.settings import (
    PROJECT_FILE,
    REPO_ROOT,
    SettingsError,
    load_settings,
    settings_table_markdown,
    sources,
    start_partitions_at,
    write_project_file,
)
from dagster_project.training_windows import choose_windows

BIN = Path(sys.executable).parent


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No SHOPCAST_* variable but the home."""
    import os

    for key in [k for k in os.environ if k.startswith("SHOPCAST_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SHOPCAST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_defaults_then_the_project_file_then_the_environment(clean_env, monkeypatch):
    assert load_settings().business_tz == "UTC" and load_settings().min_class_examples == 1000
    write_project_file(clean_env, {"business_tz": "Asia/Shanghai", "min_class_examples": 50, "gate_margin": 0.02},
                       "a test")
    monkeypatch.setenv("SHOPCAST_MIN_CLASS_EXAMPLES", "70")
    settings = load_settings()
    assert (settings.business_tz, settings.min_class_examples, settings.gate_margin) == ("Asia/Shanghai", 70, 0.02)
    origin = sources(settings)
    assert (origin["business_tz"], origin["min_class_examples"], origin["psi_warn"]) == ("file", "environment",
                                                                                        "default")


def test_the_partitions_start_where_the_loaded_data_starts_and_keep_the_files_other_settings(clean_env):
    """Issue 26: a home's partition bar starts at its data (not 6,000 empty days from 2010); a later load of newer
    data leaves the start, one of older data moves it back; a sample's preset and its comment stay."""
    assert load_settings().partitions_start == dt.date(2010, 1, 1)
    write_project_file(clean_env, {"business_tz": "Europe/London"}, "shopcast sample online-retail: a preset")
    assert start_partitions_at(clean_env, dt.date(2010, 12, 1)) == dt.date(2010, 12, 1)
    assert start_partitions_at(clean_env, dt.date(2011, 3, 1)) is None
    assert start_partitions_at(clean_env, dt.date(2010, 11, 20)) == dt.date(2010, 11, 20)
    settings = load_settings()
    assert (settings.partitions_start, settings.business_tz) == (dt.date(2010, 11, 20), "Europe/London")
    text = (clean_env / PROJECT_FILE).read_text()
    assert text.startswith("# shopcast sample online-retail: a preset\n# partitions_start: the first event")
    assert text.count("# partitions_start") == 1


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SHOPCAST_GATE_MARGIN", "abc", r"SHOPCAST_GATE_MARGIN \(environment\)='abc': Input should be a valid number"),
    ("SHOPCAST_TRAINING_BUDGET_SECONDS", "-5", (r"SHOPCAST_TRAINING_BUDGET_SECONDS \(environment\)='-5': Input "
                                               r"should be greater than or equal to 1")),
    ("SHOPCAST_BUSINESS_TZ", "Mars/Olympus", r"not a known IANA time zone"),
    ("SHOPCAST_MODEL_FAMILIES", "logistic_regression,forest", r"unknown famil\(ies\) forest"),
    ("SHOPCAST_PSEUDONYMISE_USER_IDS", "maybe", r"SHOPCAST_PSEUDONYMISE_USER_IDS \(environment\)='maybe'"),
    ("SHOPCAST_MIN_ROC_AUC", "nan", r"SHOPCAST_MIN_ROC_AUC"),
])
def test_a_bad_value_fails_naming_the_setting_the_value_and_what_is_allowed(clean_env, monkeypatch, variable, value,
                                                                             message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_a_bad_project_file_fails_naming_the_file_and_the_key(clean_env):
    clean_env.mkdir(parents=True)
    (clean_env / PROJECT_FILE).write_text("gate_margn = 0.1\n")
    with pytest.raises(SettingsError, match=r"shopcast.toml: unknown setting\(s\) gate_margn"):
        load_settings()
    (clean_env / PROJECT_FILE).write_text("pseudonymisation_key = 'a secret in a file'\n")
    with pytest.raises(SettingsError, match=r"pseudonymisation_key can only be set in the environment"):
        load_settings()
    (clean_env / PROJECT_FILE).write_text("psi_warn = 0.3\npsi_fail = 0.2\n")
    with pytest.raises(SettingsError, match=r"psi_fail \(0.2\) must not be below psi_warn \(0.3\)"):
        load_settings()
    with pytest.raises(SettingsError, match="min_class_examples"):  # nothing invalid is written
        write_project_file(clean_env, {"min_class_examples": 0}, "bad")


def test_an_older_homes_settings_env_is_read_as_its_project_file(clean_env):
    clean_env.mkdir(parents=True)
    (clean_env / "settings.env").write_text("# old\nSHOPCAST_BUSINESS_TZ=Europe/London\nSHOPCAST_MIN_CLASS_EXAMPLES=200\n")
    settings = load_settings()
    assert (settings.business_tz, settings.min_class_examples) == ("Europe/London", 200)


def test_only_the_settings_module_names_shopcast_variables():
    found = subprocess.run(["git", "grep", "-n", "SHOPCAST_", "--", "dagster_project", "ml", "expectations"],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.splitlines()
    assert found and all(line.startswith("dagster_project/settings.py:") for line in found), \
        [line for line in found if not line.startswith("dagster_project/settings.py:")]


def test_the_readme_configuration_table_is_the_one_the_model_generates():
    readme = (REPO_ROOT / "README.md").read_text()
    table = settings_table_markdown()
    assert table in readme, ("README.md's configuration table differs from the settings model; paste this:\n"
                             + table)


def test_shopcast_config_prints_each_setting_with_its_source(clean_env, monkeypatch):
    import os

    write_project_file(clean_env, {"min_class_examples": 50}, "a test")
    env = {**os.environ, "SHOPCAST_GATE_MARGIN": "0.03"}
    proc = subprocess.run([str(BIN / "shopcast"), "config"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert lines["gate_margin"][1:3] == ["0.03", "environment"]
    assert lines["min_class_examples"][1:3] == ["50", "file"]
    assert lines["psi_fail"][1:3] == ["0.25", "default"]
    bad = subprocess.run([str(BIN / "shopcast"), "config"], capture_output=True, text=True,
                         env={**env, "SHOPCAST_GATE_MARGIN": "abc"}, check=False)
    assert bad.returncode == 1 and re.search(r"invalid setting SHOPCAST_GATE_MARGIN \(environment\)='abc'",
                                             bad.stderr), bad.stderr


def test_the_ui_gets_the_homes_dagster_instance_and_mlflow_store(clean_env):
    settings = load_settings()
    env = settings.subprocess_env()
    assert env["DAGSTER_HOME"] == str(clean_env / "dagster")
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{clean_env / 'mlflow' / 'mlflow.db'}"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "$(BIN)/shopcast ui" in makefile and "$(BIN)/shopcast mlflow-ui" in makefile


# --- training windows sized to the data


def test_a_short_history_gets_daily_cutoffs_inside_it():
    # the Taobao sample: events 2017-11-25 .. 12-03, as-of 12-04: the cutoffs 11-27 and 11-26 have closed 7-day
    # labels and at least a day of events before them; 11-25 has none
    windows = choose_windows(dt.date(2017, 12, 4), dt.date(2017, 11, 25))
    assert (windows.cutoffs, windows.cadence_days) == (2, 1)
    assert windows.cutoff_dates(dt.date(2017, 12, 4)) == [dt.date(2017, 11, 27), dt.date(2017, 11, 26)]
    assert "daily" in windows.reason


def test_a_long_history_gets_twelve_weekly_cutoffs_and_a_medium_one_as_many_as_fit():
    year = choose_windows(dt.date(2011, 12, 10), dt.date(2010, 12, 1))
    assert (year.cutoffs, year.cadence_days) == (12, 7) and "weekly" in year.reason
    six_weeks = choose_windows(dt.date(2026, 11, 1), dt.date(2026, 9, 20))  # 42 days: room for 5 weekly cutoffs
    assert (six_weeks.cutoffs, six_weeks.cadence_days) == (5, 7)
    assert min(six_weeks.cutoff_dates(dt.date(2026, 11, 1))) > dt.date(2026, 9, 20)


def test_a_90_day_label_puts_the_cutoffs_four_weeks_apart_so_that_most_can_train_the_validation_one():
    years = choose_windows(dt.date(2014, 7, 24), dt.date(2010, 1, 1), horizon_days=90)
    assert (years.cutoffs, years.cadence_days) == (12, 28) and "4 weeks apart" in years.reason
    assert years.cutoff_dates(dt.date(2014, 7, 24))[0] == dt.date(2014, 4, 25)  # 90 days before
    # too short for 4-weekly cutoffs (4 need 84 days of room): weekly ones
    short = choose_windows(dt.date(2026, 11, 1), dt.date(2026, 6, 1), horizon_days=90)
    assert short.cadence_days == 7


def test_too_short_a_history_says_how_many_more_days_it_needs():
    windows = choose_windows(dt.date(2026, 11, 1), dt.date(2026, 10, 25))  # 7 days: no closed label yet
    assert windows.cutoffs == 2 and "2 more day(s) of history would give 2" in windows.reason


def test_pinned_windows_are_kept_whatever_the_history():
    windows = choose_windows(dt.date(2026, 11, 1), dt.date(2026, 10, 28), 3, 7)
    assert (windows.cutoffs, windows.cadence_days, windows.reason) == (3, 7, "set in the settings")


# --- the target registry


def test_dbt_learns_the_targets_from_the_registry_and_its_sources_file_is_generated_from_it():
    from dagster_project.dbt_sources import SOURCES_FILE, prediction_sources_yml
    from ml.targets import LABEL_HORIZON_DAYS, TARGETS, dbt_vars

    assert SOURCES_FILE.read_text() == prediction_sources_yml(), "run python -m dagster_project.dbt_sources"
    shipped = dbt_vars()
    assert [t["name"] for t in shipped["targets"]] == list(TARGETS)
    assert shipped["label_horizon_days"] == LABEL_HORIZON_DAYS == 7
    assert (shipped["purchase_horizon_days"], shipped["revenue_horizon_days"]) == (7, 28)
    sql = (REPO_ROOT / "dbt" / "models" / "monitoring" / "fct_prediction_outcomes.sql").read_text()
    assert "purchase_propensity_7d" not in sql and "var('targets')" in sql


def test_an_optional_target_joins_a_home_s_targets_and_moves_its_newest_training_cutoff(tmp_path):
    from dagster_project.settings import SettingsError, load_settings
    from ml.features import NON_FEATURES
    from ml.targets import ALL_TARGETS, OPTIONAL_TARGETS, TARGETS, enabled_targets

    settings = load_settings(home=tmp_path, extra_targets="purchase_propensity_90d", active_window_days=90)
    dbt = settings.dbt_vars()
    assert [t["name"] for t in dbt["targets"]] == [*TARGETS, "purchase_propensity_90d"]
    assert dbt["label_horizon_days"] == 90 and dbt["active_window_days"] == 90
    # every label is computed by dbt in every home, so each registered horizon is a var; none is ever a feature
    default = load_settings(home=tmp_path).dbt_vars()
    assert default["purchase_90d_horizon_days"] == 90 and default["label_horizon_days"] == 7
    assert {t.label for t in ALL_TARGETS.values()} <= NON_FEATURES
    assert list(enabled_targets(["purchase_propensity_90d"])) == [*TARGETS, *OPTIONAL_TARGETS]
    assert load_settings(home=tmp_path, extra_targets="all").extra_target_list == list(OPTIONAL_TARGETS)
    with pytest.raises(SettingsError, match="unknown optional target"):
        load_settings(home=tmp_path, extra_targets="purchase_propensity_30d")


def test_a_few_stray_events_weeks_earlier_do_not_stretch_the_history(tmp_path):
    import duckdb

    from dagster_project.warehouse import ensure_raw_schema, history_start

    warehouse = tmp_path / "w.duckdb"
    ensure_raw_schema(warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("""
            insert into raw.events (event_id, user_id, event_ts, event_type, quantity, load_id)
            select 'stray' || i, 'u', timestamp '2017-09-10 12:00:00', 'view', 1, 'l' from range(3) t(i)
            union all
            select 'e' || i, 'u' || (i % 50), timestamp '2017-11-25 00:00:00' + to_minutes(cast(i * 7 as bigint)),
                   'view', 1, 'l' from range(1800) t(i)
        """)
        start = history_start(con, "Asia/Shanghai")
    assert start == dt.date(2017, 11, 25)
    windows = choose_windows(dt.date(2017, 12, 4), start)
    assert (windows.cutoffs, windows.cadence_days) == (2, 1)


def test_an_export_cut_short_on_its_last_day_ends_the_history_the_day_before(tmp_path):
    import duckdb

    from dagster_project.warehouse import ensure_raw_schema, history_end

    warehouse = tmp_path / "w.duckdb"
    ensure_raw_schema(warehouse)
    # 20 days of 100 events each (UTC), then Online Retail's kind of ending: a last day with 26 of them
    insert = """
        insert into raw.events (event_id, user_id, event_ts, event_type, quantity, load_id)
        select ? || i, 'u', cast(? as timestamp) + to_minutes(cast(i * 5 as bigint)), 'view', 1, 'l' from range(?) t(i)
    """
    with duckdb.connect(str(warehouse)) as con:
        for day in range(20):
            con.execute(insert, [f"d{day}-", dt.datetime(2011, 11, 1) + dt.timedelta(days=day), 100])
        assert history_end(con, "UTC") == (dt.date(2011, 11, 20), None)  # every day whole
        con.execute(insert, ["short-", dt.datetime(2011, 11, 21), 26])
        end, note = history_end(con, "UTC")
        assert end == dt.date(2011, 11, 20)
        assert note.startswith("the last day with events, 2011-11-21, holds 26 events, 26% of the median day")
        con.execute(insert, ["more-", dt.datetime(2011, 11, 21, 3), 30])  # 56 of 100: not cut short
        assert history_end(con, "UTC") == (dt.date(2011, 11, 21), None)


def test_engine_spark_without_the_spark_extra_or_java_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from dagster_project import spark_engine

    assert load_settings(home=tmp_path).engine == "duckdb"
    with pytest.raises(ValueError, match="engine"):
        load_settings(home=tmp_path, engine="bigquery")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"spark extra is not installed: make install-spark"):
        spark_engine.session_for(tmp_path / "spark")
    monkeypatch.undo()
    if importlib.util.find_spec("pyspark") is not None:  # the extra present: Java is what is looked for next
        monkeypatch.setattr(spark_engine.shutil, "which", lambda name: None)
        monkeypatch.delenv("JAVA_HOME", raising=False)
        with pytest.raises(RuntimeError, match="no Java is found"):
            spark_engine.session_for(tmp_path / "spark")
