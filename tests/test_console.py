"""What the command line shows (issue 26): one line per step with its time, the run's warnings, the whole log in a
file (dbt's and the libraries' output included); `shopcast status` leads with the summary."""

import contextlib
import logging
import uuid

import dagster as dg

from dagster_project.console import RunWatcher
from dagster_project.status import render


@dg.op
def load(context: dg.OpExecutionContext) -> int:
    print("1 of 19 START test source_not_null_shop_events_event_id ...... [RUN]")  # as dagster-dbt copies dbt's
    context.log.info("an INFO message the console leaves to the log file")
    context.log.warning("cold_start_items: not published: 22 test users (at least 30 needed)")
    return 1


@dg.op
def publish(value: int) -> int:
    return value + 1


@dg.job
def two_steps():
    publish(load())


def test_a_run_shows_one_line_per_step_and_its_warnings_and_logs_everything_to_a_file(tmp_path):
    said: list[str] = []
    log_file = tmp_path / "logs" / "cli" / "run.log"
    run_id = str(uuid.uuid4())
    # a file-backed instance: the watcher reads the event log from its own thread, as the CLI's does
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:
        watcher = RunWatcher(instance, run_id, "two_steps", 2, log_file, logging.WARNING, say=said.append,
                             progress_bar=False).start()
        with contextlib.redirect_stdout(watcher):
            result = two_steps.execute_in_process(instance=instance, run_id=run_id)
        watcher.stop()
    assert result.success
    steps = [line.split() for line in said if line.lstrip().startswith("done")]
    assert [(s[1], s[-1]) for s in steps] == [("load", "[1/2]"), ("publish", "[2/2]")]
    assert all(s[2].startswith("(") and s[3] == "s)" and float(s[2][1:]) >= 0 for s in steps)
    assert said.count("  warning: load: cold_start_items: not published: 22 test users (at least 30 needed)") == 1
    assert not [line for line in said if "INFO message" in line or "START test" in line]
    log = log_file.read_text()
    # every event, DEBUG included, and what the run printed itself
    for expected in ("STEP_START", "STEP_SUCCESS", "PIPELINE_SUCCESS", "an INFO message the console leaves",
                     "1 of 19 START test source_not_null_shop_events_event_id"):
        assert expected in log, expected


def _report(failed_severity: str) -> dict:
    checks = [{"check": f"marts/feat_user_daily:check_{i}", "status": "SUCCEEDED", "passed": True,
               "severity": "ERROR", "partition": "2026-11-01"} for i in range(60)]
    checks += [{"check": "monitoring/feature_drift:feature_drift_within_limits", "status": "FAILED", "passed": False,
                "severity": failed_severity, "partition": "2026-11-01"},
               {"check": "raw/events:never", "status": "never run", "passed": None, "severity": None,
                "partition": None}]
    return {"warehouse": "/h/warehouse.duckdb", "serving": "/h/serving/shopcast.duckdb", "checks": checks,
            "tables": [{"table": f"marts.t{i}", "rows": i} for i in range(40)]}


def test_status_leads_with_the_summary_and_lists_every_table_and_check_only_when_verbose():
    summary = render(_report("WARN")).splitlines()
    assert summary[1] == "checks: 60 of 61 passed in their latest run; 1 warned"
    assert summary[2] == "  warned monitoring/feature_drift:feature_drift_within_limits 2026-11-01"
    assert not [line for line in summary if "check_7" in line or "marts.t3 " in line]
    assert "the 40 tables' row counts and each of the 61 checks: shopcast status --verbose" in summary
    assert render(_report("ERROR")).splitlines()[1] == "checks: 60 of 61 passed in their latest run; 1 FAILED"
    verbose = render(_report("ERROR"), verbose=True)
    assert "marts/feat_user_daily:check_59" in verbose and "marts.t39" in verbose
    assert verbose.index("checks: 60 of 61") < verbose.index("tables:") < verbose.index("checks (latest):")
