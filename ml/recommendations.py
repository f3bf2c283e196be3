"""The recommendations target: its candidates, the time-based protocol they are judged by, and the choice between
them (issue 23). The recommenders themselves are in ml/recommend.py.

Protocol, for a cutoff T and a horizon h: fit on the interactions before T (marts.fct_user_item_interactions at
as-of date T); the test users are the users with interactions before T who bought in [T, T + h); the truth is the
distinct items each bought then. Recall@10 = hits / min(10, |truth|), averaged over the test users (a user without
a list counts as zero), and the same on the cross-sell list (`new_items`: the items the user had not bought before
T, against the truth's new items). A candidate that learns from labelled history (the reranker) learns from the
snapshots T - h, T - 2h, ..., whose horizons closed before T.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ml.recommend import (
    ALS,
    BPR,
    EASE,
    Fallback,
    History,
    ItemKNN,
    Popularity,
    Recommender,
    Reranker,
    Snapshot,
    coverage,
    new_item_truth,
    ranking_metrics,
)
from ml.recommend_sequence import GRU4Rec
from ml.sequences import torch_missing
from ml.targets import RECOMMENDATIONS_MODEL

K = 10
PRIMARY_METRIC = f"recall_at_{K}"
# the naive candidates: the first champion is the best of these, so that a learned model has to beat the simple
# rankings of this shop to be served
NAIVE = ("popularity", "popularity_in_categories", "history_bought", "history_engaged")
RERANKER_SNAPSHOTS = 3  # labelled snapshots the reranker learns from, one horizon apart

CANDIDATES: dict[str, Callable[[], Recommender]] = {
    "popularity": lambda: Popularity(),
    "popularity_in_categories": lambda: Popularity(within_categories=True),
    "history_bought": lambda: History("bought"),
    "history_engaged": lambda: History("engaged"),
    "item_knn": lambda: ItemKNN(),
    "als": lambda: ALS(),
    "bpr": lambda: BPR(),
    "ease": lambda: EASE(),
    "history_bought_then_ease": lambda: Fallback(History("bought"), EASE()),
    "history_engaged_then_als": lambda: Fallback(History("engaged"), ALS()),
    "reranker": lambda: Reranker(),
    "gru4rec": lambda: GRU4Rec(),
    "history_engaged_then_gru4rec": lambda: Fallback(History("engaged"), GRU4Rec()),
}
# candidates only where named in the recommendation candidates (not in "all"): the sequence recommender, until the
# protocol's backtests on generated and real data show where it wins (docs/sequences.md)
OPT_IN = ("gru4rec", "history_engaged_then_gru4rec")
# What a learned candidate's fold costs against a naive one's (their mean: the naive candidates always run first), to
# project its first fold before it starts: measured on 100,000 users' 2.7M interactions (fit and both lists; the
# naive ones 3-9 s). A candidate the projection does not fit is left out before it spends the budget.
COST_AGAINST_NAIVE = {"item_knn": 5.0, "als": 5.0, "bpr": 14.0, "ease": 8.0,
                      "history_bought_then_ease": 9.0, "history_engaged_then_als": 6.0,
                      "gru4rec": 20.0, "history_engaged_then_gru4rec": 20.0}


def snapshot_cutoffs(cutoff: dt.date, horizon_days: int, snapshots: int = RERANKER_SNAPSHOTS) -> list[dt.date]:
    """The earlier cutoffs a learned ranker fitted at ``cutoff`` learns from: their horizons closed by ``cutoff``."""
    return [cutoff - dt.timedelta(days=horizon_days * j) for j in range(1, snapshots + 1)]


def truth_after(item_days: pd.DataFrame, cutoff: dt.date, horizon_days: int, interactions: pd.DataFrame
                ) -> pd.DataFrame:
    """user_id, item_id: the distinct items bought in [cutoff, cutoff + horizon) by users with interactions before
    the cutoff. item_days: int_user_item_daily's user_id, item_id, activity_date, n_purchase."""
    dates = pd.to_datetime(item_days.activity_date)
    start, end = pd.Timestamp(cutoff), pd.Timestamp(cutoff + dt.timedelta(days=horizon_days))
    bought = item_days[(dates >= start) & (dates < end) & (item_days.n_purchase > 0)]
    bought = bought[bought.user_id.isin(set(interactions.user_id))]
    return bought[["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)


class LazySnapshots(Sequence):
    """Labelled snapshots read from the warehouse when first used: only a candidate that learns from them (the
    reranker) reads them, and at scale their interactions were most of a training run's memory (the 100M-event
    benchmark: 19.8 GB with them loaded up front though the reranker was left out for the budget)."""

    def __init__(self, load: Callable[[], list[Snapshot]]):
        self._load, self._snapshots = load, None

    def _loaded(self) -> list[Snapshot]:
        if self._snapshots is None:
            self._snapshots = list(self._load())
        return self._snapshots

    def __len__(self) -> int:
        return len(self._loaded())

    def __getitem__(self, index):
        return self._loaded()[index]


@dataclass
class Fold:
    """One cutoff of the protocol: the interactions before it, the truth after it, and the labelled snapshots
    before it (for candidates that learn from them)."""

    cutoff: dt.date
    interactions: pd.DataFrame
    truth: pd.DataFrame
    history: Sequence[Snapshot] = field(default_factory=list)


def fit(name: str, interactions: pd.DataFrame, history: list[Snapshot] = ()) -> Recommender:
    model = CANDIDATES[name]()
    if getattr(model, "needs_history", False):
        return model.fit(interactions, history=list(history))
    return model.fit(interactions)


def evaluate(model: Recommender, fold: Fold, k: int = K) -> dict[str, float]:
    """The protocol's metrics of a fitted model on a fold: both lists, and how much of the catalogue they use."""
    users = fold.truth.user_id.unique()
    next_items = model.recommend(users, k)
    metrics = ranking_metrics(next_items, fold.truth, k)
    new_truth = new_item_truth(fold.truth, fold.interactions)
    new_items = model.recommend(new_truth.user_id.unique(), k, new_only=True)
    new_metrics = ranking_metrics(new_items, new_truth, k)
    return {**metrics, f"new_item_recall_at_{k}": new_metrics[f"recall_at_{k}"],
            f"new_item_hit_rate_at_{k}": new_metrics[f"hit_rate_at_{k}"], "new_item_users": new_metrics["users"],
            f"coverage_at_{k}": coverage(next_items, fold.interactions.item_id.nunique(), k)}


def backtest(names: list[str], folds: list[Fold], k: int = K, progress: Callable[[str], None] | None = None
             ) -> pd.DataFrame:
    """Every candidate fitted and measured on every fold: one row per (candidate, cutoff)."""
    return backtest_within_budget(names, folds, None, (), k, progress)[0]


def backtest_within_budget(names: list[str], folds: list[Fold], budget_seconds: float | None,
                           protected: tuple[str, ...] | list[str] = (), k: int = K,
                           progress: Callable[[str], None] | None = None,
                           final_history: Sequence[Snapshot] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """(one row per (candidate, cutoff), {candidate left out: why}). The protected candidates (the naive ones, the
    champion's configuration: the gate needs them) run first and always. Every other one runs, in the given order,
    while the time spent plus what it is projected to take (a fold's time for each fold left and once more for the
    fit on the training date) fits in ``budget_seconds``; one that would not is left out whole, so that every
    candidate kept is measured on the same cutoffs. Before its first fold a candidate's fold is projected from the
    naive candidates' (COST_AGAINST_NAIVE) or, for the reranker, from its generators'; then from its own. A
    candidate that learns from labelled snapshots runs only where every fold (and ``final_history``, the training
    date's, when given) has one; they are read then, not before."""
    started = time.perf_counter()
    order = [n for n in names if n in protected] + [n for n in names if n not in protected]
    rows, skipped, per_candidate = [], {}, {}
    for name in order:
        mine, unfitted = [], CANDIDATES[name]()
        # a candidate made of others (the reranker) projects its first fold from theirs, so that it does not
        # start a fold the budget cannot hold
        projector = getattr(unfitted, "projected_fold_seconds", None)
        naive = [per_candidate[n] for n in NAIVE if n in per_candidate]
        guess = (projector(per_candidate) if projector
                 else COST_AGAINST_NAIVE.get(name, 1.0) * float(np.mean(naive)) if naive else None)
        if getattr(unfitted, "needs", None) == "deep" and torch_missing():
            skipped[name] = f"left out: {torch_missing()}"
        elif projector and guess is None and budget_seconds is not None and name not in protected:
            # its generators were left out for the budget: it would fit each of them several times over (measured
            # at 100M events: one fold of 781 s against a budget of 300 s)
            skipped[name] = (f"left out for the training budget of {budget_seconds:.0f} s: the candidates it "
                             "learns from were left out for it")
        elif getattr(unfitted, "needs_history", False) and not (
                all(len(f.history) for f in folds) and (final_history is None or len(final_history))):
            skipped[name] = ("left out: it learns from labelled snapshots a horizon apart, and the history is too "
                             "short for every fold to have one")
        if name in skipped:
            if progress:
                progress(f"{name} {skipped[name]}")
            continue
        for position, fold in enumerate(folds):
            spent = time.perf_counter() - started
            if budget_seconds is not None and name not in protected:
                per_fold = float(np.mean([r["seconds"] for r in mine])) if mine else (guess or 0.0)
                projected = spent + per_fold * (len(folds) - position + 1)
                if projected > budget_seconds:
                    skipped[name] = (f"left out for the training budget of {budget_seconds:.0f} s: "
                                     + (f"{per_fold:.1f} s per fold{'' if mine else ' expected'}, "
                                        f"{projected:.0f} s projected" if per_fold
                                        else f"{spent:.0f} s spent before it started"))
                    break
            begun = time.perf_counter()
            model = fit(name, fold.interactions, fold.history)
            fitted = time.perf_counter() - begun
            metrics = evaluate(model, fold, k)
            mine.append({"candidate": name, "cutoff": fold.cutoff, **metrics, "fit_seconds": fitted,
                         "seconds": time.perf_counter() - begun})
            if progress:
                progress(f"{fold.cutoff} {name}: {PRIMARY_METRIC} {metrics[PRIMARY_METRIC]:.3f}, new items "
                         f"{metrics[f'new_item_recall_at_{k}']:.3f} ({mine[-1]['seconds']:.1f} s)")
        if mine:  # measured on a fold at least, kept or not: what a reranker over it would cost
            per_candidate[name] = float(np.mean([r["seconds"] for r in mine]))
        if name in skipped:
            if progress:
                progress(f"{name} {skipped[name]}")
            continue
        rows += mine
    return pd.DataFrame(rows), skipped


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over the folds per candidate, best first by the primary metric (ties: the naive one, then by name)."""
    means = results.drop(columns="cutoff").groupby("candidate").mean(numeric_only=True)
    means["naive"] = means.index.isin(NAIVE)
    return means.sort_values([PRIMARY_METRIC, "naive"], ascending=[False, False]).reset_index()


def best(results: pd.DataFrame, among: tuple[str, ...] | None = None) -> str:
    table = summarise(results)
    if among is not None:
        table = table[table.candidate.isin(among)]
    if table.empty or not np.isfinite(table[PRIMARY_METRIC].iloc[0]):
        raise ValueError("no candidate was measured on a fold with buyers")
    return str(table.candidate.iloc[0])


# -- training, the registry and the gate -------------------------------------------------------------------------

MODEL_NAME = RECOMMENDATIONS_MODEL  # the registered model: one model serves both lists (ml/targets.py)


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a fitted recommender. Input: the interactions as of the scoring date
    (INTERACTION_COLUMNS, ml/recommend.py) of the users to serve; params: k and new_only. Output: user_id, rank,
    item_id, score, reason."""

    def __init__(self, recommender: Recommender):
        self.recommender = recommender

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        return self.recommender.recommend(model_input.user_id.unique(), int(params.get("k", K)),
                                          bool(params.get("new_only", False)), interactions=model_input)


@dataclass
class TrainingOutcome:
    results: pd.DataFrame          # one row per (candidate, cutoff)
    summary: pd.DataFrame          # means per candidate, best first
    best: str
    best_naive: str
    parent_run_id: str
    model_runs: dict[str, str]     # candidate -> the run holding its model fitted on the training date's interactions
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was left out (the budget)


def fold_scores(results: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{candidate: {cutoff: primary metric}}: what the gate compares, kept on the registered version."""
    return {name: {str(row.cutoff): float(row[PRIMARY_METRIC]) for _, row in rows.iterrows()}
            for name, rows in results.groupby("candidate")}


def train_candidates(folds: list[Fold], interactions: pd.DataFrame, history: list[Snapshot], store,
                     names: list[str] | None = None, tags: dict | None = None,
                     progress: Callable[[str], None] = print, budget_seconds: float | None = None,
                     protected: tuple[str, ...] = NAIVE) -> TrainingOutcome:
    """Backtest every candidate on the folds (newest first: the first is the validation cutoff) within the budget
    (backtest_within_budget), log one MLflow run per candidate measured under a parent run, and fit the best (and
    the best naive one) on ``interactions``, the training date's, with ``history`` for a learned ranker, logging
    each as a model."""
    import mlflow
    from mlflow.models import infer_signature

    from ml.evaluate import recommendation_plots
    from ml.recommend import INTERACTION_COLUMNS
    from ml.train import model_requirements

    names = names or list(CANDIDATES)
    results, skipped = backtest_within_budget(names, folds, budget_seconds, protected, progress=progress,
                                              final_history=history)
    names = [n for n in names if n not in skipped]
    summary = summarise(results)
    chosen, naive = best(results), best(results, among=tuple(n for n in NAIVE if n in names) or None)
    validation = folds[0].cutoff
    store.activate()
    tags = {k: str(v) for k, v in (tags or {}).items()}
    model_runs = {}
    experiment = store.experiment_id(MODEL_NAME)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{MODEL_NAME} candidates",
                          tags={**tags, "validation_as_of_date": str(validation)}) as parent:
        for name in names:
            rows = results[results.candidate == name]
            with mlflow.start_run(experiment_id=experiment, run_name=name, nested=True,
                                  tags={**tags, "candidate": name}) as child:
                mlflow.log_params({"candidate": name, **CANDIDATES[name]().get_params(),
                                   "cutoffs": ",".join(str(c) for c in rows.cutoff)})
                newest = rows[rows.cutoff == validation].drop(columns=["candidate", "cutoff"]).iloc[0]
                mlflow.log_metrics({f"validation_{k}": float(v) for k, v in newest.items() if np.isfinite(v)}
                                   | {f"backtest_{k}": float(v) for k, v in
                                      rows.drop(columns=["candidate", "cutoff"]).mean().items() if np.isfinite(v)})
                mlflow.log_table(rows.assign(cutoff=rows.cutoff.astype(str)), "folds.json")
                _log_figures(recommendation_plots(results, name))
                if name in (chosen, naive):
                    fitted = fit(name, interactions, history)
                    if getattr(fitted, "trees_", None):  # what early stopping chose, per list
                        mlflow.log_params({f"trees_{'new' if new_only else 'next'}_items": trees
                                           for new_only, trees in fitted.trees_.items()})
                    example = interactions[list(INTERACTION_COLUMNS)].head(20)
                    mlflow.pyfunc.log_model(
                        name="model", python_model=RecommenderModel(fitted), input_example=example,
                        signature=infer_signature(example, fitted.recommend(example.user_id.unique(), K,
                                                                            interactions=example),
                                                  params={"k": K, "new_only": False}),
                        pip_requirements=[*model_requirements(), "implicit", "lightgbm"])
                    model_runs[name] = child.info.run_id
            progress(f"{MODEL_NAME} {name}: backtest {PRIMARY_METRIC} {rows[PRIMARY_METRIC].mean():.3f}")
        mlflow.set_tags({"best_candidate": chosen, "best_naive_candidate": naive,
                         **({"left_out": json.dumps(skipped)[:5000]} if skipped else {})})
        mlflow.log_table(summary, "candidates.json")
        _log_figures(recommendation_plots(results))
    return TrainingOutcome(results, summary, chosen, naive, parent.info.run_id, model_runs, skipped)


def _log_figures(figures: dict) -> None:
    import matplotlib.pyplot as plt

    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)


def register(store, run_id: str, candidate: str, tags: dict):
    """Register a candidate's logged model as a version of `next_items`, its configuration named in the tags."""
    import mlflow

    from ml.registry import RegisteredModel

    store.activate()
    all_tags = {**{k: str(v) for k, v in tags.items()}, "candidate": candidate, "family": candidate}
    mv = mlflow.register_model(f"runs:/{run_id}/model", MODEL_NAME, tags=all_tags)
    return RegisteredModel(MODEL_NAME, str(mv.version), run_id, all_tags)


def model_description(margin: float) -> str:
    """What the registered recommender is, for the registry's page (ml/gate.model_description's counterpart)."""
    return (f"The {K} items each user is most likely to buy next (predictions.next_items), and the {K} they have not "
            "bought (predictions.new_items, the cross-sell list), for every user of the scoring population.\n"
            f"Compared on: {PRIMARY_METRIC} over time-based cutoffs (interactions before each, purchases in its "
            "horizon after it).\n"
            f"Gate: the first champion is the best naive candidate; a new version becomes champion only if its mean "
            f"{PRIMARY_METRIC} over the same cutoffs beats the champion's by more than {margin}.")


def decide(candidate: str, candidate_version: str, incumbent: str, incumbent_label: str,
           scores: dict[str, dict[str, float]], margin: float):
    """The gate's decision, from the backtest alone: the candidate's configuration and the incumbent's (the
    champion's, or for a first champion the best naive one), each refit per fold, compared by the mean primary
    metric over the same cutoffs. A tie keeps the incumbent."""
    from ml.gate import GateDecision
    from ml.registry import CHALLENGER, CHAMPION

    cutoffs = sorted(set(scores[candidate]) & set(scores[incumbent]))
    if not cutoffs:
        raise ValueError(f"no cutoff on which both {candidate} and {incumbent} were measured")
    mine = float(np.mean([scores[candidate][c] for c in cutoffs]))
    theirs = float(np.mean([scores[incumbent][c] for c in cutoffs]))
    promoted = candidate != incumbent and mine > theirs + margin
    comparison = (f"{PRIMARY_METRIC} {mine:.4f} ({candidate}) vs {incumbent_label} {theirs:.4f} ({incumbent}), "
                  f"margin {margin}, mean over {len(cutoffs)} cutoffs")
    if candidate == incumbent:
        reason = f"kept as challenger: the same configuration as {incumbent_label}: {comparison}"
    elif promoted:
        reason = f"promoted: beats {incumbent_label} on the same cutoffs: {comparison}"
    else:
        reason = f"kept as challenger: does not beat {incumbent_label} by the margin: {comparison}"
    folds = [{"cutoff": c, "candidate": scores[candidate][c], "incumbent": scores[incumbent][c]} for c in cutoffs]
    return GateDecision(MODEL_NAME, candidate_version, promoted, CHAMPION if promoted else CHALLENGER,
                        PRIMARY_METRIC, mine, incumbent_label, theirs, margin, reason, folds)


@dataclass(frozen=True)
class ProtocolDates:
    """The as-of dates a training run of the recommendations target at ``as_of`` reads interactions at."""

    as_of: dt.date
    folds: list[dt.date]                         # newest first: the validation cutoff, then the backtest's
    snapshots: dict[dt.date, list[dt.date]]      # per fold, and for as_of itself: what a learned ranker learns from

    @property
    def all(self) -> list[dt.date]:
        return sorted({self.as_of, *self.folds, *(d for dates in self.snapshots.values() for d in dates)})


def protocol_dates(as_of: dt.date, horizon_days: int, cadence_days: int, folds: int) -> ProtocolDates:
    """Folds ``cadence_days`` apart, the newest ``horizon_days`` before ``as_of`` (its horizon just closed), and
    each one's (and the training date's) labelled snapshots, one horizon apart."""
    newest = as_of - dt.timedelta(days=horizon_days)
    cutoffs = [newest - dt.timedelta(days=cadence_days * k) for k in range(folds)]
    return ProtocolDates(as_of, cutoffs, {d: snapshot_cutoffs(d, horizon_days) for d in [as_of, *cutoffs]})


# -- feedback: what the served lists were worth once their horizon closed ----------------------------------------

LISTS = {"next_items": False, "new_items": True}  # table -> new_only


def realised_lists(lists: pd.DataFrame, purchases: pd.DataFrame, horizon_days: int, closed_by: dt.date,
                   k: int = K) -> pd.DataFrame:
    """Per served list (next_items, new_items), as-of date and model version whose horizon had closed by
    ``closed_by``: the protocol's metrics on what the served users then bought. lists: list, user_id, as_of_date,
    rank, item_id, model_version; purchases: user_id, item_id, activity_date (every purchase day, earlier ones too:
    the new_items truth leaves out what a user had bought before). Users who bought nothing count in `served` only."""
    columns = ["target", "as_of_date", "model_version", "served", "users", f"recall_at_{k}", f"ndcg_at_{k}",
               f"hit_rate_at_{k}"]
    rows = []
    days = pd.to_datetime(purchases.activity_date)
    for (table, as_of, version), served in lists.groupby(["list", "as_of_date", "model_version"]):
        start = pd.Timestamp(as_of)
        if (start + pd.Timedelta(days=horizon_days)).date() > closed_by:
            continue
        window = purchases[(days >= start) & (days < start + pd.Timedelta(days=horizon_days))]
        truth = window[window.user_id.isin(set(served.user_id))][["user_id", "item_id"]].drop_duplicates()
        if LISTS[table]:
            before = purchases.loc[days < start, ["user_id", "item_id"]].drop_duplicates()
            truth = new_item_truth(truth, before.assign(purchases=1))
        metrics = ranking_metrics(served, truth, k)
        rows.append({"target": table, "as_of_date": as_of, "model_version": version,
                     "served": served.user_id.nunique(), **metrics})
    metrics = {c: "float64" for c in columns[5:]}
    return pd.DataFrame(rows, columns=columns).astype({"served": "int64", "users": "int64", **metrics})


def recall_drop(realised: pd.DataFrame, champion, drop: float, window_days: int = 7) -> str | None:
    """The retrain signal: the champion's realised Recall@10 on next_items over its last ``window_days`` closed
    dates more than ``drop`` below the figure it was chosen on (its newest fold's), or None."""
    if champion is None or "fold_scores" not in champion.tags:
        return None
    rows = realised[(realised.target == "next_items") & (realised.model_version == champion.version)
                    & (realised.users > 0)]
    if rows.empty:
        return None
    dates = pd.to_datetime(rows.as_of_date)
    recent = rows[dates > dates.max() - pd.Timedelta(days=window_days)]
    scores = json.loads(champion.tags["fold_scores"])[champion.tags["candidate"]]
    promised = scores[max(scores)]
    realised_recall = float(recent[PRIMARY_METRIC].mean())
    if realised_recall < promised - drop:
        return (f"realised {PRIMARY_METRIC} {realised_recall:.3f} over {len(recent)} closed date(s) is below the "
                f"figure {promised:.3f} it was chosen on by more than {drop}")
    return None
