"""The recommendations target (issue 23): which items each user buys next.

interactions at the protocol's dates → `models/next_items_candidates` (every recommender backtested on the folds,
one MLflow run each, the best registered) → `models/next_items_champion` (the gate: the first champion is the best
naive candidate, and a learned one replaces it only by beating it on the same cutoffs) → `predictions/next_items`
and `predictions/new_items` (k items per user of the scoring population, with a score and a reason). The work is in
ml/recommendations.py; these assets read the warehouse and record what was decided.
"""

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dagster_project import decisions
from dagster_project.defs.dbt_assets import STAGED_EVENTS, build_selection, dates_per_build
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import (
    MlflowStore,
    PipelineSettings,
    RecommendationPolicy,
    ShopcastDbt,
    WarehouseResource,
    as_of_dates,
)
from dagster_project.markdown import frame_to_markdown
from dagster_project.warehouse import replace_dates
from ml.gate import GateDecision, apply
from ml.recommend import INTERACTION_COLUMNS, Popularity, Recommender, Snapshot, item_categories, positions_in
from ml.recommendations import (
    CANDIDATES,
    MODEL_NAME,
    NAIVE,
    PRIMARY_METRIC,
    Fold,
    LazySnapshots,
    decide,
    fold_scores,
    model_description,
    register,
    train_candidates,
    truth_after,
)
from ml.registry import CHAMPION, version_by_alias, version_for_date

GROUP = MODEL_NAME
INTERACTIONS = dg.AssetKey(["marts", "fct_user_item_interactions"])
ITEM_DAYS = dg.AssetKey(["intermediate", "int_user_item_daily"])
ITEMS = dg.AssetKey(["marts", "dim_items"])
SCORING_POPULATION = dg.AssetKey(["marts", "fct_scoring_population"])
CUTOFF_INTERACTIONS = dg.AssetKey(["marts", "recommendation_cutoff_interactions"])
CANDIDATES_KEY = dg.AssetKey(["models", f"{MODEL_NAME}_candidates"])
CHAMPION_KEY = dg.AssetKey(["models", f"{MODEL_NAME}_champion"])
NEXT_ITEMS = dg.AssetKey(["predictions", "next_items"])
NEW_ITEMS = dg.AssetKey(["predictions", "new_items"])
LIST_COLUMNS = ["user_id", "as_of_date", "rank", "item_id", "category_id", "score", "reason", "model_name",
                "model_version", "scored_at"]


def protocol_of(settings: PipelineSettings, policy: RecommendationPolicy, as_of: dt.date):
    return policy.dates(as_of, settings.windows(as_of).cadence_days)


def interactions_on(warehouse: WarehouseResource, dates: list[dt.date], users_at_most: int | None = None,
                  sampled_at: dt.date | None = None) -> dict[dt.date, pd.DataFrame]:
    """The interactions at ``dates``, per date; with ``users_at_most``, of that many users at most: those of
    ``sampled_at`` with the smallest hash of their id, so that the sample is the same from run to run and mostly
    the same from one week to the next (what bounds the recommenders' fit at any shop size)."""
    sample, params = "", [dates]
    if users_at_most is not None:
        sample = ("and user_id in (select user_id from (select distinct user_id from marts.fct_user_item_interactions "
                  "where as_of_date = ?) order by hash(user_id), user_id limit ?)")
        params += [sampled_at, users_at_most]
    frame = warehouse.query_df(f"select as_of_date, {', '.join(INTERACTION_COLUMNS)} "
                               f"from marts.fct_user_item_interactions where as_of_date in (select unnest(?)) {sample} "
                               # in a fixed order: the recommenders break ties by it (the same lists on any engine)
                               "order by user_id, item_id",
                               params)
    stamps = pd.to_datetime(frame.pop("as_of_date"))  # compared as timestamps: a date object per row cost seconds
    return {d: frame[stamps == pd.Timestamp(d)].reset_index(drop=True) for d in dates}


# each date's interactions aggregate up to a year of item days: a build covers as many dates as keep it under this
ITEM_DAYS_PER_BUILD = 20_000_000


@dg.asset(key=CUTOFF_INTERACTIONS, deps=[STAGED_EVENTS, ITEM_DAYS], group_name=GROUP, partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"dbt", "duckdb"},
          description="The user x item interactions (marts.fct_user_item_interactions) at the recommenders' folds "
                      "and labelled snapshots of the run's date that are not built yet, computed by dbt over those "
                      "dates alone. Runs with training; a date's interactions use only events before it.")
def recommendation_cutoff_interactions(context: dg.AssetExecutionContext, dbt: ShopcastDbt,
                                       settings: PipelineSettings,
                                       warehouse: WarehouseResource,
                                       recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    as_of = as_of_dates(context)[-1]
    protocol = protocol_of(settings, recommendation_policy, as_of)
    wanted = [d for d in protocol.all if d != as_of]  # the run's own date: the daily marts build it
    built = set()
    if warehouse.has_table("marts", "fct_user_item_interactions"):
        built = set(warehouse.query_df("select distinct as_of_date from marts.fct_user_item_interactions "
                                       "where as_of_date in (select unnest(?))", [wanted]).as_of_date.dt.date)
    missing = sorted(set(wanted) - built)
    item_days = int(warehouse.scalar("select count(*) from intermediate.int_user_item_daily "
                                     "where activity_date < ?", [as_of])) if missing else 0
    batches = dates_per_build(missing, item_days, ITEM_DAYS_PER_BUILD)
    for number, days in enumerate(batches, start=1):
        context.log.info(f"dbt build of the interactions of {', '.join(map(str, days))} "
                         f"({number} of {len(batches)} builds)")
        run_vars = {**settings.dbt_run_vars(days), "interaction_dates_kept": [d.isoformat() for d in protocol.all]}
        build_selection(dbt, "fct_user_item_interactions", run_vars, name="cutoff_interactions")
    rows = warehouse.query_df("select as_of_date, count(*) as pairs, count(distinct user_id) as users "
                              "from marts.fct_user_item_interactions where as_of_date in (select unnest(?)) "
                              "group by 1 order by 1", [wanted])
    return dg.MaterializeResult(metadata={
        "dates": len(wanted), "computed": len(missing), "folds": ", ".join(map(str, protocol.folds)),
        "dagster/row_count": int(rows.pairs.sum()) if len(rows) else 0,
        "per_date": dg.MetadataValue.md(frame_to_markdown(rows)),
    })


@dg.asset(key=CANDIDATES_KEY, deps=[CUTOFF_INTERACTIONS, INTERACTIONS, ITEM_DAYS], group_name=GROUP,
          partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
          kinds={"implicit", "lightgbm", "mlflow"},
          description="Every recommender (popularity, the user's history, item-kNN, ALS, BPR, EASE, blends, the "
                      "reranker) fitted and measured on the folds (Recall@10, new-item Recall@10, NDCG, hit rate, "
                      "coverage), one MLflow run each; the best is fitted on the run's date and registered.")
def next_items_candidates(context: dg.AssetExecutionContext, settings: PipelineSettings,
                          warehouse: WarehouseResource, mlflow: MlflowStore,
                          recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    as_of = as_of_dates(context)[-1]
    protocol = protocol_of(settings, recommendation_policy, as_of)
    users = int(warehouse.query_df("select count(distinct user_id) as n from marts.fct_user_item_interactions "
                                   "where as_of_date = ?", [as_of]).n.iloc[0])
    sampled = users > recommendation_policy.training_users
    sample_size = recommendation_policy.training_users if sampled else None
    # the folds' and the date's interactions now; a labelled snapshot's only when a candidate reads it
    interactions = interactions_on(warehouse, sorted({*protocol.folds, as_of}), sample_size, as_of)

    def interactions_at(day: dt.date) -> pd.DataFrame:
        if day not in interactions:
            interactions.update(interactions_on(warehouse, [day], sample_size, as_of))
        return interactions[day]

    if sampled:
        context.log.info(f"recommenders fitted on {recommendation_policy.training_users:,} of {users:,} users "
                         "(a hash sample); every user is served")
    item_days = warehouse.query_df(
        "select user_id, item_id, activity_date, n_purchase from intermediate.int_user_item_daily "
        "where n_purchase > 0 and activity_date >= ? and activity_date < ?", [protocol.all[0], as_of])
    horizon = recommendation_policy.horizon_days

    def snapshots(dates) -> LazySnapshots:  # the labelled ones: interactions before, buyers after
        def load():
            found = [Snapshot(interactions_at(d), truth_after(item_days, d, horizon, interactions_at(d)))
                     for d in dates]
            return [s for s in found if len(s.interactions) and len(s.truth)]
        return LazySnapshots(load)

    folds = [Fold(d, interactions[d], truth_after(item_days, d, horizon, interactions[d]),
                  snapshots(protocol.snapshots[d])) for d in protocol.folds]
    folds = [f for f in folds if len(f.interactions)]
    buyers = folds[0].truth.user_id.nunique() if folds and folds[0].cutoff == protocol.folds[0] else 0
    if buyers < recommendation_policy.min_buyers or interactions[as_of].empty:
        reason = (f"{buyers} users with history bought in the {horizon} days after the validation cutoff "
                  f"{protocol.folds[0]} (at least {recommendation_policy.min_buyers} needed)"
                  if not interactions[as_of].empty else f"no interactions before {as_of}")
        context.log.warning(f"{MODEL_NAME} not trained: {reason}")
        return dg.MaterializeResult(metadata={"eligible": False, "reason": reason})
    folds = [f for f in folds if len(f.truth)]
    names = recommendation_policy.candidate_list
    champion = version_by_alias(mlflow.store(), MODEL_NAME, CHAMPION)
    protected = [n for n in NAIVE if n in names]
    if champion is not None and champion.tags.get("candidate") in CANDIDATES:
        if champion.tags["candidate"] not in names:
            names.append(champion.tags["candidate"])
        protected.append(champion.tags["candidate"])  # the gate compares with the champion's configuration
    production_history = snapshots(protocol.snapshots[as_of])  # read only if the reranker runs
    outcome = train_candidates(folds, interactions[as_of], production_history, mlflow.store(), names,
                               tags={"as_of_date": as_of.isoformat(), "dagster_run_id": context.run.run_id},
                               progress=context.log.info, budget_seconds=recommendation_policy.budget_seconds,
                               protected=tuple(protected))
    for name, reason in outcome.skipped.items():
        context.log.warning(f"{MODEL_NAME} {name} {reason}")
    scores = fold_scores(outcome.results)
    version = register(mlflow.store(), outcome.model_runs[outcome.best], outcome.best, {
        "as_of_date": as_of.isoformat(), "dagster_run_id": context.run.run_id, "fold_scores": json.dumps(scores),
        "best_naive": outcome.best_naive, "best_naive_run_id": outcome.model_runs[outcome.best_naive],
        "horizon_days": horizon})
    shown = outcome.summary[["candidate", PRIMARY_METRIC, "new_item_recall_at_10", "ndcg_at_10", "hit_rate_at_10",
                             "coverage_at_10", "fit_seconds"]]
    return dg.MaterializeResult(metadata={
        "eligible": True, "best": outcome.best, "best_naive": outcome.best_naive,
        "registered_version": version.version, "folds": ", ".join(str(f.cutoff) for f in folds),
        "test_users_per_fold": ", ".join(str(f.truth.user_id.nunique()) for f in folds),
        "users": users, "training_users": min(users, recommendation_policy.training_users),
        "left_out": dg.MetadataValue.json(outcome.skipped),
        "candidates": dg.MetadataValue.md(frame_to_markdown(shown, float_format="{:.3f}")),
        f"best_{PRIMARY_METRIC}": float(outcome.summary.iloc[0][PRIMARY_METRIC]),
        "mlflow_run": dg.MetadataValue.url(mlflow.run_link(outcome.parent_run_id)),
    })


@dg.asset(key=CHAMPION_KEY, deps=[CANDIDATES_KEY], group_name=GROUP, partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"mlflow"},
          description="The gate of the recommendations: the registered candidate against the champion's "
                      "configuration on the same cutoffs (the first champion: the best naive candidate); champion "
                      "or challenger, appended to monitoring.model_decisions.")
def next_items_champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                        recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    as_of = as_of_dates(context)[-1].isoformat()
    store, trigger = mlflow.store(), decisions.trigger_of(context.run.tags)
    candidate = version_for_date(store, MODEL_NAME, as_of)
    made: list[GateDecision] = []
    if candidate is None:
        reason = f"no candidate for {as_of}: not eligible (see the candidates asset)"
        with warehouse.writer() as con:
            decisions.record(con, as_of_date=as_of, target=MODEL_NAME, trigger=trigger, promoted=False,
                             dagster_run_id=context.run.run_id, decision="none", reason=reason)
        return dg.MaterializeResult(metadata={"decision": "none", "promoted": False, "reason": reason})
    scores = json.loads(candidate.tags["fold_scores"])
    champion = version_by_alias(store, MODEL_NAME, CHAMPION)
    if champion is None:  # the first champion: the best of the simple rankings, then the candidate must beat it
        naive = candidate if candidate.tags["candidate"] == candidate.tags["best_naive"] else register(
            store, candidate.tags["best_naive_run_id"], candidate.tags["best_naive"], {
                "as_of_date": as_of, "dagster_run_id": context.run.run_id, "fold_scores": candidate.tags["fold_scores"],
                "first_champion": "true"})
        first = GateDecision(MODEL_NAME, naive.version, True, CHAMPION, PRIMARY_METRIC,
                             float(pd.Series(scores[naive.tags["candidate"]]).mean()), "none", float("nan"), 0.0,
                             f"first champion: the best naive candidate ({naive.tags['candidate']}), the ranking a "
                             "learned recommender must beat")
        apply(store, first, model_description(recommendation_policy.gate_margin))
        made.append(first)
        champion = naive
    if champion.version != candidate.version:
        label = f"champion v{champion.version}"
        made.append(decide(candidate.tags["candidate"], candidate.version, champion.tags["candidate"], label, scores,
                           recommendation_policy.gate_margin))
        apply(store, made[-1], model_description(recommendation_policy.gate_margin))
    with warehouse.writer() as con:
        for decision in made:
            decisions.record(con, as_of_date=as_of, target=MODEL_NAME, trigger=trigger,
                             dagster_run_id=context.run.run_id, decision=decision.alias, promoted=decision.promoted,
                             candidate_version=decision.candidate_version,
                             candidate_family=candidate.tags["candidate"]
                             if decision.candidate_version == candidate.version else candidate.tags["best_naive"],
                             incumbent=decision.incumbent, metric=decision.metric,
                             candidate_score=decision.candidate_score, incumbent_score=decision.incumbent_score,
                             margin=decision.margin, backtest_folds=decision.folds, reason=decision.reason)
    for decision in made:
        context.log.info(decision.reason)
    final = version_by_alias(store, MODEL_NAME, CHAMPION)
    return dg.MaterializeResult(metadata={
        "champion_version": final.version, "champion_candidate": final.tags["candidate"],
        "decisions": dg.MetadataValue.md("\n".join(f"- v{d.candidate_version}: {d.reason}" for d in made)),
        "promoted": any(d.promoted for d in made),
    })


def table_ddl(table: str) -> str:
    return (f"create table if not exists predictions.{table} (user_id varchar, as_of_date date, rank integer, "
            "item_id varchar, category_id varchar, score double, reason varchar, model_name varchar, "
            "model_version varchar, scored_at timestamp)")


SCORING_USERS_PER_BATCH = 50_000  # the champion scores this many users at a time: memory stays bounded at any size


def _user_batches(interactions: pd.DataFrame, users_per_batch: int):
    """``interactions`` cut into consecutive frames of at most ``users_per_batch`` users (each user's rows whole).
    Users are grouped by first appearance (integer codes, not a sort of the ids); rows that come grouped already,
    as the warehouse streams them, are not moved."""
    codes, _ = pd.factorize(interactions.user_id, use_na_sentinel=False)
    ordered = interactions if (np.diff(codes) >= 0).all() else interactions.iloc[np.argsort(codes, kind="stable")]
    ordered = ordered.reset_index(drop=True)
    codes = np.sort(codes, kind="stable")
    firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
    for batch in range(0, len(firsts), users_per_batch):
        end = firsts[batch + users_per_batch] if batch + users_per_batch < len(firsts) else len(ordered)
        yield ordered.iloc[firsts[batch]:end]


def score_lists(recommender: Recommender, version: str, population: pd.DataFrame, interactions: pd.DataFrame,
                k: int, as_of: dt.date, users_per_batch: int = SCORING_USERS_PER_BATCH,
                fallback: Popularity | None = None, category: pd.Series | None = None) -> dict[bool, pd.DataFrame]:
    """{new_only: list} for the users of ``population`` at ``as_of``: the champion's items (both lists per batch of
    users: their rows are built once), then, for the users it has too few for (new users, users of items newer
    than the model), the popularity of the user's categories (``fallback``, fitted on ``interactions`` unless
    given), marked as the fallback in model_name and model_version. ``category``: each item's category (from
    ``interactions`` unless given)."""
    users = population.user_id.unique()
    known = interactions[positions_in(pd.Index(users), interactions.user_id) >= 0]
    category = item_categories(interactions) if category is None else category
    in_categories = fallback if fallback is not None else (
        Popularity(within_categories=True).fit(interactions) if len(interactions) else None)
    batches = [recommender.recommend_lists(batch.user_id.unique(), k, interactions=batch)
               for batch in _user_batches(known, users_per_batch)]
    lists = {}
    for new_only in (False, True):
        parts = [lists_of_batch[new_only] for lists_of_batch in batches]
        served = (pd.concat(parts, ignore_index=True) if parts
                  else pd.DataFrame(columns=["user_id", "rank", "item_id", "score", "reason"]))
        served = served.assign(model_name=MODEL_NAME, model_version=version)
        per_user = served.groupby("user_id").size()
        short = users[positions_in(per_user.index[per_user >= k], users) < 0]  # a hash lookup: users can be millions
        if in_categories is not None and len(short):
            short_known = known[positions_in(pd.Index(short), known.user_id) >= 0]
            extra = in_categories.recommend(short, k, new_only, interactions=short_known if len(short_known) else None)
            # a user without any interaction (a visit without items) gets the overall most popular items
            strangers = sorted(set(short) - set(extra.user_id))
            if strangers:
                top = np.argsort(-in_categories.popularity_, kind="stable")[:k]
                overall = pd.DataFrame({"user_id": np.repeat(np.asarray(strangers, dtype=object), len(top)),
                                        "rank": np.tile(np.arange(1, len(top) + 1), len(strangers)),
                                        "item_id": np.tile(in_categories.catalogue_.items[top].to_numpy(),
                                                           len(strangers)),
                                        "score": np.tile(in_categories.popularity_[top].astype(float),
                                                         len(strangers)), "reason": "popular"})
                extra = pd.concat([extra, overall], ignore_index=True)
            extra = extra.assign(rank=extra["rank"] + k, model_name="popularity_in_categories",
                                 model_version="fallback")
            served = pd.concat([served, extra], ignore_index=True).drop_duplicates(["user_id", "item_id"])
        served = served.sort_values(["user_id", "rank"], kind="stable")
        served["rank"] = served.groupby("user_id", sort=False).cumcount() + 1
        served = served[served["rank"] <= k]
        lists[new_only] = served.assign(
            as_of_date=as_of, category_id=served.item_id.map(category),
            scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None))[LIST_COLUMNS].reset_index(drop=True)
    return lists


SCORING_ROWS_PER_CHUNK = 5_000_000  # interaction rows scored at once (whole users): bounds memory at any size
FALLBACK_USERS = 200_000  # the fallback's popularity is learned from at most this many users (a hash sample)


def _chunks_of_whole_users(reader, rows_per_chunk: int):
    """Frames of about ``rows_per_chunk`` rows from a stream of record batches ordered by user, each user's rows in
    one frame: the last user of a chunk waits for the next batches, which may hold more of their rows."""
    pending, rows = [], 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        if rows < rows_per_chunk:
            continue
        table = pa.Table.from_batches(pending)
        ids = table.column("user_id")
        cut = len(ids) - pc.sum(pc.equal(ids, ids[-1])).as_py()  # the rows ordered by user: the last one's are a suffix
        if cut:
            yield table.slice(0, cut).to_pandas()
        pending, rows = table.slice(cut).to_batches(), len(ids) - cut
    if rows:
        yield pa.Table.from_batches(pending).to_pandas()


def score_population(warehouse: WarehouseResource, recommender: Recommender, version: str, users, as_of: dt.date,
                     k: int, rows_per_chunk: int = SCORING_ROWS_PER_CHUNK, rows_per_read: int = 1_000_000):
    """Both lists for ``users`` at ``as_of``, a chunk of whole users at a time (memory stays bounded whatever the
    population): yields score_lists' {new_only: list} per chunk, then one for the users without interactions. The
    date's interactions are read in one pass, ordered by user and streamed (a query per chunk of users scanned the
    date's rows again each time: ten scans at 1M users). The fallback's popularity is learned once, from a hash
    sample of the date's users, and each item's category is the one most of the date's rows name
    (item_categories), computed in the warehouse."""
    sample = interactions_on(warehouse, [as_of], FALLBACK_USERS, as_of)[as_of]
    fallback = Popularity(within_categories=True).fit(sample) if len(sample) else None
    category = warehouse.query_df("""
        select item_id, category_id from (
            select item_id, category_id, row_number() over (
                partition by item_id order by count(*) desc, category_id) as choice
            from marts.fct_user_item_interactions
            where as_of_date = ? and category_id is not null
            group by item_id, category_id)
        where choice = 1""", [as_of]).set_index("item_id").category_id
    users = pd.Index(users).unique()
    scored = set()
    with warehouse.reader() as con:
        con.register("population_users", pa.table({"user_id": pa.array(users.astype(str), pa.string())}))
        reader = con.execute(
            f"select {', '.join(INTERACTION_COLUMNS)} from marts.fct_user_item_interactions "
            "semi join population_users using (user_id) where as_of_date = ? order by user_id",
            [as_of]).to_arrow_reader(rows_per_read)
        for interactions in _chunks_of_whole_users(reader, rows_per_chunk):
            chunk = interactions.user_id.unique()
            scored.update(chunk)
            yield score_lists(recommender, version, pd.DataFrame({"user_id": chunk}), interactions, k, as_of,
                              fallback=fallback, category=category)
    without_rows = users[~users.isin(scored)]  # visits without items: the fallback's lists alone
    if len(without_rows):
        yield score_lists(recommender, version, pd.DataFrame({"user_id": without_rows}),
                          pd.DataFrame({c: pd.Series(dtype=object if c.endswith("_id") else float)
                                        for c in INTERACTION_COLUMNS}),
                          k, as_of, fallback=fallback, category=category)


@dg.multi_asset(specs=[dg.AssetSpec(NEXT_ITEMS, deps=[CHAMPION_KEY, INTERACTIONS, SCORING_POPULATION, ITEMS],
                                    group_name=GROUP, kinds={"duckdb", "mlflow"},
                                    description="predictions.next_items: k items each user of the scoring "
                                                "population is likely to buy next (repurchases included), with a "
                                                "score and a reason, by models:/next_items@champion."),
                       dg.AssetSpec(NEW_ITEMS, deps=[CHAMPION_KEY, INTERACTIONS, SCORING_POPULATION, ITEMS],
                                    group_name=GROUP, kinds={"duckdb", "mlflow"},
                                    description="predictions.new_items: the cross-sell list, k items each user has "
                                                "not bought before.")],
                partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
                name="next_items_predictions")
def next_items_predictions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                           recommendation_policy: RecommendationPolicy):
    dates = as_of_dates(context)
    with warehouse.writer() as con:
        con.execute("create schema if not exists predictions")
        for table in ("next_items", "new_items"):
            con.execute(table_ddl(table))
    store = mlflow.store()
    champion = version_by_alias(store, MODEL_NAME, CHAMPION)
    if champion is None:
        reason = "no champion: the recommenders have not been eligible yet (see the candidates asset)"
        context.log.warning(f"{MODEL_NAME} not published: {reason}")
        for key in (NEXT_ITEMS, NEW_ITEMS):
            yield dg.MaterializeResult(asset_key=key, metadata={"published": False, "reason": reason,
                                                                "dagster/row_count": 0})
        return
    import mlflow.pyfunc

    store.activate()
    # the registered pyfunc's recommender itself: score_lists asks it for both lists at once
    recommender = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}").unwrap_python_model().recommender
    population = warehouse.query_df("select user_id, as_of_date from marts.fct_scoring_population "
                                    "where as_of_date in (select unnest(?))", [dates])
    population["as_of_date"] = pd.to_datetime(population.as_of_date).dt.date
    written = {False: [], True: []}
    for day in dates:
        for lists in score_population(warehouse, recommender, champion.version,
                                      population.user_id[population.as_of_date == day], day,
                                      recommendation_policy.per_user):
            for new_only, frame in lists.items():
                written[new_only].append(frame)
    with warehouse.writer() as con:
        for new_only, table in ((False, "next_items"), (True, "new_items")):
            con.execute(f"delete from predictions.{table} where as_of_date in (select unnest(?))", [dates])
            frame = pd.concat(written[new_only], ignore_index=True)
            if len(frame):
                replace_dates(con, "predictions", table, frame)
    for new_only, key in ((False, NEXT_ITEMS), (True, NEW_ITEMS)):
        frame = pd.concat(written[new_only], ignore_index=True)
        yield dg.MaterializeResult(asset_key=key, metadata={
            "published": True, "dagster/row_count": len(frame), "model_version": champion.version,
            "champion_candidate": champion.tags.get("candidate"), "users": int(frame.user_id.nunique()),
            "fallback_share": float((frame.model_version == "fallback").mean()) if len(frame) else 0.0,
            "preview": dg.MetadataValue.md(frame_to_markdown(frame.head(10).drop(columns=["scored_at"]))),
        })


def _list_check(table: str, key: dg.AssetKey):
    @dg.asset_check(asset=key, name="lists_are_complete", blocking=True, partitions_def=as_of_daily, pool="duckdb",
                    description=f"predictions.{table}: ranks 1..n per user without a gap or a repeated item, at most "
                                "k items, every user of the scoring population served"
                                + (", no item the user bought before the date" if table == "new_items" else ""))
    def lists_are_complete(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                           mlflow: MlflowStore, recommendation_policy: RecommendationPolicy) -> dg.AssetCheckResult:
        dates = as_of_dates(context)
        published = version_by_alias(mlflow.store(), MODEL_NAME, CHAMPION) is not None
        bought_before = "0" if table != "new_items" else """(
            select count(*) from predictions.new_items p join marts.fct_user_item_interactions i
              on i.user_id = p.user_id and i.item_id = p.item_id and i.as_of_date = p.as_of_date
            where p.as_of_date in (select unnest($1)) and i.purchases > 0)"""
        found = warehouse.query_df(f"""
            select
                (select count(*) from (select distinct user_id, as_of_date from marts.fct_scoring_population
                   where as_of_date in (select unnest($1)))) as population,
                (select count(*) from (select distinct user_id, as_of_date from predictions.{table}
                   where as_of_date in (select unnest($1)))) as served,
                (select count(*) from (select user_id, as_of_date from predictions.{table}
                   where as_of_date in (select unnest($1)) group by 1, 2
                   having max(rank) <> count(*) or min(rank) <> 1 or count(distinct item_id) <> count(*)
                       or count(*) > $2)) as broken_lists,
                {bought_before} as bought_before
        """, [dates, recommendation_policy.per_user]).iloc[0]
        passed = not published or (found.served == found.population and found.broken_lists == 0
                                   and found.bought_before == 0)
        return dg.AssetCheckResult(passed=bool(passed), metadata={"published": published,
                                                                  **{k: int(v) for k, v in found.items()}})

    return lists_are_complete


@dg.definitions
def recommendation_defs() -> dg.Definitions:
    return dg.Definitions(assets=[recommendation_cutoff_interactions, next_items_candidates, next_items_champion,
                                  next_items_predictions],
                          asset_checks=[_list_check("next_items", NEXT_ITEMS), _list_check("new_items", NEW_ITEMS)])
