"""The feedback loop end to end through Dagster: daily runs, a backfill equal to them, realised performance,
drift injected by the generator failing the drift check, and the retraining sensor's retrain with its backtest
landing in monitoring.model_decisions."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import _point_at

# One worker runs the whole module: its fixture (about 6 minutes) is built once, not on both (Makefile: loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("feedback_loop")]

# Every retrain is backtested on up to 3 closed cutoffs; one family, with the time to try its whole grid, so that
# training (and so every gate decision) is the same on every run, however busy the machine.
LOOP_ENV = {"SHOPCAST_BACKTEST_CUTOFFS": "3", "SHOPCAST_MODEL_FAMILIES": "logistic_regression",
            "SHOPCAST_TRAINING_BUDGET_SECONDS": "600"}
DRIFT_FROM = dt.date(2026, 11, 1)       # behaviour shifts from this day ...
FIRST_AS_OF = DRIFT_FROM                # ... the first run trains on the days before it
DRIFTED_AS_OF = dt.date(2026, 11, 12)   # 11 days later the 7-day windows are all drifted


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Train at FIRST_AS_OF, then two daily scoring runs, then a drifted day: one home, built once."""
    from dagster_project import runs
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    saved = dict(os.environ)
    root = tmp_path_factory.mktemp("loop")
    home, twin = root / "home", root / "twin"

    def point_at(folder):
        paths = _point_at(folder)
        os.environ.update(LOOP_ENV)
        return paths

    try:
        paths = point_at(home)
        generate(GeneratorConfig(n_events=40_000, seed=7, days=80, end_date=dt.date(2026, 11, 15),
                                 drift_from=DRIFT_FROM), paths.landing / "canonical")
        runs.ingest("canonical", [str(paths.landing / "canonical")])
        runs.run_graph(FIRST_AS_OF, progress=lambda _: None)
        shutil.copytree(home, twin, symlinks=True)  # the same starting home, for the backfill
        days = [FIRST_AS_OF + dt.timedelta(days=1), FIRST_AS_OF + dt.timedelta(days=2)]
        runs.backfill("daily_scoring", days[0], days[1], per_day=True, progress=lambda _: None)
        daily = snapshot(paths.warehouse, days)
        point_at(twin)  # the same dates as one run, on the copy: a backfill that did nothing would compare empty
        runs.backfill("daily_scoring", days[0], days[1], progress=lambda _: None)
        backfilled = snapshot(twin / "warehouse.duckdb", days)
        paths = point_at(home)
        # the days in between are never run: the drift retrain at DRIFTED_AS_OF computes the features of the
        # weekly cutoffs it reads (marts/training_cutoff_features)
        runs.run_job("daily_scoring", DRIFTED_AS_OF)
        requests, cursor = runs.evaluate_retraining_sensor()
        again, _ = runs.evaluate_retraining_sensor(cursor)
        launched = [runs.launch(r) for r in requests]
        # a fresh sensor (no cursor) asks nothing more: the targets were retrained for the drifted date
        after_retrain, _ = runs.evaluate_retraining_sensor()
        yield {"paths": paths, "daily": daily, "backfilled": backfilled, "requests": requests, "again": again,
               "launched": launched, "after_retrain": after_retrain, "instance": runs.instance}
    finally:
        os.environ.clear()
        os.environ.update(saved)


COMPARED = {  # table -> columns that differ between any two runs by design (times, registry versions)
    "predictions.purchase_propensity_7d": ["scored_at"],
    "predictions.churn_probability_7d": ["scored_at"],
    "predictions.predicted_revenue_28d": ["scored_at"],
    "predictions.clv": ["scored_at", "model_version"],
    "marts.feat_user_daily": [],  # (fct_scoring_population holds the latest run's dates only, by design)
    "monitoring.feature_drift": ["computed_at"],
}


def snapshot(warehouse, days) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        out = {}
        for table, ignored in COMPARED.items():
            columns = f"* exclude ({', '.join(ignored)})" if ignored else "*"
            frame = con.execute(f"select {columns} from {table} where as_of_date in (select unnest(?)) "
                                "order by all", [days]).df()
            out[table] = frame.reset_index(drop=True)
        return out


def published(loop) -> str:
    """The classification target that has a champion on this small data set (purchase or churn: which of them
    beats BG/NBD in the backtest depends on the sample; the gate may rightly keep the other unpublished)."""
    for target in ("purchase_propensity_7d", "churn_probability_7d"):
        if len(loop["daily"][f"predictions.{target}"]):
            return target
    raise AssertionError("neither purchase nor churn was published: nothing to monitor")


def test_a_backfill_equals_the_sequence_of_daily_runs(loop):
    for table, frame in loop["daily"].items():
        if not table.startswith("predictions.") or table == f"predictions.{published(loop)}":
            assert len(frame) > 0, table
        pd.testing.assert_frame_equal(frame, loop["backfilled"][table], check_exact=False, rtol=1e-9,
                                      obj=table)
    dates = set(pd.to_datetime(loop["daily"][f"predictions.{published(loop)}"].as_of_date).dt.date)
    assert dates == {FIRST_AS_OF + dt.timedelta(days=1), FIRST_AS_OF + dt.timedelta(days=2)}


def test_realised_performance_matches_the_outcomes_it_was_computed_from(loop):
    with duckdb.connect(str(loop["paths"].warehouse), read_only=True) as con:
        performance = con.execute("select * from monitoring.prediction_performance").df()
        outcomes = con.execute("select * from monitoring.fct_prediction_outcomes where target = ?",
                               [published(loop)]).df()
    # at DRIFTED_AS_OF the 7-day windows of the first three scoring dates have closed; the 28-day ones not yet
    purchase = performance[performance.target == published(loop)]
    assert set(pd.to_datetime(purchase.as_of_date).dt.date) == {FIRST_AS_OF + dt.timedelta(days=d) for d in range(3)}
    assert performance[performance.target == "predicted_revenue_28d"].empty
    for row in purchase.itertuples():
        day = outcomes[(outcomes.as_of_date == row.as_of_date) & (outcomes.model_version == row.model_version)]
        assert row.users == len(day) > 50
        assert row.roc_auc == pytest.approx(roc_auc_score(day.outcome, day.score))
        assert row.pr_auc == pytest.approx(average_precision_score(day.outcome, day.score))
        top = day.sort_values("score", ascending=False, kind="stable").head(int(np.ceil(len(day) / 10)))
        assert row.lift_top_decile == pytest.approx(top.outcome.mean() / day.outcome.mean())
        assert row.roc_auc > 0.6  # the champion's scores were worth something


def test_injected_drift_fails_the_drift_check_and_the_sensor_requests_one_retrain(loop):
    with duckdb.connect(str(loop["paths"].warehouse), read_only=True) as con:
        views = con.execute("select as_of_date, psi, status from monitoring.feature_drift where target = ? "
                            "and feature = 'view_count_7d' order by as_of_date", [published(loop)]).df()
    before = views[pd.to_datetime(views.as_of_date).dt.date == FIRST_AS_OF + dt.timedelta(days=1)]
    after = views[pd.to_datetime(views.as_of_date).dt.date == DRIFTED_AS_OF]
    assert float(before.psi.iloc[0]) < 0.25 < float(after.psi.iloc[0]) and after.status.iloc[0] == "fail"
    import dagster as dg

    with loop["instance"]() as instance:
        check = dg.AssetCheckKey(dg.AssetKey(["monitoring", "feature_drift"]), "feature_drift_within_limits")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[check]
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.ERROR
    requested = {r.tags["shopcast/trigger"] for r in loop["requests"]}
    targets = {r.asset_selection[0].path[-1].removesuffix("_candidates") for r in loop["requests"]}
    assert requested == {"drift"} and published(loop) in targets
    assert all(r.partition_key == DRIFTED_AS_OF.isoformat() for r in loop["requests"])
    assert loop["again"] == []  # the cursor: one request per target and signal, not one per tick
    assert loop["after_retrain"] == []  # a target trained for the signal's date is not asked to retrain again


def test_every_retrain_is_backtested_and_its_decision_recorded(loop):
    assert all(result.success for result in loop["launched"])
    with duckdb.connect(str(loop["paths"].warehouse), read_only=True) as con:
        log = con.execute("select * from monitoring.model_decisions order by decided_at").df()
    # the propensity targets' decisions (the recommendations' and the cold-start list's: test_pipeline)
    log = log[~log.target.isin(["next_items", "cold_start_items"])]
    first = log[pd.to_datetime(log.as_of_date).dt.date == FIRST_AS_OF]
    assert set(first.trigger) == {"manual"} and len(first) == 3  # one decision per target at the first run
    # the decisions this data set and the one deterministic family lead to (measured, then pinned): churn beats
    # BG/NBD and is published; purchase does not and stays challenger; revenue has no closed 28-day window yet
    assert dict(zip(first.target, first.decision)) == {"churn_probability_7d": "champion",
                                                       "purchase_propensity_7d": "challenger",
                                                       "predicted_revenue_28d": "none"}
    purchase = first[first.target == "purchase_propensity_7d"].iloc[0]
    assert purchase.reason.startswith("kept as challenger: does not beat baseline (BG/NBD)")
    assert purchase.candidate_score < purchase.incumbent_score
    # the drift retrain of the published target: backtested against its champion, which it beats
    retrains = log[log.trigger == "drift"]
    assert len(retrains) == len(loop["requests"]) == 1
    assert list(zip(retrains.target, retrains.decision, retrains.incumbent)) == [
        ("churn_probability_7d", "champion", "champion v1")]
    for row in retrains.itertuples():
        assert row.candidate_score > row.incumbent_score and row.reason.startswith("promoted: beats champion v1")
        if row.decision != "none":
            folds = pd.read_json(pd.io.common.StringIO(row.backtest_folds))
            assert len(folds) >= 2 and row.incumbent.startswith(("champion v", "baseline"))
            assert row.candidate_score == pytest.approx(folds[~folds.incumbent_in_sample].candidate.mean()
                                                        if (~folds.incumbent_in_sample).any()
                                                        else folds.candidate.mean())
