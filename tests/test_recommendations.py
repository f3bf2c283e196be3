"""The recommendations target's protocol (ml/recommendations.py) on hand-made data: the truth, the folds, the
backtest and the choice."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ml.recommendations import (
    CANDIDATES,
    NAIVE,
    Fold,
    backtest,
    backtest_within_budget,
    best,
    snapshot_cutoffs,
    summarise,
    truth_after,
)
from tests.test_recommend import _communities


def test_the_truth_is_what_users_with_history_bought_in_the_horizon_after_the_cutoff():
    cutoff = dt.date(2026, 3, 1)
    item_days = pd.DataFrame([
        ("known", "a", "2026-02-28", 1),   # before the cutoff
        ("known", "b", "2026-03-01", 1),   # on it: the first day of the horizon
        ("known", "b", "2026-03-05", 2),   # the same item again: one truth row
        ("known", "c", "2026-03-08", 1),   # the horizon's end is open
        ("known", "d", "2026-03-03", 0),   # viewed, not bought
        ("stranger", "a", "2026-03-02", 1),  # no interactions before the cutoff
    ], columns=["user_id", "item_id", "activity_date", "n_purchase"])
    interactions = pd.DataFrame({"user_id": ["known"], "item_id": ["a"]})
    truth = truth_after(item_days, cutoff, 7, interactions)
    assert truth.values.tolist() == [["known", "b"]]
    assert snapshot_cutoffs(cutoff, 14, 2) == [dt.date(2026, 2, 15), dt.date(2026, 2, 1)]


def test_the_backtest_measures_each_candidate_on_each_fold_and_the_choice_prefers_the_naive_on_a_tie():
    interactions = _communities()
    # each user next buys an item of their own group they have not bought: history cannot hit, EASE can
    bought = interactions.groupby("user_id").item_id.apply(set)
    truth = pd.DataFrame([(user, next(f"{user[0]}{i}" for i in range(1, 7) if f"{user[0]}{i}" not in items))
                          for user, items in bought.items()], columns=["user_id", "item_id"])
    folds = [Fold(dt.date(2026, 3, 1), interactions, truth), Fold(dt.date(2026, 3, 8), interactions, truth)]
    results = backtest(["popularity", "history_bought", "ease"], folds)
    assert len(results) == 6 and set(results.cutoff) == {dt.date(2026, 3, 1), dt.date(2026, 3, 8)}
    table = summarise(results).set_index("candidate")
    assert table.loc["history_bought", "recall_at_10"] == 0.0 and table.loc["history_bought", "new_item_recall_at_10"] == 0.0
    assert table.loc["ease", "recall_at_10"] == pytest.approx(1.0) and table.loc["ease", "naive"] == False
    assert best(results) == "ease" and best(results, among=NAIVE) == "popularity"
    # a tie goes to the naive candidate: a learned model must win to be chosen
    tied = results.replace({"candidate": {"ease": "item_knn"}})
    tied.loc[tied.candidate == "item_knn", "recall_at_10"] = tied.loc[tied.candidate == "popularity", "recall_at_10"].to_numpy()
    assert best(tied) == "popularity"
    assert set(NAIVE) <= set(CANDIDATES)


def test_the_budget_leaves_out_whole_candidates_but_never_the_protected_ones():
    interactions = _communities()
    truth = interactions.groupby("user_id").head(1)[["user_id", "item_id"]]
    folds = [Fold(dt.date(2026, 3, 1), interactions, truth), Fold(dt.date(2026, 3, 8), interactions, truth)]
    names = ["ease", "popularity", "history_bought", "item_knn"]
    spent, skipped = backtest_within_budget(names, folds, 0, protected=("popularity", "history_bought"))
    # nothing fits in no time: the protected ones are measured on every fold all the same, the others not at all
    assert sorted(spent.candidate.unique()) == ["history_bought", "popularity"] and len(spent) == 4
    assert sorted(skipped) == ["ease", "item_knn"] and "training budget of 0 s" in skipped["ease"]
    # a reranker whose generators were left out would fit each of them per snapshot: it does not start either
    spent, skipped = backtest_within_budget([*names, "reranker"], folds, 0, protected=("popularity", "history_bought"))
    assert "reranker" not in set(spent.candidate) and "candidates it learns from were left out" in skipped["reranker"]
    # the reranker projects its first fold from its generators' (each fitted per snapshot and on the fold): here
    # far beyond a budget the others fit in, so it does not start
    slow = {"history_engaged": 1.0, "popularity_in_categories": 1.0, "item_knn": 1.0, "als": 1.0, "ease": 60.0}
    assert CANDIDATES["reranker"]().projected_fold_seconds(slow) == pytest.approx(64 * 4)
    assert CANDIDATES["reranker"]().projected_fold_seconds({"als": 1.0}) is None
    ample, none_skipped = backtest_within_budget(names, folds, 600, protected=("popularity",))
    assert none_skipped == {} and len(ample) == 8 and set(ample.candidate) == set(names)


def test_the_labelled_snapshots_are_read_only_for_a_candidate_that_learns_from_them():
    from ml.recommendations import LazySnapshots

    interactions = _communities()
    truth = interactions.groupby("user_id").head(1)[["user_id", "item_id"]]
    reads = []

    def history(found):
        return LazySnapshots(lambda: reads.append(len(found)) or found)

    folds = [Fold(dt.date(2026, 3, 1), interactions, truth, history([])),
             Fold(dt.date(2026, 3, 8), interactions, truth, history([]))]
    spent, skipped = backtest_within_budget(["popularity", "history_bought"], folds, None)
    assert reads == [] and set(spent.candidate) == {"popularity", "history_bought"}
    # the reranker asks for them: a fold without one leaves it out, with the reason
    spent, skipped = backtest_within_budget(["popularity", "reranker"], folds, None)
    assert reads and "history is too short" in skipped["reranker"] and set(spent.candidate) == {"popularity"}


def test_a_learned_candidate_is_projected_from_the_naive_ones_before_its_first_fold(monkeypatch):
    """A family far costlier than the naive candidates (BPR at scale) does not start a fold the budget cannot hold:
    its first fold is projected from theirs."""
    import ml.recommendations

    interactions = _communities()
    truth = interactions.groupby("user_id").head(1)[["user_id", "item_id"]]
    folds = [Fold(dt.date(2026, 3, 1), interactions, truth), Fold(dt.date(2026, 3, 8), interactions, truth)]
    monkeypatch.setitem(ml.recommendations.COST_AGAINST_NAIVE, "item_knn", 1e6)
    spent, skipped = backtest_within_budget(["popularity", "item_knn", "ease"], folds, 600,
                                            protected=("popularity",))
    assert list(skipped) == ["item_knn"] and "per fold expected" in skipped["item_knn"]
    assert set(spent.candidate) == {"popularity", "ease"} and len(spent) == 4


def test_scoring_in_batches_of_users_serves_the_same_lists_as_in_one(tmp_path):
    from dagster_project.defs.recommendations import score_lists
    from ml.recommendations import fit

    interactions = _communities()
    model = fit("history_bought_then_ease", interactions)
    population = pd.DataFrame({"user_id": [*interactions.user_id.unique(), "newcomer"]})
    day = dt.date(2026, 3, 1)
    whole = score_lists(model, "7", population, interactions, 5, day, users_per_batch=10_000)
    batched = score_lists(model, "7", population, interactions, 5, day, users_per_batch=2)
    for new_only in (False, True):
        drop = ["scored_at"]
        pd.testing.assert_frame_equal(whole[new_only].drop(columns=drop), batched[new_only].drop(columns=drop))
        served = whole[new_only]
        assert set(served.user_id) == set(population.user_id)
        assert (served.groupby("user_id")["rank"].max() == 5).all()
        assert set(served.loc[served.user_id == "newcomer", "model_version"]) == {"fallback"}
    assert (whole[False].model_version == "7").any()


def test_training_logs_every_candidate_registers_the_best_and_the_gate_compares_configurations(tmp_path):
    """A real MLflow store: one nested run per candidate, the best and the best naive fitted and logged as models;
    the registered best loads back as a pyfunc that serves fresh interactions; the gate's decision rests on the
    same cutoffs for both configurations and keeps the incumbent on a tie."""
    import mlflow

    from ml.recommendations import MODEL_NAME, decide, fold_scores, register, train_candidates
    from ml.registry import Store

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    interactions = _communities()
    bought = interactions.groupby("user_id").item_id.apply(set)
    truth = pd.DataFrame([(user, next(f"{user[0]}{i}" for i in range(1, 7) if f"{user[0]}{i}" not in items))
                          for user, items in bought.items()], columns=["user_id", "item_id"])
    folds = [Fold(dt.date(2026, 3, 8), interactions, truth), Fold(dt.date(2026, 3, 1), interactions, truth)]
    outcome = train_candidates(folds, interactions, [], store, names=["popularity", "history_bought", "ease"],
                               tags={"as_of_date": "2026-03-15"}, progress=lambda _: None)
    assert (outcome.best, outcome.best_naive) == ("ease", "popularity")
    assert set(outcome.model_runs) == {"ease", "popularity"}
    runs = mlflow.search_runs(experiment_ids=[store.experiment_id(MODEL_NAME)])
    assert len(runs) == 4  # the parent and one per candidate
    child = runs[runs["tags.candidate"] == "ease"].iloc[0]
    assert child["metrics.validation_recall_at_10"] == pytest.approx(1.0)
    assert child["metrics.backtest_new_item_recall_at_10"] == pytest.approx(1.0)
    client = mlflow.tracking.MlflowClient()
    plots = {a.path for a in client.list_artifacts(child["run_id"], "plots")}
    parent = runs[runs["tags.candidate"].isna()].iloc[0]
    assert plots == {"plots/folds.png"} and {a.path for a in client.list_artifacts(parent["run_id"], "plots")} == {
        "plots/candidates.png"}

    version = register(store, outcome.model_runs["ease"], "ease", {"as_of_date": "2026-03-15"})
    served = mlflow.pyfunc.load_model(version.uri).predict(
        interactions[interactions.user_id.isin(["a0", "b0"])], params={"k": 2, "new_only": True})
    assert set(served.user_id) == {"a0", "b0"} and list(served.groupby("user_id").size()) == [2, 2]
    assert all(item[0] == user[0] for user, item in zip(served.user_id, served.item_id))

    scores = fold_scores(outcome.results)
    first = decide("ease", version.version, "popularity", "the best naive candidate", scores, margin=0.0)
    assert first.promoted and first.alias == "champion" and len(first.folds) == 2
    assert first.candidate_score == pytest.approx(1.0) and first.incumbent_score < 0.9
    assert not decide("ease", "2", "ease", "champion v1", scores, 0.0).promoted  # the same configuration
    assert not decide("popularity", "3", "ease", "champion v1", scores, 0.0).promoted
    assert not decide("ease", "4", "popularity", "champion v1", scores, margin=0.9).promoted  # within the margin


def test_the_protocol_dates_of_a_training_run():
    from ml.recommendations import protocol_dates

    dates = protocol_dates(dt.date(2026, 6, 1), horizon_days=14, cadence_days=7, folds=2)
    assert dates.folds == [dt.date(2026, 5, 18), dt.date(2026, 5, 11)]
    assert dates.snapshots[dt.date(2026, 6, 1)] == [dt.date(2026, 5, 18), dt.date(2026, 5, 4), dt.date(2026, 4, 20)]
    assert dates.snapshots[dt.date(2026, 5, 11)] == [dt.date(2026, 4, 27), dt.date(2026, 4, 13), dt.date(2026, 3, 30)]
    assert dates.all[0] == dt.date(2026, 3, 30) and dates.all[-1] == dt.date(2026, 6, 1) and len(dates.all) == 9


def test_realised_lists_score_what_users_bought_once_the_horizon_closed_and_a_drop_asks_for_a_retrain():
    from ml.recommendations import realised_lists, recall_drop
    from ml.registry import RegisteredModel

    day = dt.date(2026, 3, 1)
    lists = pd.DataFrame([
        ("next_items", "u", day, 1, "a", "3"), ("next_items", "u", day, 2, "b", "3"),
        ("next_items", "w", day, 1, "a", "3"),
        ("new_items", "u", day, 1, "b", "3"),
        ("next_items", "u", dt.date(2026, 3, 5), 1, "a", "3"),  # its horizon has not closed yet
    ], columns=["list", "user_id", "as_of_date", "rank", "item_id", "model_version"])
    purchases = pd.DataFrame([("u", "a", "2026-02-01"), ("u", "a", "2026-03-02"), ("u", "c", "2026-03-03"),
                              ("w", "z", "2026-03-20")],  # after the 7-day horizon
                             columns=["user_id", "item_id", "activity_date"])
    table = realised_lists(lists, purchases, 7, closed_by=dt.date(2026, 3, 9)).set_index("target")
    assert len(table) == 2 and table.loc["next_items", "served"] == 2 and table.loc["next_items", "users"] == 1
    assert table.loc["next_items", "recall_at_10"] == pytest.approx(0.5)  # u bought a (listed) and c (not)
    # the cross-sell list's truth leaves out a (bought before): c only, not listed
    assert table.loc["new_items", "recall_at_10"] == 0.0
    champion = RegisteredModel("next_items", "3", "run", {"candidate": "ease",
                                                          "fold_scores": '{"ease": {"2026-02-01": 0.7}}'})
    realised = table.reset_index()
    assert "below the figure 0.700" in recall_drop(realised, champion, drop=0.05)
    assert recall_drop(realised, champion, drop=0.3) is None


def test_the_population_is_scored_chunk_by_chunk_from_the_warehouse_as_in_one_go(tmp_path):
    """score_population streams the date's rows and scores a chunk of whole users at a time (a user's rows can span
    two reads): the same lists as scoring every user's rows at once with the fallback learned from them all,
    categories included; users without rows come last."""
    import duckdb

    from dagster_project.defs.recommendations import score_lists, score_population
    from dagster_project.defs.resources import WarehouseResource
    from ml.recommendations import fit

    interactions = _communities()
    day = dt.date(2026, 3, 1)
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        frame = interactions.assign(as_of_date=day)  # noqa: F841 (read by DuckDB)
        con.execute("create table marts.fct_user_item_interactions as select * from frame")
    model = fit("history_bought_then_ease", interactions)
    users = [*sorted(interactions.user_id.unique()), "newcomer"]
    chunks = list(score_population(WarehouseResource(path=str(path)), model, "3", users, day, 4,
                                   rows_per_chunk=40, rows_per_read=7))
    per_chunk = [set(c[False].user_id) for c in chunks]
    assert len(chunks) >= 3 and sum(map(len, per_chunk)) == len(set().union(*per_chunk)) == len(users)
    assert per_chunk[-1] == {"newcomer"}
    whole = score_lists(model, "3", pd.DataFrame({"user_id": users}), interactions, 4, day)
    for new_only in (False, True):
        joined = pd.concat([c[new_only] for c in chunks], ignore_index=True).sort_values(["user_id", "rank"])
        pd.testing.assert_frame_equal(joined.drop(columns="scored_at").reset_index(drop=True),
                                      whole[new_only].drop(columns="scored_at").sort_values(["user_id", "rank"])
                                      .reset_index(drop=True), check_dtype=False)


def test_a_stream_ordered_by_user_is_cut_into_chunks_of_whole_users():
    import pyarrow as pa

    from dagster_project.defs.recommendations import _chunks_of_whole_users

    ids = ["a"] * 3 + ["b"] * 9 + ["c"] + ["d"] * 2  # b's rows span three reads of 4
    table = pa.table({"user_id": ids, "n": range(len(ids))})
    chunks = list(_chunks_of_whole_users(table.to_batches(max_chunksize=4), rows_per_chunk=4))
    assert [list(c.user_id.unique()) for c in chunks] == [["a"], ["b", "c"], ["d"]]  # d may go on in a next read
    assert pd.concat(chunks).n.tolist() == list(range(len(ids)))  # every row once, in order
    assert [list(c.user_id) for c in _chunks_of_whole_users(iter(table.to_batches(max_chunksize=4)), 10**6)] == [ids]


def test_interaction_dates_are_built_together_while_their_item_days_fit_one_build():
    from dagster_project.defs.dbt_assets import dates_per_build
    from dagster_project.defs.recommendations import ITEM_DAYS_PER_BUILD

    dates = [dt.date(2026, 1, 5) + dt.timedelta(days=7 * k) for k in range(5)]
    assert dates_per_build(dates, 200_000, ITEM_DAYS_PER_BUILD) == [dates]  # a small shop: one dbt build
    assert dates_per_build(dates, ITEM_DAYS_PER_BUILD // 2, ITEM_DAYS_PER_BUILD) == [dates[:2], dates[2:4], dates[4:]]
    assert dates_per_build(dates, 3 * ITEM_DAYS_PER_BUILD, ITEM_DAYS_PER_BUILD) == [[d] for d in dates]  # a date each
    assert dates_per_build([], 0, ITEM_DAYS_PER_BUILD) == []
