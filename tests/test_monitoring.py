"""The feedback loop's library parts: realised metrics and PSI against hand computations, drift statuses, the
backtest's folds, and the decision log."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from dagster_project import decisions
from ml.backtest import backtest
from ml.monitoring import SCORE_FEATURE, DriftLimits, drift_summary, drift_table, psi, realised_performance
from ml.targets import PURCHASE_PROPENSITY_7D as TARGET
from tests.test_models import _panel

Y = [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
P = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]


def test_realised_metrics_equal_a_hand_computation():
    outcomes = pd.DataFrame({"target": TARGET.name, "as_of_date": pd.Timestamp("2026-10-01"), "model_name": "m",
                             "model_version": "3", "score": P, "outcome": Y})
    (row,) = realised_performance(outcomes, regression_targets=set()).to_dict("records")
    # ROC-AUC: of the 2 x 8 (positive, negative) pairs, the 0.9 positive outranks all 8, the 0.7 one 7 of 8
    assert row["roc_auc"] == pytest.approx(15 / 16)
    # average precision: positives at ranks 1 and 3, precisions 1/1 and 2/3
    assert row["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    # top decile = the first user (a buyer): rate 1 over the base rate 0.2; it holds 1 of the 2 buyers
    assert row["lift_top_decile"] == pytest.approx(5.0) and row["capture_top_decile"] == pytest.approx(0.5)
    # ten deciles of one user: mean |p - y| = (0.1 + 0.8 + 0.3 + 0.6 + 0.5 + 0.4 + 0.3 + 0.2 + 0.1 + 0.05) / 10
    assert row["calibration_error"] == pytest.approx(3.35 / 10)
    assert row["mean_predicted"] == pytest.approx(0.455) and row["observed_rate"] == pytest.approx(0.2)
    assert (row["users"], row["positives"], row["model_version"]) == (10, 2, "3")


def test_realised_metrics_are_grouped_by_date_and_version_and_amounts_use_regression_metrics():
    rows = []
    for version, date in (("1", "2026-10-01"), ("2", "2026-10-01"), ("2", "2026-10-02")):
        rows += [{"target": "predicted_revenue_28d", "as_of_date": pd.Timestamp(date), "model_name": "r",
                  "model_version": version, "score": s, "outcome": o}
                 for s, o in ((30.0, 40.0), (10.0, 8.0), (5.0, 5.0), (1.0, 0.0))]
    table = realised_performance(pd.DataFrame(rows), regression_targets={"predicted_revenue_28d"})
    assert len(table) == 3 and table.roc_auc.isna().all()
    # the prediction orders the amounts perfectly: normalized Gini 1; MAE = (10 + 2 + 0 + 1) / 4
    assert table.normalized_gini.tolist() == pytest.approx([1.0] * 3)
    assert table.mae.tolist() == pytest.approx([13 / 4] * 3)


def test_psi_equals_a_hand_computation():
    reference = np.arange(100)  # ten equal bins at the reference's deciles
    current = np.array([0] * 50 + [99] * 50)  # half in the first bin, half in the last
    eps = 1e-4  # an empty bin counts as this share (the missing-values bin is empty on both sides: no term)
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (eps - 0.1) * math.log(eps / 0.1)
    assert psi(reference, current) == pytest.approx(expected)
    assert psi(reference, reference) == pytest.approx(0.0)
    # missing values are a bin of their own: a fifth of the current values missing
    with_nulls = np.concatenate([np.arange(80), [np.nan] * 20]).astype(float)
    assert psi(reference, with_nulls) > 0.25


def test_drift_statuses_warn_fail_missing_feature_and_null_jump():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"stable": rng.normal(size=2000), "shifted": rng.normal(size=2000),
                              "nullier": rng.normal(size=2000), "gone": rng.normal(size=2000)})
    current = pd.DataFrame({"stable": rng.normal(size=2000), "shifted": rng.normal(2.0, 1.0, 2000),
                            "nullier": np.where(rng.random(2000) < 0.3, np.nan, rng.normal(size=2000))})
    table = drift_table(reference, current, ["stable", "shifted", "nullier", "gone"], DriftLimits(),
                        reference_scores=rng.random(2000), current_scores=rng.random(2000)).set_index("feature")
    assert table.loc["stable", "status"] == "ok" and table.loc["stable", "psi"] < 0.1
    assert table.loc["shifted", "status"] == "fail" and table.loc["shifted", "psi"] > 0.25
    assert table.loc["gone", "status"] == "fail" and "missing" in table.loc["gone", "problem"]
    assert table.loc["nullier", "status"] in ("warn", "fail") and "null rate 0.00 -> " in table.loc["nullier", "problem"]
    assert table.loc["nullier", "null_rate_current"] == pytest.approx(0.3, abs=0.05)
    assert table.loc[SCORE_FEATURE, "status"] == "ok"
    assert (table.reference_rows == 2000).all() and (table.current_rows == 2000).all()
    strict = drift_table(reference, current, ["stable"], DriftLimits(psi_warn=0.0001, psi_fail=0.5))
    assert strict.status.tolist() == ["warn"]


def test_features_that_move_by_construction_are_reported_but_never_fail():
    rng = np.random.default_rng(1)
    # tenure grows with the calendar; a BG/NBD output refitted on another date moves with its fit
    reference = pd.DataFrame({"tenure_days": rng.integers(0, 120, 2000), "clv_p_alive": rng.random(2000),
                              "view_count_7d": rng.poisson(3, 2000)})
    current = pd.DataFrame({"tenure_days": rng.integers(30, 150, 2000), "clv_p_alive": np.ones(2000),
                            "view_count_7d": rng.poisson(3, 2000)})
    features = ["tenure_days", "clv_p_alive", "view_count_7d"]
    table = drift_table(reference, current, features, DriftLimits()).set_index("feature")
    assert table.loc["tenure_days", "psi"] > 0.25 and table.loc["clv_p_alive", "psi"] > 0.25
    assert table.loc[["tenure_days", "clv_p_alive"], "status"].tolist() == ["info", "info"]
    assert "informational" in table.loc["tenure_days", "problem"]
    assert table.loc["view_count_7d", "status"] == "ok"
    judged = drift_table(reference, current, features, DriftLimits(informational=())).set_index("feature")
    assert judged.loc[["tenure_days", "clv_p_alive"], "status"].tolist() == ["fail", "fail"]


def test_the_drift_summary_keeps_informational_features_apart_from_the_judged_ones():
    """Issue 26: a summary whose max PSI was an informational feature's (2.6-3.0 on the demo) beside "warn 0, fail 0"
    read as an alarm; the judged features' largest PSI and the informational ones' are separate columns."""
    latest = pd.DataFrame({"target": ["t"] * 4, "feature": ["tenure_days", "view_count_7d", "cart_count_7d",
                                                             SCORE_FEATURE],
                           "psi": [2.8, 0.12, 0.03, 0.05], "status": ["info", "warn", "ok", "ok"]})
    (row,) = drift_summary(latest).to_dict("records")
    assert row == {"target": "t", "judged_features": 3, "max_psi_judged": 0.12, "warn": 1, "fail": 0,
                   "score_psi": 0.05, "informational_features": 1, "max_psi_informational (not judged)": 2.8}
    assert drift_summary(latest.iloc[:0]).empty


def test_backtest_refits_per_fold_and_leaves_out_folds_the_champion_was_trained_on():
    frame = _panel(600, 4)
    columns = ["cart_count_28d", "fav_count_28d"]
    from ml.models import FAMILIES

    candidate = FAMILIES["logistic_regression"].build(columns, {"C": 1.0}).fit(
        frame[columns].astype(float), frame[TARGET.label])
    weak = FAMILIES["logistic_regression"].build(["fav_count_28d"], {"C": 1.0}).fit(
        frame[["fav_count_28d"]].astype(float), frame[TARGET.label])
    result = backtest(frame, TARGET, candidate, "logistic_regression", incumbent_model=weak,
                      incumbent_name="champion v1", incumbent_training_dates={"2026-10-11", "2026-10-04"},
                      folds=3, min_examples_per_class=20)
    assert [f.as_of_date for f in result.folds] == ["2026-10-25", "2026-10-18", "2026-10-11"]
    assert [f.training_rows for f in result.folds] == [1800, 1200, 600]  # only the cutoffs older than the fold
    assert [f.incumbent_in_sample for f in result.folds] == [False, False, True]
    assert [f.as_of_date for f in result.compared] == ["2026-10-25", "2026-10-18"]
    assert result.candidate_score > result.incumbent_score
    assert result.candidate_score == pytest.approx(np.mean([f.candidate for f in result.folds[:2]]))
    # the newest fold's score is that of a model refit on the older cutoffs, as the candidate was trained
    fold, older = frame[frame.cutoff_rank == 1], frame[frame.cutoff_rank > 1]
    refit = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(
        older[columns].astype(float), older[TARGET.label])
    from sklearn.metrics import average_precision_score

    expected = average_precision_score(fold[TARGET.label], refit.predict_proba(fold[columns].astype(float))[:, 1])
    assert result.folds[0].candidate == pytest.approx(expected, abs=1e-3)
    no_champion = backtest(frame, TARGET, candidate, "logistic_regression", folds=2, min_examples_per_class=20)
    assert no_champion.incumbent_name == "baseline (recency/frequency)" and len(no_champion.folds) == 2
    assert not any(f.incumbent_in_sample for f in no_champion.folds) and len(fold) == 600


def test_decisions_are_appended_with_their_trigger(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    decisions.record(con, as_of_date="2026-11-01", target="t", trigger=decisions.trigger_of({}), decision="none",
                     promoted=False, reason="not eligible")
    decisions.record(con, as_of_date="2026-11-08", target="t",
                     trigger=decisions.trigger_of({decisions.TRIGGER_TAG: "drift"}), decision="champion",
                     promoted=True, candidate_version="2", candidate_score=0.6, incumbent_score=0.5,
                     backtest_folds=[{"as_of_date": "2026-11-01", "candidate": 0.6}], reason="promoted")
    rows = con.execute("select as_of_date::varchar, trigger, decision, promoted, candidate_version, backtest_folds "
                       "from monitoring.model_decisions order by decided_at").fetchall()
    assert rows == [("2026-11-01", "manual", "none", False, None, None),
                    ("2026-11-08", "drift", "champion", True, "2",
                     '[{"as_of_date": "2026-11-01", "candidate": 0.6}]')]
    assert decisions.trigger_of({decisions.SCHEDULE_TAG: "shopcast_weekly_training"}) == \
        "schedule:shopcast_weekly_training"


def test_the_hash_sample_bounds_rows_per_date_keeps_the_same_users_and_applies_the_filter():
    from dagster_project.warehouse import hash_sample_sql

    con = duckdb.connect()
    con.execute("create table population as select 'u' || i as user_id, date '2026-10-01' + cast(d as integer) as as_of_date, "
                "i % 3 as events_7d from range(30000) r(i), range(3) s(d) "
                "union all select 'small' || i, date '2026-10-04', 1 from range(50) r(i)")
    sample = con.execute(f"select * from {hash_sample_sql('population', 5000, '$1 <= as_of_date and events_7d > 0')}",
                         [pd.Timestamp("2026-10-02")]).df()
    per_date = sample.groupby(sample.as_of_date.astype(str)).user_id
    # 20,000 eligible users a date (events_7d > 0), about 5,000 kept; a date with fewer keeps all of them
    assert per_date.size().drop("2026-10-04").between(4500, 5500).all() and per_date.size()["2026-10-04"] == 50
    assert "2026-10-01" not in per_date.size() and (sample.events_7d > 0).all()
    assert set(per_date.get_group("2026-10-02")) == set(per_date.get_group("2026-10-03"))  # the same users


def test_a_realised_drop_of_the_current_champion_beyond_the_setting_signals_a_retrain(tmp_path):
    from ml.monitoring import performance_drops
    from ml.registry import CHAMPION, Store, set_alias
    from ml.targets import CHURN_PROBABILITY_7D

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    client = store.activate()
    client.create_registered_model(TARGET.name)
    for _ in range(2):  # v1 the previous champion, v2 the current one; both promised PR-AUC 0.30 at validation
        client.create_model_version(TARGET.name, source=str(tmp_path), tags={"pr_auc": "0.30"})
    set_alias(store, TARGET.name, CHAMPION, "2")
    days = pd.date_range("2026-10-01", periods=14)

    def table(recent_v2: float) -> pd.DataFrame:
        return pd.DataFrame({
            "target": [TARGET.name] * 28 + [CHURN_PROBABILITY_7D.name],  # churn has no champion in this store
            "model_version": ["1"] * 14 + ["2"] * 14 + ["1"],
            "as_of_date": [*days, *days, days[-1]],
            # v1 fell far (it is no longer the champion); v2 was poor long ago and is `recent_v2` in the last 7 days
            "pr_auc": [0.05] * 14 + [0.10] * 7 + [recent_v2] * 7 + [0.01],
            "roc_auc": 0.5})

    assert performance_drops(table(0.26), store, [TARGET, CHURN_PROBABILITY_7D], drop=0.05) == {}
    assert performance_drops(table(0.24), store, [TARGET, CHURN_PROBABILITY_7D], drop=0.05) == {
        TARGET.name: "realised pr_auc 0.240 over 7 closed date(s) is below the validation figure 0.300 by more "
                     "than 0.05"}
    assert performance_drops(table(0.24), store, [TARGET], drop=0.1) == {}


def test_realised_scores_that_stop_adding_up_signal_a_retrain_of_the_champion(tmp_path):
    from ml.monitoring import calibration_drifts
    from ml.registry import CHAMPION, Store, set_alias

    # the realised ratio, per date, is what the scores promised in total over what happened
    outcomes = pd.DataFrame({"target": TARGET.name, "as_of_date": pd.Timestamp("2026-10-01"), "model_name": "m",
                             "model_version": "2", "score": P, "outcome": Y})
    (row,) = realised_performance(outcomes, set()).itertuples()
    assert row.expected_over_observed == pytest.approx(sum(P) / sum(Y))
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    client = store.activate()
    client.create_registered_model(TARGET.name)
    for _ in range(2):
        client.create_model_version(TARGET.name, source=str(tmp_path))
    set_alias(store, TARGET.name, CHAMPION, "2")
    days = pd.date_range("2026-10-01", periods=10)

    def table(promised_rate: float) -> pd.DataFrame:  # 100 users a day, 10 % buy; v1's old rows promise 5x
        return pd.DataFrame({"target": TARGET.name, "model_version": ["1"] * 10 + ["2"] * 10,
                             "as_of_date": [*days, *days], "users": 100, "observed_rate": 0.10,
                             "mean_predicted": [0.5] * 10 + [0.2] * 3 + [promised_rate] * 7})

    assert calibration_drifts(table(0.12), store, [TARGET], 0.8, 1.25) == {}  # the last 7 dates: 1.2
    assert calibration_drifts(table(0.13), store, [TARGET], 0.8, 1.25) == {
        TARGET.name: "realised expected/observed 1.30 over 7 closed date(s) is outside [0.8, 1.25]: the published "
                     "scores no longer add up"}
    assert set(calibration_drifts(table(0.07), store, [TARGET], 0.8, 1.25)) == {TARGET.name}  # too few promised


def test_the_performance_asset_carries_both_feedback_checks():
    """Both are documented in docs/feedback_loop.md; realised_scores_add_up was defined but never registered."""
    import dagster as dg

    from dagster_project.runs import definitions

    graph = definitions().resolve_asset_graph()
    names = {key.name for key in graph.asset_check_keys
             if key.asset_key == dg.AssetKey(["monitoring", "prediction_performance"])}
    assert names == {"realised_performance_holds", "realised_scores_add_up"}
