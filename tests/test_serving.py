"""Serving BI safely (issue 8): the atomic publish and what readers see, a failed publish, pseudonymised ids,
personal attributes, the run lock's refusal, hostile inputs, secure defaults. The load test is in
test_serving_under_load.py, the kill test in test_crash_safety.py."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dagster_project.locking import run_lock
from dagster_project.serving import SERVING_FILE, ServingOptions, pseudonym, publish, read_manifest, verify
from dagster_project.settings import REPO_ROOT
from dagster_project.warehouse import connect, quote_identifier, string_literal
from ml.features import feature_columns
from tests.conftest import DEMO_AS_OF
from tests.support import DAILY, served, shopcast, snapshot

HOSTILE = "2024-01-01'; DROP TABLE x; --"


def _count(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"select count(*) from {table}").fetchone()[0]


# --- the publish -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_publish_swaps_a_whole_file_in_and_open_readers_keep_theirsnapshot(pipeline):
    path = served(pipeline)
    first, tables = read_manifest(path)
    assert verify(path) == [] and first["as_of_date"].date() == DEMO_AS_OF
    with connect(pipeline.warehouse, read_only=True) as con:
        churn = con.execute("select count(*) from predictions.churn_probability_7d").fetchone()[0]
    assert churn > 0 and tables.set_index("table_name").loc["churn_probability_7d", "rows"] == churn
    reader = duckdb.connect(str(path), read_only=True)  # a dashboard holding the file open
    try:
        with connect(pipeline.warehouse) as con:
            con.execute("delete from predictions.churn_probability_7d")
        second = publish(pipeline.warehouse, pipeline.serving, DEMO_AS_OF, ServingOptions(), "run-2")
        assert reader.execute("select count(*) from predictions.churn_probability_7d").fetchone()[0] == churn
        assert reader.execute("select publish_id from serving.publish").fetchone()[0] == first["publish_id"]
    finally:
        reader.close()
    assert second.publish_id != first["publish_id"] and _count(path, "predictions.churn_probability_7d") == 0
    assert read_manifest(path)[0]["publish_id"] == second.publish_id and verify(path) == []
    assert sorted(p.name for p in pipeline.serving.iterdir()) == ["parquet", SERVING_FILE]  # no temporary left
    current = (pipeline.serving / "parquet" / "current").resolve()
    assert current.name == second.publish_id
    assert duckdb.sql(f"select count(*) from {string_literal(current / 'predictions.churn_probability_7d.parquet')}"
                      ).fetchone()[0] == 0
    # the file opens for readers of older DuckDB versions: written with storage version v1.0.0
    with duckdb.connect() as con:
        con.execute(f"attach {string_literal(path)} as s (read_only)")
        tags = con.execute("select tags from duckdb_databases() where database_name = 's'").fetchone()[0]
    assert tags["storage_version"].startswith("v1.0.0"), tags


@pytest.mark.slow
def test_verify_finds_a_changed_value_that_keeps_the_row_count_in_the_file_and_in_parquet(pipeline, tmp_path):
    import shutil

    path, parquet = served(pipeline), pipeline.serving / "parquet" / "current"
    assert verify(path, parquet) == []
    _, tables = read_manifest(path)
    assert tables.content_hash.notna().all() and tables.content_hash.nunique() > 5  # one hash per table
    # a torn or mixed read looks like this: the same rows, one value from elsewhere
    changed = tmp_path / "changed.duckdb"
    shutil.copy(path, changed)
    with duckdb.connect(str(changed)) as con:
        assert con.execute("update predictions.churn_probability_7d set probability = 1 - probability "
                           "where user_id = (select min(user_id) from predictions.churn_probability_7d)"
                           ).fetchone()[0] == 1
    (problem,) = verify(changed)
    assert problem.startswith("predictions.churn_probability_7d: content hash "), problem
    copies = tmp_path / "parquet"
    shutil.copytree(parquet, copies)
    original = string_literal(copies / "predictions.user_scores_latest.parquet")
    duckdb.sql(f"copy (select * replace (case when user_id = (select min(user_id) from {original}) "
               f"then user_id || '-moved' else user_id end as user_id) from {original}) to "
               f"{string_literal(tmp_path / 'rewritten.parquet')} (format parquet)")
    (tmp_path / "rewritten.parquet").replace(copies / "predictions.user_scores_latest.parquet")
    (problem,) = verify(path, copies)
    assert problem.startswith("Parquet copy of predictions.user_scores_latest: content hash "), problem


@pytest.mark.slow
def test_a_failed_publish_changes_nothing_that_readers_see(pipeline):
    path = served(pipeline)
    before, _ = read_manifest(path)
    folders = sorted(p.name for p in (pipeline.serving / "parquet").iterdir())
    with connect(pipeline.warehouse) as con:
        con.execute("drop table audiences.audience_sizes")
    with pytest.raises(RuntimeError, match=r"audiences.audience_sizes missing from the warehouse"):
        publish(pipeline.warehouse, pipeline.serving, DEMO_AS_OF, ServingOptions(), "broken")
    assert read_manifest(path)[0]["publish_id"] == before["publish_id"] and verify(path) == []
    assert sorted(p.name for p in (pipeline.serving / "parquet").iterdir()) == folders
    assert sorted(p.name for p in pipeline.serving.iterdir()) == ["parquet", SERVING_FILE]


@pytest.mark.slow
def test_pseudonymised_publish_hides_every_user_id_behind_a_keyed_hash(pipeline, monkeypatch):
    from dagster_project.defs.resources import build_resources
    from dagster_project.settings import SettingsError, load_settings

    key = "a-secret-of-at-least-16-characters"
    with pytest.raises(ValueError, match="SHOPCAST_PSEUDONYMISATION_KEY"):
        ServingOptions(pseudonymise=True, key="short")
    # switched on as a user does: through the settings (the environment here), into the serving resource
    monkeypatch.setenv("SHOPCAST_PSEUDONYMISE_USER_IDS", "true")
    monkeypatch.setenv("SHOPCAST_PSEUDONYMISATION_KEY", "short")
    with pytest.raises(SettingsError, match="SHOPCAST_PSEUDONYMISATION_KEY is missing or shorter than 16"):
        load_settings()
    monkeypatch.setenv("SHOPCAST_PSEUDONYMISATION_KEY", key)
    result = build_resources(load_settings())["serving"].publish(pipeline.warehouse, DEMO_AS_OF, "p")
    with connect(pipeline.warehouse, read_only=True) as con:
        raw_ids = {u for (u,) in con.execute("select distinct user_id from raw.events").fetchall()}
        some_user = con.execute("select user_id, probability from predictions.churn_probability_7d "
                                "order by user_id limit 1").fetchone()
    with duckdb.connect(str(result.path), read_only=True) as con:
        assert con.execute("select pseudonymised from serving.publish").fetchone()[0] is True
        published = set()
        for schema, table in con.execute("select table_schema, table_name from information_schema.columns "
                                         "where column_name = 'user_id'").fetchall():
            published |= {u for (u,) in con.execute(f"select distinct user_id from {schema}.{table}").fetchall()}
        expected = "u_" + hmac.new(key.encode(), some_user[0].encode(), hashlib.sha256).hexdigest()[:32]
        found = con.execute("select probability from predictions.churn_probability_7d where user_id = ?",
                            [expected]).fetchone()
    assert len(published) > 100 and not (published & raw_ids)
    assert all(u.startswith("u_") and len(u) == 34 for u in published)
    # the Parquet copies too: every file with a user column holds pseudonyms only, the same ones
    in_parquet = set()
    files = sorted(result.parquet.glob("*.parquet"))
    for file in files:
        names = duckdb.sql(f"describe select * from read_parquet('{file}')").fetchall()
        if any(name == "user_id" for name, *_ in names):
            in_parquet |= {u for (u,) in duckdb.sql(f"select distinct user_id from read_parquet('{file}')").fetchall()}
    assert len(files) >= 10 and in_parquet == published
    assert found is not None and found[0] == pytest.approx(some_user[1])  # stable: joinable across tables
    assert pseudonym(key, some_user[0]) == expected != pseudonym(key + "x", some_user[0])


def test_personal_attributes_are_never_features_unless_enabled():
    frame = pd.DataFrame({"user_id": ["a", "b"], "age": [30, 41], "age_band": [3, 4], "gender_f": [1, 0],
                          "region": [2, 5], "events_28d": [5, 9], "average_price": [2.0, 3.5],
                          "purchase_next_7d": [0, 1]})
    assert feature_columns(frame) == ["events_28d", "average_price"]
    assert feature_columns(frame, allow_personal=True) == ["age", "age_band", "gender_f", "region", "events_28d",
                                                           "average_price"]


@pytest.mark.slow
def test_a_run_that_cannot_get_the_lock_fails_saying_who_holds_it_and_changes_nothing(pipeline):
    before = snapshot(pipeline)
    with run_lock(pipeline.home / "locks", "the-other-run", "shopcast_graph", timeout_seconds=0):
        proc = shopcast(DAILY, env={"SHOPCAST_RUN_LOCK_TIMEOUT_SECONDS": "1"}, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "another shopcast run is writing" in output and "the-other-run" in output, output[-3000:]
    assert snapshot(pipeline) == before


# --- hostile inputs ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_hostile_values_are_refused_or_stored_verbatim_never_run_as_sql(pipeline, tmp_path):
    with connect(pipeline.warehouse, read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables order by 1, 2").fetchall()
        events = con.execute("select count(*) from raw.events").fetchone()[0]
    # dates and names on the command line: refused by the parser, nothing runs
    for args in (["backfill", HOSTILE, DEMO_AS_OF.isoformat()], ["run", "--as-of", HOSTILE],
                 ["ingest", "--format", HOSTILE, str(tmp_path)], ["sample", HOSTILE]):
        proc = shopcast(args, check=False)
        assert proc.returncode == 2 and "error: argument" in proc.stderr, (args, proc.stderr[-2000:])
    # identifiers are validated, literals escaped
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        quote_identifier(HOSTILE)
    assert duckdb.sql(f"select {string_literal(HOSTILE)}").fetchone()[0] == HOSTILE
    with pytest.raises(ValueError, match="SHOPCAST_SERVING_STORAGE_VERSION"):
        ServingOptions(storage_version=HOSTILE)
    # a file whose name and values are SQL: loaded as data, names and values kept verbatim
    hostile_file = tmp_path / f"{HOSTILE}.csv"
    pd.DataFrame({"user_id": [HOSTILE, "u'); DROP TABLE raw.events; --"],
                  "event_ts": ["2026-10-30 10:00:00", "2026-10-30 11:00:00"], "event_type": ["view", "view"],
                  "item_id": ["i1", HOSTILE], "price": ["1.0", "2.0"], "quantity": ["1", "1"]}).to_csv(hostile_file,
                                                                                                index=False)
    shopcast(["ingest", str(hostile_file)])
    with connect(pipeline.warehouse, read_only=True) as con:
        assert con.execute("select table_schema, table_name from information_schema.tables order by 1, 2"
                           ).fetchall() == tables
        assert con.execute("select count(*) from raw.events").fetchone()[0] == events + 2
        assert con.execute("select count(*) from raw.events where user_id = ? and item_id = 'i1'",
                           [HOSTILE]).fetchone()[0] == 1
        assert con.execute("select source_file from raw.load_audit order by loaded_at desc limit 1"
                           ).fetchone()[0].endswith(hostile_file.name)
    # a hostile business time zone stops the CLI before anything runs
    proc = shopcast(["status"], env={"SHOPCAST_BUSINESS_TZ": HOSTILE}, check=False)
    assert proc.returncode != 0 and "not a known IANA time zone" in proc.stderr


def test_uis_bind_to_localhost_and_no_credentials_are_committed():
    makefile = (REPO_ROOT / "Makefile").read_text()
    # make ui / mlflow-ui start the UIs through the CLI, whose bind address defaults to loopback
    assert "$(BIN)/shopcast ui $(if $(PORT)" in makefile and "$(BIN)/shopcast mlflow-ui $(if $(PORT)" in makefile
    from urllib.parse import urlparse

    from dagster_project.cli import build_parser
    from dagster_project.settings import Settings

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    # mlflow-ui binds to the host of the setting mlflow_ui_url unless told otherwise
    assert build_parser().parse_args(["mlflow-ui"]).host is None
    assert urlparse(Settings.model_fields["mlflow_ui_url"].default).hostname == "127.0.0.1"
    if (REPO_ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
    else:  # an exported tree: every file outside the state and build folders
        tracked = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*") if p.is_file()
                   and not {".venv", "data", "target", "logs"} & set(p.relative_to(REPO_ROOT).parts)]
    assert len(tracked) > 50
    assert not [f for f in tracked if Path(f).name in {".env", "credentials.json", "profiles.yml.local"}
                or f.endswith((".pem", ".key"))]
    profiles = (REPO_ROOT / "dbt" / "profiles.yml").read_text()
    assert "password" not in profiles.lower() and "var('warehouse_path')" in profiles
