"""The model library against a real MLflow SQLite store in a temporary folder: gate, aliases, scoring."""

from __future__ import annotations

import datetime as dt

import duckdb
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from dagster_project.warehouse import replace_dates
from ml.backtest import Backtest, Fold
from ml.evaluate import top_decile
from ml.gate import apply, backtest_candidate, decide, register
from ml.models import FAMILIES, REGRESSION_FAMILIES
from ml.predict import score
from ml.registry import CHALLENGER, CHAMPION, Store, follow_artifact_root, load_by_alias, version_by_alias
from ml.targets import CHURN_PROBABILITY_7D, Eligibility
from ml.targets import PURCHASE_PROPENSITY_7D as TARGET
from ml.train import SKOPS_TRUSTED_TYPES, time_split, train_candidates


def _panel(n_per_cutoff=600, cutoffs=3, seed=0, intercept=-1.0) -> pd.DataFrame:
    """A training set whose label follows `cart_count_28d` strongly and `fav_count_28d` weakly, while the
    baseline's inputs (events, recency) are noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for rank in range(1, cutoffs + 1):
        strong, weak = rng.normal(size=n_per_cutoff), rng.normal(size=n_per_cutoff)
        logit = intercept + 2.5 * strong + 0.4 * weak
        frames.append(pd.DataFrame({
            "cutoff_rank": rank,
            "as_of_date": pd.Timestamp("2026-10-25") - pd.Timedelta(days=7 * (rank - 1)),
            "user_id": [f"u{i}" for i in range(n_per_cutoff)],
            "events_28d": rng.integers(1, 50, n_per_cutoff),
            "days_since_last_event": rng.integers(1, 28, n_per_cutoff),
            "cart_count_28d": strong,
            "fav_count_28d": weak,
            "purchase_next_7d": (rng.random(n_per_cutoff) < 1 / (1 + np.exp(-logit))).astype(int),
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


def _log(store: Store, model, frame: pd.DataFrame, columns: list[str]) -> str:
    experiment = store.experiment_id(TARGET.name)
    with mlflow.start_run(experiment_id=experiment) as run:
        X = frame[columns].astype(float)
        mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict_proba(X)[:, 1]),
                                 pyfunc_predict_fn="predict_proba", skops_trusted_types=SKOPS_TRUSTED_TYPES)
    return run.info.run_id


def _registered(store, frame, columns):
    split = time_split(frame, TARGET)
    model = LogisticRegression().fit(split.train[columns].astype(float), split.train[TARGET.label])
    run_id = _log(store, model, frame, columns)
    # a family name outside ml.models.FAMILIES: the backtest refits the bare estimator without sample weights
    return register(store, TARGET, run_id, {"as_of_date": "2026-11-01", "family": "plain_logistic"}), split.valid


def _gate(store, target, entry, frame, margin=0.0, problems=()):
    """The gate as the pipeline runs it: backtest (here on the newest closed cutoff), decide, apply."""
    tested = backtest_candidate(store, target, entry, frame, folds=1, min_examples_per_class=2,
                                max_training_rows=100_000)
    decision = decide(target, entry.version, tested, margin, list(problems))
    apply(store, decision)
    return decision


def _backtest(candidate: list[float], incumbent: list[float]) -> Backtest:
    return Backtest("pr_auc", "champion v1", [Fold(f"2026-10-{25 - 7 * i}", 100, 200, c, b, False)
                                              for i, (c, b) in enumerate(zip(candidate, incumbent))])


@pytest.mark.parametrize(("candidate", "incumbent", "margin", "promoted", "reason"), [
    ([0.40, 0.44], [0.45, 0.47], 0.0, False, "kept as challenger: does not beat champion v1 by the margin"),
    ([0.45, 0.47], [0.45, 0.47], 0.0, False, "kept as challenger"),            # a tie keeps the champion
    ([0.46, 0.48], [0.45, 0.47], 0.02, False, "kept as challenger"),           # wins by 0.01 < the margin
    ([0.50, 0.52], [0.45, 0.47], 0.02, True, "promoted: beats champion v1"),   # wins by 0.05 > the margin
])
def test_the_gate_decides_on_the_backtests_means_and_the_margin(candidate, incumbent, margin, promoted, reason):
    decision = decide(TARGET, "2", _backtest(candidate, incumbent), margin)
    assert decision.promoted is promoted and decision.alias == (CHAMPION if promoted else CHALLENGER)
    assert decision.reason.startswith(reason) and len(decision.folds) == 2
    assert decision.candidate_score == pytest.approx(np.mean(candidate))
    assert decision.incumbent_score == pytest.approx(np.mean(incumbent))


def test_a_winner_below_the_quality_floor_is_not_published():
    decision = decide(TARGET, "2", _backtest([0.9], [0.1]), 0.0, ["ROC-AUC 0.550 < 0.6"])
    assert not decision.promoted and decision.reason.startswith("not published: below the quality floor (ROC-AUC")


def _tokens(frame: pd.DataFrame, length: int = 5) -> pd.DataFrame:
    """Sequence tokens for each row of a panel: a few events whose types follow the row's cart count."""
    from ml.sequences import encode

    rows = [{"user_id": u, "as_of_date": d, "position": p, "item_id": f"i{p}", "category_id": "c",
             "event_type": "cart" if p <= carts else "view", "price_bucket": 3, "seconds_since_previous": 60 * p,
             "opens_session": p == length}
            for u, d, carts in zip(frame.user_id, frame.as_of_date, frame.cart_count_28d.clip(0, length).astype(int))
            for p in range(1, length + 1)]
    return encode(pd.DataFrame(rows), frame[["user_id", "as_of_date"]], length).set_axis(frame.index)


def test_every_family_saves_with_only_the_reviewed_skops_types():
    frame = _panel(200, 1)
    columns = ["events_28d", "days_since_last_event", "cart_count_28d", "fav_count_28d"]
    from ml.calibration import calibrate

    for family in FAMILIES.values():
        X = frame[columns].astype(float)
        if "sequence" in family.feature_sets:  # the GRU reads tokens too (and needs the deep extra)
            pytest.importorskip("torch", reason="the GRU family needs the deep extra (PyTorch)")
            X = pd.concat([X, _tokens(frame)], axis=1)
        model = family.build(list(X.columns), family.grid[0]).fit(X, frame[TARGET.label])
        p = model.predict_proba(X)[:, 1]
        for published in (model, *(calibrate(model, p, frame[TARGET.label], min_isotonic_positives=n)[0]
                                   for n in (10**9, 0))):  # sigmoid only, then isotonic allowed
            untrusted = sio.get_untrusted_types(data=sio.dumps(published))
            assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), family.name
    revenue = _revenue_panel(300, 1)
    for family in REGRESSION_FAMILIES.values():
        model = family.build(columns[:3] + ["revenue_90d"], family.grid[0])
        model.fit(revenue[columns[:3] + ["revenue_90d"]].astype(float), revenue["revenue_next_28d"])
        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
        assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), family.name


def test_gate_promotes_only_a_better_model(store):
    frame = _panel()
    weak, _ = _registered(store, frame, ["fav_count_28d"])
    first = _gate(store, TARGET, weak, frame, margin=0.0)
    assert first.promoted and first.incumbent == "baseline (recency/frequency)"  # the baseline's inputs are noise here
    strong, _ = _registered(store, frame, ["cart_count_28d", "fav_count_28d"])
    second = _gate(store, TARGET, strong, frame, margin=0.01)
    assert second.promoted and second.incumbent == f"champion v{weak.version}"
    worse, _ = _registered(store, frame, ["fav_count_28d"])
    third = _gate(store, TARGET, worse, frame, margin=0.0)
    assert not third.promoted and "does not beat champion v2" in third.reason
    assert version_by_alias(store, TARGET.name, CHAMPION).version == strong.version
    challenger = version_by_alias(store, TARGET.name, CHALLENGER)
    assert challenger.version == worse.version and challenger.tags["gate_promoted"] == "False"


def test_a_first_model_that_does_not_beat_the_baseline_is_not_champion(store):
    frame = _panel()
    frame["events_28d"] = frame["cart_count_28d"] * 10 + 100  # now the baseline sees the signal
    noise, _ = _registered(store, frame, ["days_since_last_event"])
    decision = _gate(store, TARGET, noise, frame, margin=0.0)
    assert not decision.promoted and decision.incumbent == "baseline (recency/frequency)"
    assert version_by_alias(store, TARGET.name, CHAMPION) is None


def test_a_moved_store_serves_its_champion_and_describes_itself_in_the_ui(tmp_path):
    """Issue 26: MLflow keeps absolute artifact URIs; a home moved (or copied, the original deleted) must still
    load ``@champion`` from its own folder. The experiment opens on its runs (a model-training experiment, not
    MLflow 3's GenAI layout), and the registry says what the model is and why this version holds its alias."""
    import shutil

    before = Store(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}", tmp_path / "home" / "artifacts")
    frame = _panel()
    entry, valid = _registered(before, frame, ["cart_count_28d"])
    _gate(before, TARGET, entry, frame)
    expected = load_by_alias(before, TARGET.name, CHAMPION)[0].predict_proba(valid[["cart_count_28d"]])[:, 1]
    client = before.activate()
    experiment = client.get_experiment_by_name(TARGET.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    described = client.get_registered_model(TARGET.name).description
    assert described.startswith(TARGET.description) and "Gate: a new version becomes @champion" in described
    assert client.get_model_version(TARGET.name, entry.version).description.startswith("champion: promoted: beats")

    shutil.move(tmp_path / "home", tmp_path / "moved")
    moved = Store(f"sqlite:///{tmp_path / 'moved' / 'mlflow.db'}", tmp_path / "moved" / "artifacts")
    loaded, champion = load_by_alias(moved, TARGET.name, CHAMPION)
    assert champion.version == entry.version
    np.testing.assert_allclose(loaded.predict_proba(valid[["cart_count_28d"]])[:, 1], expected)
    client = moved.activate()
    locations = [client.get_experiment_by_name(TARGET.name).artifact_location,
                 client.get_run(entry.run_id).info.artifact_uri,
                 client.get_model_version(TARGET.name, entry.version).source]
    assert all("/moved/" in uri or uri.startswith("models:/") for uri in locations), locations
    # a new run of the moved home logs into it, and nothing is rewritten twice
    assert follow_artifact_root(moved.tracking_uri, moved.artifact_root) is None
    again, _ = _registered(moved, frame, ["cart_count_28d"])
    assert client.get_run(again.run_id).info.artifact_uri.startswith((tmp_path / "moved").as_uri())


def test_training_logs_candidates_and_the_registered_model_predicts_the_same_after_loading(store):
    frame = _panel(600, 4)
    outcome = train_candidates(frame, TARGET, store, families=["logistic_regression", "gradient_boosting"],
                               eligibility=Eligibility(min_examples_per_class=20),
                               budget_seconds=20, tags={"as_of_date": "2026-11-01"})
    assert {c.family for c in outcome.candidates} == {"logistic_regression", "gradient_boosting"}
    assert outcome.best.metrics["roc_auc"] > 0.8 > outcome.baseline["roc_auc"]
    entry = register(store, TARGET, outcome.best.run_id, {"as_of_date": "2026-11-01", "family": outcome.best.family})
    _gate(store, TARGET, entry, frame)
    loaded, champion = load_by_alias(store, TARGET.name, CHAMPION)
    assert champion.version == entry.version
    X = outcome.split.valid[outcome.best.columns].astype(float)
    # what MLflow gives back is the calibrated pipeline, probability for probability
    from ml.calibration import CalibratedModel

    assert isinstance(loaded, CalibratedModel) and outcome.best.calibration.method in ("sigmoid", "isotonic")
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], outcome.best.model.predict_proba(X)[:, 1])
    client = store.activate()
    children = client.search_runs([store.experiment_id(TARGET.name)],
                                  f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id, "plots")}
    assert {"plots/roc.png", "plots/precision_recall.png", "plots/calibration.png", "plots/cumulative_gains.png",
            "plots/confusion_matrix.png", "plots/permutation_importance.png"} <= artifacts
    # training measured each candidate on the backtest's two newest folds exactly as the gate's refits would
    from ml.backtest import backtest

    for candidate in outcome.candidates:
        assert sorted(candidate.fold_scores) == ["2026-10-18", "2026-10-25"]
        refitted = backtest(frame, TARGET, candidate.model, candidate.family, folds=3, min_examples_per_class=2)
        measured = {f.as_of_date: f.candidate for f in refitted.folds}
        # the tuning cutoff's score is the refit's (fitted on the older cutoffs); the validation cutoff's is the
        # published model's own (refitted on ranks >= 2 behind its calibrator; isotonic steps can tie scores)
        assert candidate.fold_scores["2026-10-18"] == pytest.approx(measured["2026-10-18"], abs=1e-9)
        assert candidate.fold_scores["2026-10-25"] == candidate.metrics["pr_auc"]
        reused = backtest(frame, TARGET, candidate.model, candidate.family, folds=3, min_examples_per_class=2,
                          candidate_scores=candidate.fold_scores)
        assert [f.candidate_from_training for f in reused.folds] == [True, True, False]
        assert [f.candidate for f in reused.folds][1:] == pytest.approx([f.candidate for f in refitted.folds][1:],
                                                                        abs=1e-9)


def test_the_budget_bounds_the_whole_search_and_every_family_still_tries_its_first_configuration(store):
    from ml.models import FAMILIES

    frame = _panel()
    families = ["logistic_regression", "decision_tree"]
    spent = train_candidates(frame, TARGET, store, families=families, budget_seconds=0,
                             eligibility=Eligibility(min_examples_per_class=20))
    assert [(c.family, c.params, c.configurations_tried) for c in spent.candidates] == [
        (f, FAMILIES[f].grid[0], 1) for f in families]
    ample = train_candidates(frame, TARGET, store, families=families, budget_seconds=600,
                             eligibility=Eligibility(min_examples_per_class=20))
    assert [c.configurations_tried for c in ample.candidates] == [len(FAMILIES[f].grid) for f in families]
    logged = store.activate().get_run(ample.candidates[0].run_id).data.metrics
    assert logged["configurations_tried"] == len(FAMILIES["logistic_regression"].grid)


@pytest.mark.parametrize("signal_in", ["behaviour", "counts"])
def test_each_family_is_a_candidate_on_each_feature_set_and_validation_chooses(store, signal_in):
    """The behaviour set (counts plus intent, prices, habits...) is published only where it scores better: with the
    label driven by the open cart, the best candidate uses it; where the open cart is the same for everyone it is no
    feature at all (ml/features.varies), the behaviour set is the counts set, and only that one is searched."""
    rng = np.random.default_rng(3)
    frame = _panel(intercept=-1.5)
    if signal_in == "behaviour":  # the label follows the open cart; the counts lose their signal
        frame["open_cart_items"] = frame["cart_count_28d"]
        frame["cart_count_28d"] = rng.normal(size=len(frame))
        frame["fav_count_28d"] = rng.normal(size=len(frame))
    else:
        frame["open_cart_items"] = 0.0  # no information, and no variation: no feature
    families = ["logistic_regression", "gradient_boosting"]
    both = train_candidates(frame, TARGET, store, families=families, budget_seconds=60,
                            eligibility=Eligibility(min_examples_per_class=20))
    searched = ("counts", "behaviour") if signal_in == "behaviour" else ("counts",)
    assert [(c.family, c.feature_set, "open_cart_items" in c.columns, list(c.model.feature_names_in_) == c.columns)
            for c in both.candidates] == [(f, s, s == "behaviour", True) for f in families for s in searched]
    assert both.best.feature_set == signal_in
    if signal_in == "behaviour":  # every family ranks better with the set that holds the signal
        by = {(c.family, c.feature_set): c.metrics["pr_auc"] for c in both.candidates}
        assert all(by[f, "behaviour"] > by[f, "counts"] + 0.05 for f in families)
    logged = store.activate().get_run(both.best.run_id).data.params
    assert logged["feature_set"] == signal_in
    only = train_candidates(frame, TARGET, store, families=families, budget_seconds=60,
                            eligibility=Eligibility(min_examples_per_class=20), feature_set_names=["counts"])
    assert {c.feature_set for c in only.candidates} == {"counts"}
    assert all("open_cart_items" not in c.columns for c in only.candidates)


def test_feature_sets_split_the_documented_columns_of_the_feature_mart():
    import yaml

    from dagster_project.settings import DBT_PROJECT_DIR
    from ml.features import BEHAVIOUR_COLUMNS, feature_sets, is_behaviour

    spec = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "feat_user_daily.yml").read_text())
    documented = [c["name"] for c in spec["models"][0]["columns"]]
    assert BEHAVIOUR_COLUMNS <= set(documented)  # a renamed column would silently leave the behaviour set
    sets = feature_sets(documented)
    assert set(sets) == {"counts", "behaviour"} and set(sets["counts"]) < set(sets["behaviour"])
    assert "events_14d" in sets["behaviour"] and "events_28d" in sets["counts"] and is_behaviour("cart_count_14d")
    # data without any behaviour column has one set, not two copies of it
    assert list(feature_sets(["events_28d", "tenure_days"])) == ["counts"]
    with pytest.raises(ValueError, match="unknown feature sets: text"):
        feature_sets(documented, ["text"])


def test_scores_carry_the_version_and_rescoring_a_date_replaces_only_it(store, tmp_path):
    import duckdb

    frame = _panel()
    entry, valid = _registered(store, frame, ["cart_count_28d", "fav_count_28d"])
    _gate(store, TARGET, entry, frame, margin=0.0)
    model, champion = load_by_alias(store, TARGET.name, CHAMPION)
    day1 = score(valid.assign(as_of_date=pd.Timestamp("2026-11-01")), model, TARGET.name, champion.version)
    day2 = score(valid.assign(as_of_date=pd.Timestamp("2026-11-02")), model, TARGET.name, champion.version)
    assert set(day1.model_version) == {champion.version} and day1.probability.between(0, 1).all()
    assert day1.decile.value_counts().sort_index().tolist() == [60] * 10  # 600 users: even deciles, 1 = highest
    assert day1.loc[day1.decile == 1, "probability"].min() >= day1.loc[day1.decile == 2, "probability"].max()
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        replace_dates(con, "predictions", TARGET.name, day1)
        replace_dates(con, "predictions", TARGET.name, day2)
        replace_dates(con, "predictions", TARGET.name, day1)  # re-scoring day 1
        counts = con.execute("select as_of_date, count(*) from predictions.purchase_propensity_7d group by 1 order by 1").fetchall()
    assert counts == [(dt.date(2026, 11, 1), 600), (dt.date(2026, 11, 2), 600)]


def test_top_decile_lift_and_capture_by_hand():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2])
    lift, capture = top_decile(y, p)
    assert lift == pytest.approx(1 / 0.2) and capture == pytest.approx(0.5)


def test_too_few_examples_of_a_class_make_a_target_not_eligible(store):
    from ml.train import NotEligible

    frame = _panel(n_per_cutoff=300)
    positives = int(frame[frame.cutoff_rank > 1]["purchase_next_7d"].sum())
    with pytest.raises(NotEligible, match=rf"the training data hold {positives} positive and \d+ negative examples; "
                                          rf"at least 1000 of each are needed \({1000 - positives} more positive"):
        train_candidates(frame, TARGET, store, eligibility=Eligibility(min_examples_per_class=1000))
    assert time_split(frame, TARGET, min_examples_per_class=20).valid_as_of == "2026-10-25"


def _ninety_day_panel(cadence_days: int, cutoffs: int = 12) -> pd.DataFrame:
    return _panel(n_per_cutoff=300, cutoffs=cutoffs).assign(
        as_of_date=lambda f: pd.Timestamp("2026-10-25") - pd.to_timedelta(cadence_days * (f.cutoff_rank - 1), "D"),
        purchase_next_90d=lambda f: f.purchase_next_7d)


def test_a_judged_cutoff_trains_only_on_cutoffs_whose_labels_closed_by_it(monkeypatch):
    from ml.backtest import backtest
    from ml.targets import PURCHASE_PROPENSITY_90D as NINETY
    from ml.train import NotEligible

    # weekly cutoffs span 77 days: every older cutoff's 90-day label window overlaps the validation one's
    with pytest.raises(NotEligible, match=r"no training cutoff's 90-day label window closes by the validation cutoff "
                                          r"2026-10-25 \(the oldest, 2026-08-09, is 77 days before it\)"):
        time_split(_ninety_day_panel(7), NINETY)
    overlapping = time_split(_ninety_day_panel(7), NINETY, purge=False)  # the old, optimistic split
    assert len(overlapping.train_as_of) == 11 and not overlapping.purged and "optimistic" in overlapping.describe(90)
    # 4 weeks apart: ranks 2-4 (28, 56, 84 days before) are purged; 5-12 train, 5 tunes, 9-12 fit for it
    split = time_split(_ninety_day_panel(28), NINETY)
    assert split.valid_as_of == "2026-10-25" and split.train_as_of[-1] == "2026-07-05"  # 112 days before
    assert len(split.train_as_of) == 8 and split.tune_as_of == "2026-07-05" and not split.tune_is_holdout
    assert sorted(split.fit.cutoff_rank.unique()) == [9, 10, 11, 12] and split.purged
    # the gate's folds follow the same rule: the third fold (rank 3, 2026-08-30) trains on ranks 7-12 alone
    frame = _ninety_day_panel(28)
    columns = ["cart_count_28d", "fav_count_28d"]
    trained_rows = []

    def refit_seen(model, family, train, target):
        trained_rows.append(sorted(train.cutoff_rank.unique()))
        return LogisticRegression().fit(train[columns], train[target.label])

    monkeypatch.setattr("ml.backtest.refit", refit_seen)
    model = LogisticRegression().fit(frame[columns], frame.purchase_next_90d)
    backtest(frame, NINETY, model, "logistic_regression", incumbent_model=model, folds=3, min_examples_per_class=20)
    assert trained_rows == [list(range(5, 13)), list(range(6, 13)), list(range(7, 13))]


def test_the_7_day_targets_lose_no_weekly_cutoff_to_the_purge_and_one_cutoff_tunes_on_held_out_users():
    split = time_split(_panel(cutoffs=4), TARGET)
    assert split.train_as_of == ["2026-10-04", "2026-10-11", "2026-10-18"] and split.tune_as_of == "2026-10-18"
    assert sorted(split.fit.cutoff_rank.unique()) == [3, 4]
    two = time_split(_panel(cutoffs=2), TARGET)
    assert two.tune_is_holdout and set(two.fit.user_id).isdisjoint(two.tune.user_id)


def test_the_quality_floor_keeps_a_weak_candidate_from_being_published(store):
    weak_metrics = {"roc_auc": 0.58, "pr_auc": 0.30, "base_rate": 0.29}
    problems = Eligibility(min_roc_auc=0.6, min_pr_auc_skill=0.05).quality_problems(weak_metrics)
    assert problems == ["ROC-AUC 0.580 < 0.6", "PR-AUC 0.300 is 0.014 of the way from the base rate 0.290 to 1 (< 0.05)"]
    # a rare outcome with a small PR-AUC far above its base rate passes (GA: 0.2 % buyers)
    assert Eligibility().quality_problems({"roc_auc": 0.87, "pr_auc": 0.069, "base_rate": 0.0024}) == []
    frame = _panel()
    columns = ["cart_count_28d", "fav_count_28d", "events_28d", "days_since_last_event"]
    entry, _ = _registered(store, frame, columns)
    decision = _gate(store, TARGET, entry, frame, problems=problems)
    assert not decision.promoted and decision.reason.startswith("not published: below the quality floor (ROC-AUC")
    assert version_by_alias(store, TARGET.name, CHAMPION) is None


def test_churn_trains_and_scores_only_users_active_in_the_last_7_days():
    frame = _panel().assign(events_7d=lambda f: np.arange(len(f)) % 3, churn_next_7d=lambda f: f.purchase_next_7d)
    frame.loc[frame.events_7d == 0, "churn_next_7d"] = np.nan  # the label is NULL for inactive users
    selected = CHURN_PROBABILITY_7D.select(frame)
    assert len(selected) == (frame.events_7d > 0).sum() and selected.churn_next_7d.notna().all()
    split = time_split(frame, CHURN_PROBABILITY_7D)
    assert (split.train.events_7d > 0).all() and (split.valid.events_7d > 0).all()
    # the naive churn ranking puts the least active first
    users = pd.DataFrame({"events_28d": [40, 5, 1], "days_since_last_event": [1, 10, 27]})
    assert list(np.argsort(-CHURN_PROBABILITY_7D.naive_scores(users))) == [2, 1, 0]


def _revenue_panel(n_per_cutoff=800, cutoffs=3, seed=1) -> pd.DataFrame:
    """Who buys follows `cart_count_28d`; how much follows `revenue_90d` (the naive run rate sees only the latter)."""
    rng = np.random.default_rng(seed)
    frames = []
    for rank in range(1, cutoffs + 1):
        carts, past = rng.normal(size=n_per_cutoff), rng.gamma(2.0, 50.0, n_per_cutoff)
        buys = rng.random(n_per_cutoff) < 1 / (1 + np.exp(-(-1.5 + 2.0 * carts)))
        amount = past * rng.lognormal(0, 0.3, n_per_cutoff)
        frames.append(pd.DataFrame({
            # 28 days apart: each cutoff's 28-day label closes by the next one's (ml.train purges the overlapping)
            "cutoff_rank": rank, "as_of_date": pd.Timestamp("2026-10-04") - pd.Timedelta(days=28 * (rank - 1)),
            "user_id": [f"u{i}" for i in range(n_per_cutoff)], "events_28d": rng.integers(1, 50, n_per_cutoff),
            "days_since_last_event": rng.integers(1, 28, n_per_cutoff), "cart_count_28d": carts,
            "revenue_90d": past, "revenue_next_28d": np.where(buys, amount, 0.0),
        }))
    return pd.concat(frames, ignore_index=True)


def test_normalized_gini_and_decile_calibration_match_a_hand_computation():
    from ml.evaluate import decile_table, normalized_gini, regression_metrics

    y = np.array([0.0, 0.0, 10.0, 0.0, 5.0])
    assert normalized_gini(y, y) == pytest.approx(1.0)
    assert normalized_gini(y, np.array([0.1, 0.2, 0.9, 0.3, 0.5])) == pytest.approx(1.0)  # the same order
    # reversed order: the capture curve of [0, 0, 0, 5, 10] vs the perfect [10, 5, 0, 0, 0]
    # gini = mean(cumsum/total) - (n+1)/2n: perfect (10/15+1+1+1+1)/5 - 0.6 = 0.3333, reversed (0+0+0+1/3+1)/5 - 0.6
    assert normalized_gini(y, -np.array([0.1, 0.2, 0.9, 0.3, 0.5])) == pytest.approx((4 / 15 - 0.6) / (14 / 15 - 0.6))
    table = decile_table(np.arange(20.0), np.arange(20.0))
    assert list(table.users) == [2] * 10 and table.mean_actual.iloc[0] == 18.5 and table.mean_predicted.iloc[-1] == 0.5
    metrics = regression_metrics(np.array([0.0, 10.0]), np.array([1.0, 9.0]))
    assert metrics["mae"] == 1.0 and metrics["decile_calibration_error"] == pytest.approx(0.2)


def test_the_revenue_hurdle_model_beats_the_run_rate_and_reloads_identically(store):
    from ml.models import REGRESSION_FAMILIES
    from ml.targets import PREDICTED_REVENUE_28D as REVENUE

    frame = _revenue_panel()
    outcome = train_candidates(frame, REVENUE, store, budget_seconds=20, eligibility=Eligibility(min_examples_per_class=50),
                               families=["logistic_regression", "hurdle_gradient_boosting"])
    assert [c.family for c in outcome.candidates] == ["hurdle_gradient_boosting"]  # only the named regression family
    best = outcome.best.metrics
    assert best["normalized_gini"] > outcome.baseline["normalized_gini"] + 0.1 and best["spearman"] > 0.3
    assert outcome.quality_problems == []
    entry = register(store, REVENUE, outcome.best.run_id, {"as_of_date": "2026-10-04", "family": outcome.best.family})
    decision = _gate(store, REVENUE, entry, frame)
    assert decision.promoted and decision.incumbent == "baseline (90-day revenue run rate)" and decision.metric == "normalized_gini"
    model, champion = load_by_alias(store, REVENUE.name, CHAMPION)
    scored = score(outcome.split.valid, model, REVENUE.name, champion.version, score_column="predicted_revenue",
                   regression=True)
    expected = outcome.best.model.predict(outcome.split.valid[list(model.feature_names_in_)].astype(float))
    np.testing.assert_allclose(scored.predicted_revenue.to_numpy(), expected)
    assert (scored.predicted_revenue >= 0).all() and set(scored.decile) == set(range(1, 11))
    assert set(REGRESSION_FAMILIES) == {"hurdle_linear", "hurdle_gradient_boosting"}


def test_reason_codes_name_the_features_that_raise_each_score():
    from sklearn.linear_model import LinearRegression

    from ml.explain import global_importance, reason_codes

    X = pd.DataFrame({"carts": [0.0, 5.0, 1.0, 9.0, 2.0], "views": [3.0, 1.0, 8.0, 2.0, 2.0],
                      "noise": [1.0, 1.0, 1.0, 1.0, 1.0]})
    model = LinearRegression().fit(X, 2.0 * X.carts + 0.5 * X.views)  # exact: score = 2 carts + 0.5 views
    reasons = reason_codes(model, X, regression=True)
    # medians: carts 2, views 2; user 1 (carts 5, views 1): carts raise the score by 2 x 3 = 6, views lower it
    assert reasons.loc[1, ["reason_1", "reason_1_value"]].tolist() == ["carts", 5.0]
    assert reasons.loc[1, "reason_1_effect"] == pytest.approx(6.0) and reasons.loc[1, "reason_2"] is None
    # user 2 (carts 1, views 8): only views raise it, by 0.5 x 6 = 3
    assert reasons.loc[2, ["reason_1", "reason_1_effect"]].tolist() == ["views", pytest.approx(3.0)]
    # user 3: views at the median and a constant feature have no effect: never reasons
    assert reasons.loc[3, "reason_1"] == "carts" and reasons.loc[3, "reason_2"] is None
    importance = global_importance(model, X, regression=True)
    assert importance.index[0] == "carts" and importance["noise"] == 0.0


def test_scored_rows_carry_reason_codes_from_the_model(store):
    frame = _panel()
    columns = ["cart_count_28d", "fav_count_28d", "events_28d", "days_since_last_event"]
    entry, valid = _registered(store, frame, columns)
    _gate(store, TARGET, entry, frame)
    model, champion = load_by_alias(store, TARGET.name, CHAMPION)
    scored = score(valid, model, TARGET.name, champion.version)
    top = scored.sort_values("probability", ascending=False).head(20)
    # the label follows cart_count_28d: it is the first reason of the highest scores
    assert (top.reason_1 == "cart_count_28d").mean() >= 0.9
    assert (top.reason_1_effect > 0).all() and top.reason_1_value.notna().all()


def test_reason_codes_come_from_the_most_important_features_and_not_from_the_row_order():
    from sklearn.linear_model import LinearRegression

    from ml.explain import REASON_CANDIDATES, reason_codes

    rng = np.random.default_rng(0)
    n_features = REASON_CANDIDATES + 8
    X = pd.DataFrame(rng.normal(size=(3000, n_features)), columns=[f"f{j:02d}" for j in range(n_features)])
    weights = np.r_[np.linspace(5.0, 1.0, REASON_CANDIDATES), np.full(8, 0.01)]   # the last 8 barely matter
    model = LinearRegression().fit(X, X.to_numpy() @ weights)
    reasons = reason_codes(model, X, regression=True)
    named = set(reasons[["reason_1", "reason_2", "reason_3"]].stack().dropna())
    assert named <= {f"f{j:02d}" for j in range(REASON_CANDIDATES)} and len(named) >= 5
    # the exact one-feature effect of the strongest reason, by hand: weight x (value - median)
    row = reasons.iloc[0]
    feature = row.reason_1
    expected = weights[int(feature[1:])] * (X[feature].iloc[0] - X[feature].median())
    assert row.reason_1_effect == pytest.approx(expected, rel=1e-6)
    # scoring sorts each date's rows by user before the importance sample: the order they arrive in does not matter
    frame = X.assign(user_id=[f"u{i:04d}" for i in range(len(X))], as_of_date=pd.Timestamp("2026-10-01"))
    forward = score(frame, model, "m", "1", regression=True, score_column="predicted").set_index("user_id")
    backward = score(frame.iloc[::-1], model, "m", "1", regression=True,
                     score_column="predicted").set_index("user_id").loc[forward.index]
    pd.testing.assert_frame_equal(forward.drop(columns="scored_at"), backward.drop(columns="scored_at"))


def test_stacked_effects_equal_one_prediction_per_feature_and_row_whatever_the_batch(monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ml import explain

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.poisson(0.4, size=(400, 6)).astype(float), columns=[f"c{j}" for j in range(6)])
    X.loc[::7, "c2"] = np.nan
    y = (X.c0 + X.c2.fillna(2) + rng.normal(0, 0.5, 400) > 1).astype(int)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    reference = X.median()   # NaN kept: the model handles it, and a NaN row differs from the median
    by_hand = pd.DataFrame({c: model.predict_proba(X)[:, 1]
                            - model.predict_proba(X.assign(**{c: reference[c]}))[:, 1] for c in X.columns})
    got = explain.effects(model, X, regression=False, reference=reference)
    np.testing.assert_allclose(got.to_numpy(), by_hand.to_numpy(), atol=1e-12)
    assert (got.to_numpy() != 0).any()
    # batches smaller than one feature's moved rows: split, stacked and put back in the same places
    monkeypatch.setattr(explain, "MAX_STACKED_ROWS", 37)
    np.testing.assert_allclose(explain.effects(model, X, regression=False, reference=reference).to_numpy(),
                               by_hand.to_numpy(), atol=1e-12)


def test_permutation_drops_stacked_equal_one_prediction_per_shuffle():
    """The shuffled copies predicted together give each column's drop that one call per shuffle gives (the same
    permutations, drawn in the same order), in fewer calls; the column the label depends on drops the most."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ml.evaluate import permutation_drops

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(500, 5)), columns=[f"c{j}" for j in range(5)])
    y = (X.c1 + rng.normal(0, 0.5, 500) > 0.5).astype(int).to_numpy()
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)

    class Counted:
        calls = 0

        def predict_proba(self, frame):
            Counted.calls += 1
            return model.predict_proba(frame)

    one_at_a_time = permutation_drops(Counted(), X, y, rows_per_call=1)
    calls_alone, Counted.calls = Counted.calls, 0
    stacked = permutation_drops(Counted(), X, y, rows_per_call=2_000)  # four shuffles a call
    assert calls_alone == 1 + 5 * 3 and Counted.calls == 1 + 4
    pd.testing.assert_series_equal(stacked, one_at_a_time)
    assert stacked.idxmax() == "c1" and stacked["c1"] > 0.1


@pytest.mark.parametrize("calibration", [None, "sigmoid", "isotonic"])
@pytest.mark.parametrize("family", ["logistic_regression", "linear_svm", "hurdle_linear", "neural_network",
                                    "decision_tree", "random_forest", "gradient_boosting", "hurdle_gradient_boosting",
                                    "pca_logistic"])
def test_every_familys_effects_equal_one_prediction_per_feature_and_row(family, calibration):
    """The linear families and the network are explained after their column-by-column transform and first linear
    map; every family's effects must equal the counterfactual predictions of the whole pipeline, NaN and missing
    indicators included. Trees, boosting and a pipeline that mixes columns (PCA) predict the changed rows whole."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from ml import explain
    from ml.features import scaled_preprocessor
    from ml.models import FAMILIES, REGRESSION_FAMILIES

    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.poisson(0.6, size=(600, 5)).astype(float), columns=[f"c{j}" for j in range(5)])
    X.loc[::7, "c2"] = np.nan
    y = ((X.c0 + X.c2.fillna(2) + rng.normal(0, 0.5, 600)) > 1).astype(int)
    regression = family.startswith("hurdle")
    if family == "pca_logistic":
        model = Pipeline([("prep", Pipeline([("scaled", scaled_preprocessor(list(X.columns))), ("pca", PCA(3))])),
                          ("model", LogisticRegression())])
    else:
        chosen = (REGRESSION_FAMILIES if regression else FAMILIES)[family]
        model = chosen.build(list(X.columns), chosen.grid[0])
    target = np.where(y == 1, np.exp(rng.normal(3, 1, 600)) * (1 + X.c1.to_numpy()), 0.0) if regression else y
    model.fit(X, target)
    if calibration and regression:  # amounts are scaled to add up instead (ml/calibration.scale_total)
        from ml.calibration import ScaledRegressor

        model = ScaledRegressor(model, 1.7 if calibration == "sigmoid" else 0.6)
    elif calibration:  # as ml/calibration.py publishes them: a calibrator over the logit of the pipeline's probability
        from sklearn.isotonic import IsotonicRegression

        from ml.calibration import CalibratedModel, logit_scores

        scores = logit_scores(model, X[::2])
        calibrator = (LogisticRegression(C=np.inf).fit(scores.reshape(-1, 1), y[::2]) if calibration == "sigmoid"
                      else IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, y[::2]))
        model = CalibratedModel(model, calibrator, calibration)
    takes_shortcut = family in ("logistic_regression", "linear_svm", "hurdle_linear", "neural_network")
    assert (explain._TransformedForm.of(model) is not None) == takes_shortcut
    reference = X.median()
    predict = (lambda frame: model.predict(frame)) if regression else (lambda frame: model.predict_proba(frame)[:, 1])
    by_hand = pd.DataFrame({c: predict(X) - predict(X.assign(**{c: reference[c]})) for c in X.columns})
    got = explain.effects(model, X, regression=regression, reference=reference)
    np.testing.assert_allclose(got.to_numpy(), by_hand.to_numpy(), atol=1e-9 * max(1.0, np.abs(by_hand).max().max()))
    assert (got.c0 > 0).mean() > 0.1   # a feature the target follows moves many scores


def test_training_reads_a_bounded_hash_sample_of_each_cutoff_with_the_same_users():
    from dagster_project.defs.training import training_sql

    con = duckdb.connect()
    con.execute("create schema marts; create schema predictions")
    con.execute("""create table marts.fct_training_set as
        select 'u' || u as user_id, cast('2026-10-01' as date) + cast(7 * k as integer) as as_of_date, k as cutoff_rank,
               (u % 5 = 0)::int as purchase_next_7d
        from range(2000) as a(u), range(3) as b(k) where k < 2 or u < 300""")
    con.execute("create table predictions.clv (user_id varchar, as_of_date date, clv_p_alive double, "
                "model_name varchar, model_version varchar, scored_at timestamp)")
    sampled = con.execute(training_sql(500)).df()
    per_cutoff = sampled.groupby("cutoff_rank").size()
    assert per_cutoff[2] == 300                        # a cutoff within the bound is read whole
    assert 400 <= per_cutoff[0] <= 600 and 400 <= per_cutoff[1] <= 600
    first, second = (set(sampled.user_id[sampled.cutoff_rank == k]) for k in (0, 1))
    assert first == second                             # the same users at every cutoff
    assert 0.15 < sampled.purchase_next_7d.mean() < 0.25   # the label rate is kept (0.2 in the panel)
    assert "clv_p_alive" in sampled.columns
    assert len(con.execute(training_sql(5000)).df()) == 4300   # everything when the bound is above every cutoff


def test_the_gru_is_searched_on_the_sequence_set_alone_and_loads_back_from_mlflow(store):
    """The GRU family enters the same search: only on the sequence set (the tokens beside the aggregated features),
    early stopping on the tuning cutoff choosing the refit's epochs, calibrated, logged with skops and loaded
    back; its reasons name event types. Without tokens in the frame it is left out, with the reason."""
    pytest.importorskip("torch", reason="the GRU family needs the deep extra (PyTorch)")
    import mlflow

    from ml.explain import reason_codes
    from ml.features import to_matrix

    panel = _panel(300, 4)
    frame = pd.concat([panel, _tokens(panel)], axis=1)
    outcome = train_candidates(frame, TARGET, store, families=["logistic_regression", "gru"], budget_seconds=600,
                               eligibility=Eligibility(min_examples_per_class=20))
    searched = sorted((c.family, c.feature_set) for c in outcome.candidates)
    assert searched == [("gru", "sequence"), ("logistic_regression", "counts")]
    gru = next(c for c in outcome.candidates if c.family == "gru")
    # the published refit trained the epochs early stopping chose on the tuning cutoff, without an eval set
    network = gru.model.model[-1]
    assert network.epochs == gru.params["epochs"] == network.best_epochs_ and network.history_ == []
    assert gru.calibration is not None
    assert gru.metrics["roc_auc"] > 0.75  # the label follows cart_count_28d (a feature, and the carts in the tokens)
    assert any(c.startswith("seq_event_p") for c in gru.columns)
    store.activate()
    loaded = mlflow.sklearn.load_model(f"runs:/{gru.run_id}/model")
    X = to_matrix(outcome.split.valid, gru.columns).head(200)
    np.testing.assert_allclose(loaded.predict_proba(X), gru.model.predict_proba(X), rtol=1e-6)
    reasons = reason_codes(loaded, X, regression=False)
    named = set(reasons[["reason_1", "reason_2", "reason_3"]].stack().dropna())
    assert named and not any(n.startswith("seq_") for n in named)  # tokens are explained by event type
    assert named & {"cart_count_28d", "recent_cart_events"}

    no_tokens = train_candidates(panel, TARGET, store, families=["logistic_regression", "gru"], budget_seconds=60,
                                 eligibility=Eligibility(min_examples_per_class=20))
    assert [c.family for c in no_tokens.candidates] == ["logistic_regression"]
    run = store.activate().get_run(no_tokens.parent_run_id)
    assert "no sequence tokens" in run.data.tags["left_out.gru"]


def test_a_column_constant_where_models_are_fitted_is_no_feature():
    """BG/NBD's P(alive) within 1e-5 of 1 at every training cutoff, then far below it at scoring, was blown up by the
    scaler to 10^5 standard deviations (the Amazon reviews: mean probability 0.90 against a base rate of 0.32)."""
    from ml.features import varies

    assert not varies(pd.Series([1.0, 0.99999, 1.0, None]))          # a spread of 1e-5 of its size
    assert not varies(pd.Series([0.0, 0.0])) and not varies(pd.Series([None, None], dtype=float))
    assert varies(pd.Series([0.0, 1.0])) and varies(pd.Series([1000.0, 1000.5]))
