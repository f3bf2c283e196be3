"""Probabilities that add up (issue 22): calibration metrics by hand, the calibrator's choice, the floor applied
before choosing, and a miscalibrated model refused by the gate on its real path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ml.calibration import calibrate, calibration_metrics, reliability_table, uncalibrated
from ml.evaluate import classification_metrics
from ml.registry import CHAMPION, version_by_alias
from ml.targets import PURCHASE_PROPENSITY_7D as TARGET
from ml.targets import Eligibility
from ml.train import Candidate, choose, train_candidates
from tests.test_models import _gate, _log, _panel, store  # noqa: F401 (a fixture)

COLUMNS = ["events_28d", "days_since_last_event", "cart_count_28d", "fav_count_28d"]


def test_calibration_metrics_equal_a_hand_computation():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.1, 0.1, 0.5, 0.5, 0.05, 0.05, 0.05, 0.05])
    metrics = calibration_metrics(y, p)
    assert metrics["expected_positives"] == pytest.approx(2.4)
    assert metrics["expected_over_observed"] == pytest.approx(1.2)
    # equal-width bins: [0, .1): 4 users predicted .05, observed 0; [.1, .2): 3 at .1, observed 0; [.5, .6): 2 at
    # .5, observed .5; [.9, 1]: 1 at .9, observed 1
    assert metrics["ece"] == pytest.approx((4 * 0.05 + 3 * 0.1 + 2 * 0.0 + 1 * 0.1) / 10)
    # outcomes drawn from the probabilities themselves: slope 1 and intercept 0, within sampling error
    rng = np.random.default_rng(0)
    p = rng.beta(1, 6, 200_000)
    drawn = calibration_metrics(rng.random(len(p)) < p, p)
    assert drawn["calibration_slope"] == pytest.approx(1, abs=0.03)
    assert drawn["calibration_intercept"] == pytest.approx(0, abs=0.05)
    assert drawn["expected_over_observed"] == pytest.approx(1, abs=0.02) and drawn["ece"] < 0.01
    # too extreme (a logit doubled): a slope near one half
    assert calibration_metrics(rng.random(len(p)) < p, 1 / (1 + (1 / p - 1) ** 2))["calibration_slope"] == \
        pytest.approx(0.5, abs=0.03)
    table = reliability_table(y, np.linspace(1, 0.1, 10))
    assert table.decile.tolist() == list(range(1, 11)) and table.observed_rate.tolist() == y.tolist()


def _weighted_model(seed=0):
    """A real source of miscalibration: balanced class weights on a 25 % outcome (the demo's champions had it)."""
    frame = _panel(3000, 3, seed=seed, intercept=-4.0)  # about 10 % buy
    fit, tune, valid = (frame[frame.cutoff_rank == r] for r in (3, 2, 1))
    model = LogisticRegression(class_weight="balanced").fit(fit[COLUMNS].astype(float), fit[TARGET.label])
    return frame, model, tune, valid


def test_a_calibrator_fitted_on_a_later_cutoff_makes_a_weighted_model_add_up():
    _, model, tune, valid = _weighted_model()
    X_valid, y_valid = valid[COLUMNS].astype(float), valid[TARGET.label].to_numpy()
    before = calibration_metrics(y_valid, model.predict_proba(X_valid)[:, 1])
    # the model was fitted on rank 3: its predictions for rank 2 are out of sample, as cross-fitting makes them
    calibrated, choice = calibrate(model, model.predict_proba(tune[COLUMNS].astype(float))[:, 1],
                                   tune[TARGET.label].to_numpy(), as_of="2026-10-18")
    after = calibration_metrics(y_valid, calibrated.predict_proba(X_valid)[:, 1])
    assert before["expected_over_observed"] > 1.5  # balanced weights: about twice the buyers there are
    assert 0.9 <= after["expected_over_observed"] <= 1.1 and after["ece"] < before["ece"] / 3
    # the method with the lower out-of-fold log loss, both better than none; isotonic was allowed (enough positives)
    assert set(choice.log_loss) == {"none", "sigmoid", "isotonic"}
    assert choice.method == min(("sigmoid", "isotonic"), key=choice.log_loss.get)
    assert choice.log_loss[choice.method] < choice.log_loss["none"]
    assert uncalibrated(calibrated) is model  # what the backtest refits: the pipeline, not the calibrator
    # few positives: isotonic is not tried
    few = pd.concat([tune[tune[TARGET.label] == 1].head(150), tune[tune[TARGET.label] == 0].head(600)])
    assert set(calibrate(model, model.predict_proba(few[COLUMNS].astype(float))[:, 1],
                         few[TARGET.label].to_numpy())[1].log_loss) == {"none", "sigmoid"}


def _candidate(family: str, **metrics) -> Candidate:
    return Candidate(family, {}, 0.0, 0.5, None, metrics={"base_rate": 0.1, "expected_over_observed": 1.0,
                                                         "roc_auc": 0.7, **metrics})


def test_the_floor_is_applied_before_the_best_is_chosen_and_every_miss_is_said():
    floor = Eligibility(min_roc_auc=0.6)
    ranks_best_but_too_weak = _candidate("neural_network", roc_auc=0.598, pr_auc=0.723)  # Taobao's case
    passes = _candidate("random_forest", roc_auc=0.617, pr_auc=0.720)
    best, problems = choose([ranks_best_but_too_weak, passes], floor, "pr_auc")
    assert best is passes and problems == []
    inflated = _candidate("random_forest", pr_auc=0.72, expected_over_observed=2.56)
    best, problems = choose([ranks_best_but_too_weak, inflated], floor, "pr_auc")
    assert best is ranks_best_but_too_weak and problems == [
        "neural_network: ROC-AUC 0.598 < 0.6",
        "random_forest: expected/observed positives 2.56 outside [0.8, 1.25] (the probabilities do not add up)"]


def test_among_candidates_that_rank_alike_the_better_fitting_probabilities_are_published():
    floor = Eligibility(min_roc_auc=0.6)
    # Taobao's validation cutoff: a tie in PR-AUC, the logistic regression's probabilities fitted worse
    logistic = _candidate("logistic_regression", pr_auc=0.7186, log_loss=0.749)
    forest = _candidate("random_forest", pr_auc=0.7183, log_loss=0.642)
    best, _ = choose([logistic, forest], floor, "pr_auc")
    assert best is forest
    # a clearly better ranking is not traded for a better fit
    boosting = _candidate("gradient_boosting", pr_auc=0.7300, log_loss=0.700)
    assert choose([logistic, forest, boosting], floor, "pr_auc")[0] is boosting


def test_a_miscalibrated_model_is_refused_by_the_gate_and_its_calibrated_twin_is_not(store):  # noqa: F811
    from ml.gate import register

    frame, model, tune, valid = _weighted_model(seed=1)
    X_valid, y_valid = valid[COLUMNS].astype(float), valid[TARGET.label].to_numpy()
    on_tune = model.predict_proba(tune[COLUMNS].astype(float))[:, 1]
    for published, expected_problem in ((model, True), (calibrate(model, on_tune, tune[TARGET.label])[0], False)):
        problems = Eligibility().quality_problems(classification_metrics(y_valid, published.predict_proba(X_valid)[:, 1],
                                                                         0.5))
        assert bool(problems) is expected_problem, problems
        entry = register(store, TARGET, _log(store, published, frame, COLUMNS),
                         {"as_of_date": "2026-11-01", "family": "logistic_regression"})
        decision = _gate(store, TARGET, entry, frame, problems=problems)
        assert decision.promoted is not expected_problem, decision.reason
        if expected_problem:
            assert decision.reason.startswith("not published: below the quality floor (expected/observed positives")
            assert version_by_alias(store, TARGET.name, CHAMPION) is None


def test_every_trained_classifier_is_calibrated_and_its_probabilities_add_up_on_validation(store):  # noqa: F811
    frame = _panel(2000, 4, seed=3)
    outcome = train_candidates(frame, TARGET, store, families=["logistic_regression", "random_forest"],
                               eligibility=Eligibility(min_examples_per_class=20), budget_seconds=60)
    for candidate in outcome.candidates:
        assert candidate.calibration.as_of == "2026-10-18" and candidate.calibration.rows == 2000
        assert 0.9 <= candidate.metrics["expected_over_observed"] <= 1.1, candidate.family
    assert outcome.quality_problems == [] and list(outcome.reliability.columns) == [
        "decile", "users", "mean_predicted", "observed_rate"]
    # the baseline (a ranking, not a probability) has no calibration figures
    assert np.isnan(outcome.baseline["expected_over_observed"])
    # one training cutoff: a fixed share of its users tunes and calibrates, never the ones the model was fitted on
    two = frame[frame.cutoff_rank <= 2]
    single = train_candidates(two, TARGET, store, families=["logistic_regression"],
                              eligibility=Eligibility(min_examples_per_class=20), budget_seconds=60)
    assert single.split.tune_is_holdout and set(single.split.fit.user_id).isdisjoint(single.split.tune.user_id)
    assert len(single.split.tune) == pytest.approx(0.3 * 2000, rel=0.1)
    assert single.candidates[0].calibration.as_of == "2026-10-18"  # out-of-fold over its users
    pd.testing.assert_frame_equal(single.split.train, two[two.cutoff_rank == 2])


def _weekly_rates(rates, users=4000, seed=0):
    """Out-of-fold-like predictions over weekly cutoffs whose positive rates are ``rates`` (oldest first): the
    predictions rank (a logit of signal) but their level is the pooled one, as a model fitted on every cutoff."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, rate in enumerate(rates):
        signal = rng.normal(size=users)
        p_true = 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + signal)))
        frames.append(pd.DataFrame({"as_of_date": pd.Timestamp("2026-09-06") + pd.Timedelta(weeks=i),
                                    "prediction": 1 / (1 + np.exp(-(-1.0 + signal))),
                                    "y": (rng.random(users) < p_true).astype(int)}))
    return pd.concat(frames, ignore_index=True)


def test_the_calibration_window_follows_a_trend_and_pools_noise():
    """A steady trend (the rate up 15 % a week): the newest cutoff alone predicts the next one best. A steady rate
    that swings by a few points from week to week (demo churn's newest cutoff 0.273 against 0.237-0.257 around it):
    pooling cutoffs does."""
    from ml.calibration import choose_window

    trending = _weekly_rates([0.10 * 1.15 ** i for i in range(8)], seed=1)
    choice = choose_window(trending.as_of_date, trending.prediction, trending.y)
    assert choice.cutoffs == 1 and choice.steps == 3 and set(choice.errors) == {1, 2, 4}
    assert choice.errors[1] < choice.errors[2] < choice.errors[4]
    # each window lags the trend by its mean age: one week for the newest alone (at most a week's 15 % growth in
    # the rate), 2.5 for four
    assert choice.errors[1] < np.log(1.15) and choice.errors[4] > 2 * choice.errors[1]

    noisy = _weekly_rates([0.25, 0.24, 0.26, 0.25, 0.21, 0.29, 0.22, 0.28], users=1000, seed=2)
    choice = choose_window(noisy.as_of_date, noisy.prediction, noisy.y)
    assert choice.cutoffs in (2, 4) and choice.errors[choice.cutoffs] < 0.7 * choice.errors[1]
    # too few cutoffs to backtest a window on every step: it is not tried; none left, the newest alone
    assert set(choose_window(noisy.as_of_date[:5000], noisy.prediction[:5000], noisy.y[:5000]).errors) == {1, 2}
    single = choose_window(noisy.as_of_date[:1000], noisy.prediction[:1000], noisy.y[:1000])
    assert (single.cutoffs, single.errors, single.steps) == (1, {}, 0)
    # amounts: the total's scale, backtested the same way
    spend = trending.assign(y=trending.y * 50.0, prediction=trending.prediction * 40.0)
    assert choose_window(spend.as_of_date, spend.prediction, spend.y, amounts=True).cutoffs == 1


def test_the_calibrator_learns_from_the_window_the_backtest_chose(monkeypatch):
    import ml.calibration
    from ml.models import FAMILIES
    from ml.train import out_of_fold, time_split

    split = time_split(_panel(300, 8, seed=5), TARGET, min_examples_per_class=20)  # validation 10-25; trains 7
    for windows, dates in (((1,), ["2026-10-18"]), ((4,), ["2026-09-27", "2026-10-04", "2026-10-11", "2026-10-18"])):
        monkeypatch.setattr(ml.calibration, "WINDOWS", windows)
        rows, predictions, window = out_of_fold(FAMILIES["logistic_regression"], COLUMNS, {"C": 1.0}, split, TARGET)
        assert window.cutoffs == windows[0] and set(window.errors) == set(windows)
        assert sorted(rows.as_of_date.dt.strftime("%Y-%m-%d").unique()) == dates
        assert len(rows) == len(predictions) == 300 * len(dates) and np.isfinite(predictions).all()
        assert rows.user_id.nunique() == 300


def test_a_revenue_forecast_scaled_on_the_tuning_cutoff_adds_up_when_spending_grows():
    """Spending grows 15 % a week (a season starting): a model fitted on older weeks underpredicts the newest; the
    scale fitted on the tuning cutoff brings the validation total within 20 % of what was spent."""
    import tempfile
    from pathlib import Path

    from ml.calibration import ScaledRegressor
    from ml.evaluate import predict_scores
    from ml.features import to_matrix
    from ml.registry import Store
    from ml.targets import PREDICTED_REVENUE_28D as REVENUE
    from tests.test_models import _revenue_panel

    frame = _revenue_panel(1500, 4, seed=4)
    frame["revenue_next_28d"] *= 1.15 ** -(frame.cutoff_rank - 1)
    work = Path(tempfile.mkdtemp())
    outcome = train_candidates(frame, REVENUE, Store(f"sqlite:///{work / 'm.db'}", work / "a"),
                               families=["hurdle_linear"], budget_seconds=30,
                               eligibility=Eligibility(min_examples_per_class=50))
    best = outcome.best
    assert isinstance(best.model, ScaledRegressor) and best.total_scale == pytest.approx(best.model.scale)
    # the refit on ranks 2-4 learns their mean level, 1 / 1.15 ** (0, 1, 2) averaged = 0.875 of rank 2's: the scale
    # that restores rank 2's total (out of fold) is about 1 / 0.875 = 1.14 (measured 1.10: sampling noise)
    assert best.total_scale == pytest.approx(1 / np.mean(1.15 ** -np.arange(3)), abs=0.06)
    assert 0.8 <= best.metrics["predicted_over_realised_total"] <= 1.2
    X, y = to_matrix(outcome.split.valid, outcome.best.columns), outcome.split.valid["revenue_next_28d"].to_numpy()
    unscaled = predict_scores(uncalibrated(best.model), X, True).sum() / y.sum()
    assert unscaled < 0.85 and best.metrics["predicted_over_realised_total"] == pytest.approx(
        unscaled * best.total_scale)


def test_calibration_keeps_the_ranking_when_scores_leave_the_training_range():
    """A feature far outside its training range on the calibration rows (a young cutoff's near-constant column,
    scaled) gives decision values of 1e4: Platt's fit on them went flat and inverted the ranking (ROC-AUC 0.78 ->
    0.25 on the feedback loop's data). The calibrator reads the logit of the clipped probability instead."""
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    fit = pd.DataFrame({"x": rng.normal(0, 0.01, 400), "z": rng.normal(size=400)})
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")).fit(
        fit, (fit.z + rng.normal(size=400) > 1).astype(int))
    later = pd.DataFrame({"x": np.where(rng.random(600) < 0.2, 50.0, 0.0), "z": rng.normal(size=600)})
    y = (later.z + rng.normal(size=600) > 1).astype(int).to_numpy()
    assert np.abs(model.decision_function(later)).max() > 1_000
    calibrated, choice = calibrate(model, model.predict_proba(later[:300])[:, 1], y[:300])
    base = roc_auc_score(y[300:], model.predict_proba(later[300:])[:, 1])
    assert roc_auc_score(y[300:], calibrated.predict_proba(later[300:])[:, 1]) == pytest.approx(base, abs=0.01)
    assert choice.log_loss[choice.method] < choice.log_loss["none"]
