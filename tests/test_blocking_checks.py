"""Every blocking check stops what is downstream of it (issue 21): for each, the data it guards is broken the way
a bug or a writer that bypassed the pipeline would break it, the check runs with the assets right below its asset,
and it must fail and leave every one of them unmaterialized in that run.

The check runs without its asset (a run of the check and its asset's children): the asset's own step is not what
is tested, and the break would be overwritten by rebuilding it. dbt's data tests are blocking checks too, evaluated
inside the dbt step that builds their model: one of them is shown stopping its step and what is below it.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pytest

from dagster_project import runs
from tests.conftest import DEMO_AS_OF

pytestmark = pytest.mark.slow

PARTITION = DEMO_AS_OF.isoformat()
BUSINESS_DAY = DEMO_AS_OF - dt.timedelta(days=1)

# check (asset, name) → SQL that breaks what it guards, as a bug upstream or a writer bypassing ingest would
BREAKS = {
    ("raw/events", "raw_events_loads_reconcile"):
        "insert into raw.load_audit select * replace (rows_read + 1 as rows_read, load_id || '-lost' as load_id) "
        "from raw.load_audit limit 1",
    ("staging/stg_shop__events", "raw_events_suite"):
        f"insert into raw.events select * from raw.events where cast(event_ts as date) = '{BUSINESS_DAY}' limit 3",
    ("marts/feat_user_daily", "feat_user_daily_suite"):
        f"update marts.feat_user_daily set view_count_7d = -1 where as_of_date = '{DEMO_AS_OF}' "
        "and user_id = (select min(user_id) from marts.feat_user_daily)",
    ("marts/fct_scoring_population", "scoring_population_suite"):
        f"insert into marts.fct_scoring_population select * from marts.fct_scoring_population "
        f"where as_of_date = '{DEMO_AS_OF}' limit 1",
    ("training/training_sample", "training_set_suite"):
        "update training.training_sample set purchase_next_7d = 2 "
        "where user_id = (select min(user_id) from training.training_sample)",
    ("predictions/clv", "clv_predictions_are_complete"):
        f"update predictions.clv set clv_p_alive = 1.5 where as_of_date = '{DEMO_AS_OF}' "
        "and user_id = (select min(user_id) from predictions.clv)",
    **{(f"predictions/{target}", "predictions_are_complete"):
       f"delete from predictions.{target} where as_of_date = '{DEMO_AS_OF}' "
       f"and user_id = (select min(user_id) from predictions.{target} where as_of_date = '{DEMO_AS_OF}')"
       for target in ("purchase_propensity_7d", "churn_probability_7d")},
    # a gap in a user's ranks; an item listed twice
    ("predictions/next_items", "lists_are_complete"):
        f"delete from predictions.next_items where as_of_date = '{DEMO_AS_OF}' and rank = 1 "
        f"and user_id = (select min(user_id) from predictions.next_items where as_of_date = '{DEMO_AS_OF}')",
    ("predictions/new_items", "lists_are_complete"):
        f"update predictions.new_items set item_id = (select item_id from predictions.new_items n where n.rank = 1 "
        "and n.user_id = new_items.user_id and n.as_of_date = new_items.as_of_date) "
        f"where as_of_date = '{DEMO_AS_OF}' and rank = 2 "
        f"and user_id = (select min(user_id) from predictions.new_items where as_of_date = '{DEMO_AS_OF}')",
}
# Blocking checks with nothing below them, or that the test pipeline cannot make fail, and why.
NOT_BROKEN_HERE = {
    ("serving/shopcast", "serving_file_is_consistent"): "the serving file is the last asset: nothing is below it",
    ("predictions/predicted_revenue_28d", "predictions_are_complete"):
        "the test pipeline has no revenue champion (no closed 28-day window), so nothing is scored to break; the "
        "check is the same code as the two targets' above (defs/scoring.build_scoring_assets)",
    ("predictions/cold_start_items", "lists_offer_new_items_only"):
        "the test shop has no new item (its 400 items are all seen in its first days), so its list is empty: "
        "tests/test_pipeline.py brings new items in, builds the list and breaks it; the query itself is tested on "
        "hand-made lists (tests/test_cold_start.py)",
}


def _graph():
    return runs.definitions().resolve_asset_graph()


def _python_blocking_checks(graph) -> set[tuple[str, str]]:
    """Blocking checks other than dbt's data tests (those are run by the dbt step of their model)."""
    return {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys
            if graph.get_check_spec(key).blocking and key not in graph.get(key.asset_key).assets_def.check_keys}


def _run_check_and_children(check: dg.AssetCheckKey) -> tuple[dg.ExecuteInProcessResult, set[dg.AssetKey]]:
    graph = _graph()
    children = set(graph.get(check.asset_key).child_keys)
    job = runs.definitions().resolve_job_def("shopcast_graph").get_subset(
        asset_selection=children, asset_check_selection={check})
    with runs.instance() as instance:
        result = job.execute_in_process(instance=instance, partition_key=PARTITION, raise_on_error=False)
    return result, children


def test_every_python_blocking_check_is_broken_below_or_says_why_not(pipeline):
    assert _python_blocking_checks(_graph()) == set(BREAKS) | set(NOT_BROKEN_HERE)


@pytest.mark.parametrize("check", sorted(BREAKS), ids=lambda c: f"{c[0]}:{c[1]}")
def test_a_failing_blocking_check_stops_every_asset_below_it(pipeline, check):
    with duckdb.connect(str(pipeline.warehouse)) as con:
        assert con.execute(BREAKS[check]).fetchone()[0] >= 1  # rows changed: the break happened
    key = dg.AssetCheckKey(dg.AssetKey(check[0].split("/")), check[1])
    result, children = _run_check_and_children(key)
    assert children and not result.success
    (evaluation,) = [e for e in result.get_asset_check_evaluations()
                     if e.asset_check_key == key]
    assert evaluation.passed is False, evaluation.metadata
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(), f"materialized below a failed blocking check {key}: {materialized}"
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert len(failed) == 1, f"only the check's own step fails, the rest is skipped: {failed}"


def test_a_failing_dbt_data_test_stops_its_model_step_and_everything_below(pipeline):
    # the accepted-values test of stg_shop__events.event_type: an event of a type nobody mapped, written around
    # ingest's validation into the run's business day (the raw-events suite would catch it too; it is not in this run)
    staging = dg.AssetKey(["staging", "stg_shop__events"])
    with duckdb.connect(str(pipeline.warehouse)) as con:
        con.execute(f"insert into raw.events select * replace ('teleport' as event_type, event_id || '-x' as event_id)"
                    f" from raw.events where cast(event_ts as date) = '{BUSINESS_DAY}' limit 1")
    children = set(_graph().get(staging).child_keys)
    job = runs.definitions().resolve_job_def("shopcast_graph").get_subset(asset_selection={staging, *children})
    with runs.instance() as instance:
        result = job.execute_in_process(instance=instance, partition_key=PARTITION, raise_on_error=False)
    assert children and not result.success
    failed_tests = {e.asset_check_key.name for e in result.get_asset_check_evaluations() if not e.passed}
    (failed_test,) = failed_tests
    assert failed_test.startswith("accepted_values_stg_shop__events_event_type"), failed_test
    assert {e.asset_key for e in result.get_asset_materialization_events()} & children == set()
