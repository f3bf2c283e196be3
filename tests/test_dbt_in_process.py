"""dbt run in the run's own process (dagster_project/dbt_in_process.py): the same Dagster events as a dbt process,
one parse per process, the warehouse released after each invocation, and dbt's errors reaching the step."""

from __future__ import annotations

import json

import duckdb
import pytest
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from dagster_project import dbt_in_process
from dagster_project.dbt_project import dbt_project
from dagster_project.defs.dbt_assets import BUILD_ARGS, translator
from dagster_project.defs.resources import build_resources
from dagster_project.settings import DBT_RUN_VARS_ENV, load_settings
from tests.conftest import DEMO_AS_OF

pytestmark = pytest.mark.slow  # a copy of the built pipeline


def _events(invocation) -> list[tuple]:
    """What Dagster records of an invocation: each materialization and check result, by key and outcome."""
    out = []
    for event in invocation.stream():
        if hasattr(event, "check_name"):
            out.append(("check", event.asset_key.to_user_string(), event.check_name, event.passed))
        else:
            out.append(("asset", event.asset_key.to_user_string() if event.asset_key else event.output_name))
    return sorted(out)


def _build(dbt, run_vars: dict, name: str):
    return dbt.build([*BUILD_ARGS, "--select", "staging"], run_vars, name=name, manifest=dbt_project.manifest_path,
                     dagster_dbt_translator=translator)


def test_in_process_dbt_reports_what_a_dbt_process_reports_parses_once_and_releases_the_warehouse(pipeline,
                                                                                                   monkeypatch):
    import dagster_dbt.core.resource
    from dbt.version import __version__

    def no_version_process(args, *_, **__):  # the version is this process's dbt-core's: no `dbt --version` process
        raise AssertionError(f"dagster-dbt started {args}")

    monkeypatch.setattr(dagster_dbt.core.resource, "check_output", no_version_process)
    resources = build_resources(load_settings())
    assert str(resources["dbt"]._cli_version) == __version__
    dbt, run_vars = resources["dbt"], resources["settings"].dbt_run_vars([DEMO_AS_OF])
    dbt_in_process.forget_parse()  # this process may hold a parse already: start as a new one
    built_by = set(pipeline.dbt_invocations.glob("*-parse"))  # the runs that built the home

    in_process = [_events(_build(dbt, run_vars, "first")), _events(_build(dbt, run_vars, "second"))]
    # the same build as a dbt process, as dagster-dbt runs it by itself
    with dbt_in_process._environment({DBT_RUN_VARS_ENV: json.dumps(run_vars)}):
        target = pipeline.dbt_invocations / "as-a-process"
        as_a_process = _events(dbt.cli([*BUILD_ARGS, "--select", "staging", "--vars", dbt.settings_vars],
                                       target_path=target, manifest=dbt_project.manifest_path,
                                       dagster_dbt_translator=translator))
    assert in_process[0] == in_process[1] == as_a_process
    assert ("asset", "staging/stg_shop__events") in as_a_process
    assert ("check", "staging/stg_shop__events", "not_null_stg_shop__events_user_id", True) in as_a_process
    # one parse for both in-process builds, kept for the next process; a dbt log in each build's own folder
    parses = list(set(pipeline.dbt_invocations.glob("*-parse")) - built_by)
    assert len(parses) == 1 and (parses[0] / dbt_in_process.PARTIAL_PARSE).is_file()
    assert all((f / "dbt.log").stat().st_size > 0 for f in pipeline.dbt_invocations.glob("*-first-*"))
    # a new process (no parse in memory) starts from the parse the last one left: nothing to parse again
    dbt_in_process.forget_parse()
    _build(dbt, run_vars, "new-process").wait()
    (again,) = set(pipeline.dbt_invocations.glob("*-parse")) - built_by - set(parses)
    assert "Partial parsing enabled, no changes found, skipping parsing" in (again / "dbt.log").read_text()
    # dbt-duckdb kept its database open: released, so the run's own connections (other settings) open it
    with duckdb.connect(str(pipeline.warehouse), read_only=True, config={"memory_limit": "1GB"}) as con:
        assert con.execute("select count(*) from staging.stg_shop__events").fetchone()[0] > 0


def test_a_dbt_error_in_process_fails_the_invocation_with_dbts_message(pipeline):
    resources = build_resources(load_settings())
    good = resources["settings"].dbt_run_vars([DEMO_AS_OF])
    dbt, run_vars = resources["dbt"], {**good, "as_of_date": "last tuesday", "min_as_of_date": None}
    with pytest.raises(DagsterDbtCliRuntimeError, match="must be an ISO date YYYY-MM-DD, got: last tuesday"):
        dbt.build([*BUILD_ARGS, "--select", "int_user_daily_activity"], run_vars, name="bad",
                  manifest=dbt_project.manifest_path, dagster_dbt_translator=translator).wait()
    # and the next invocation of the process runs normally
    assert _build(dbt, good, "after").wait().is_successful()


def test_one_parse_serves_every_home_and_each_builds_its_own_warehouse(pipeline, tmp_path):
    """The parse is made with fixed values for the vars only the profile reads (where the warehouse is), so a home
    copied elsewhere starts from the parse it carries instead of parsing in full, and a process moving to another
    home keeps the parse it holds; each build still writes to its own home's warehouse."""
    import shutil

    from tests.conftest import _point_at

    dbt_in_process.forget_parse()
    resources = build_resources(load_settings())
    _build(resources["dbt"], resources["settings"].dbt_run_vars([DEMO_AS_OF]), "first").wait()
    copy = _point_at(shutil.copytree(pipeline.home, tmp_path / "moved", symlinks=True))
    with duckdb.connect(str(copy.warehouse)) as con:
        con.execute("drop schema staging cascade")
    copied_parses = set(copy.dbt_invocations.glob("*-parse"))

    def build_in_copy(name: str):
        settings = load_settings()
        assert settings.paths.warehouse == copy.warehouse
        moved = build_resources(settings)
        return _build(moved["dbt"], moved["settings"].dbt_run_vars([DEMO_AS_OF]), name).wait()

    assert build_in_copy("same-process").is_successful()
    assert set(copy.dbt_invocations.glob("*-parse")) == copied_parses  # the parse in memory served the other home
    dbt_in_process.forget_parse()  # a new process in the moved home
    assert build_in_copy("new-process").is_successful()
    (parse,) = set(copy.dbt_invocations.glob("*-parse")) - copied_parses
    assert "Partial parsing enabled, no changes found, skipping parsing" in (parse / "dbt.log").read_text()
    with duckdb.connect(str(copy.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from staging.stg_shop__events").fetchone()[0] > 0
    with duckdb.connect(str(pipeline.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from staging.stg_shop__events").fetchone()[0] > 0
    assert not (dbt_in_process.Path("/shopcast-parse")).exists()  # the parse's stand-in path is never opened
