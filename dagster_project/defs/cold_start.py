"""The cold-start list (issue 25): new items each user may want, offered by their text.

`models/cold_start_items_evidence` (with training) measures the content recommender (ml/content.py) on items held
out from training at the recommendations' folds, against the rankings a shop has without text (ml/cold_start.py),
and appends the decision to monitoring.model_decisions (target `cold_start_items`). `predictions/cold_start_items`
(daily) offers each user of the scoring population up to k of the items first seen in the last
`cold_start_window_days`, by their text, where the latest decision published the list; otherwise the table holds
nothing for the date and the asset says why.
"""

import datetime as dt

import dagster as dg
import pandas as pd

from dagster_project import decisions
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.recommendations import (
    CUTOFF_INTERACTIONS,
    GROUP,
    INTERACTIONS,
    ITEM_DAYS,
    SCORING_POPULATION,
    interactions_on,
    protocol_of,
    table_ddl,
)
from dagster_project.defs.resources import (
    PipelineSettings,
    RecommendationPolicy,
    WarehouseResource,
    as_of_dates,
)
from dagster_project.defs.reviews import STAGED_REVIEWS
from dagster_project.markdown import frame_to_markdown
from ml.cold_start import (
    METHOD,
    MODEL_NAME,
    K,
    cold_start_fold,
    cold_start_lists,
    decide,
    measure,
    new_items,
    texts_at,
)
from ml.content import ContentBased
from ml.recommend import item_categories

EVIDENCE = dg.AssetKey(["models", f"{MODEL_NAME}_evidence"])
COLD_START_ITEMS = dg.AssetKey(["predictions", MODEL_NAME])


def _descriptions(warehouse: WarehouseResource) -> pd.DataFrame:
    return warehouse.query_df("select item_id, description, described_at from raw.items "
                              "where description is not null")


def _reviews(warehouse: WarehouseResource) -> pd.DataFrame | None:
    """The reviews' item texts (never a user's): item, time, title and text; None where the shop loads none."""
    if not warehouse.has_table("staging", "stg_shop__reviews"):
        return None
    found = warehouse.query_df("select item_id, review_ts_local as review_ts, title, text "
                               "from staging.stg_shop__reviews")
    return found if len(found) else None


@dg.asset(key=EVIDENCE, deps=[CUTOFF_INTERACTIONS, ITEM_DAYS, STAGED_REVIEWS], group_name=GROUP,
          partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
          kinds={"scikit-learn", "duckdb"},
          description="The cold-start list's gate: the content recommender ranks items held out from training at "
                      "the recommendations' folds, against the user's categories, the category's popularity and a "
                      "random order (ml/cold_start.py); the decision goes to monitoring.model_decisions.")
def cold_start_items_evidence(context: dg.AssetExecutionContext, settings: PipelineSettings,
                              warehouse: WarehouseResource,
                              recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    as_of = as_of_dates(context)[-1]
    protocol = protocol_of(settings, recommendation_policy, as_of)
    interactions = interactions_on(warehouse, protocol.folds)
    item_days = warehouse.query_df(
        "select user_id, item_id, activity_date, n_purchase from intermediate.int_user_item_daily "
        "where n_purchase > 0 and activity_date >= ? and activity_date < ?", [min(protocol.folds), as_of])
    descriptions, reviews = _descriptions(warehouse), _reviews(warehouse)
    rows = [measure(cold_start_fold(day, recommendation_policy.horizon_days, interactions[day], item_days,
                                    descriptions, reviews), {METHOD: ContentBased()})
            for day in protocol.folds if len(interactions[day])]
    decision = decide(rows, recommendation_policy.min_buyers, recommendation_policy.gate_margin)
    with warehouse.writer() as con:
        decisions.record(con, as_of_date=as_of, target=MODEL_NAME, trigger=decisions.trigger_of(context.run.tags),
                         dagster_run_id=context.run.run_id,
                         decision="published" if decision.publish else "not published", promoted=decision.publish,
                         candidate_family=METHOD, incumbent=decision.baseline or None, metric=f"recall_at_{K}",
                         candidate_score=decision.content, incumbent_score=decision.baseline_score,
                         margin=recommendation_policy.gate_margin, backtest_folds=rows, reason=decision.reason)
    (context.log.info if decision.publish else context.log.warning)(f"{MODEL_NAME}: {decision.reason}")
    table = pd.DataFrame([{"cutoff": r["cutoff"], "test_users": r["test_users"],
                           "held_out_with_text": r["held_out_with_text"],
                           **{name: r[name][f"recall_at_{K}"] for name in r if isinstance(r[name], dict)}}
                          for r in rows])
    return dg.MaterializeResult(metadata={
        "published": decision.publish, "reason": decision.reason,
        f"content_recall_at_{K}": decision.content, "strongest_text_free": decision.baseline,
        "folds": dg.MetadataValue.md(frame_to_markdown(table, float_format="{:.3f}") if len(table) else "none"),
    })


@dg.asset(key=COLD_START_ITEMS, deps=[EVIDENCE, INTERACTIONS, ITEM_DAYS, SCORING_POPULATION, STAGED_REVIEWS],
          group_name=GROUP, partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(),
          pool="duckdb", kinds={"scikit-learn", "duckdb"},
          description="predictions.cold_start_items: up to k items first seen in the last cold_start_window_days "
                      "each user of the scoring population may want, by their text (ml/content.py), with the reason "
                      "'described like <the user's item>'; published where the latest cold-start decision says so.")
def cold_start_items(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                     recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    dates = as_of_dates(context)
    latest = None
    if warehouse.has_table("monitoring", "model_decisions"):
        found = warehouse.query_df("select as_of_date, promoted, reason from monitoring.model_decisions "
                                   "where target = ? order by decided_at desc limit 1", [MODEL_NAME])
        latest = found.iloc[0] if len(found) else None
    if latest is None or not bool(latest.promoted):
        reason = latest.reason if latest is not None else "not decided yet: the training run measures the list"
        context.log.warning(f"{MODEL_NAME} not published: {reason}")
        _replace(warehouse, dates, None)  # a list withdrawn since an earlier run of these dates goes
        return dg.MaterializeResult(metadata={"published": False, "reason": reason, "dagster/row_count": 0})
    window = recommendation_policy.cold_start_window_days
    descriptions, reviews = _descriptions(warehouse), _reviews(warehouse)
    population = warehouse.query_df("select user_id, as_of_date from marts.fct_scoring_population "
                                    "where as_of_date in (select unnest(?))", [dates])
    population["as_of_date"] = pd.to_datetime(population.as_of_date).dt.date
    written, offered = [], {}
    for day in dates:
        first_seen = warehouse.query_df(
            "select item_id, min(activity_date) as first_seen from intermediate.int_user_item_daily "
            "where activity_date < ? group by 1 having min(activity_date) >= ?",
            [day, day - dt.timedelta(days=window)]).set_index("item_id").first_seen
        interactions = interactions_on(warehouse, [day])[day]
        categories = item_categories(interactions)
        texts = texts_at(day, descriptions, categories, reviews)
        candidates = new_items(first_seen, day, window).intersection(texts.index)
        offered[day] = len(candidates)
        lists = cold_start_lists(interactions, texts, candidates, population.user_id[population.as_of_date == day],
                                 recommendation_policy.per_user)
        written.append(lists.assign(as_of_date=day, category_id=lists.item_id.map(categories), model_name=MODEL_NAME,
                                    model_version=f"{METHOD} (decided {latest.as_of_date:%Y-%m-%d})",
                                    scored_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
    frame = pd.concat(written, ignore_index=True)
    _replace(warehouse, dates, frame)
    return dg.MaterializeResult(metadata={
        "published": True, "dagster/row_count": len(frame), "users": int(frame.user_id.nunique()) if len(frame) else 0,
        "new_items_offered": dg.MetadataValue.json({str(d): n for d, n in offered.items()}),
        "preview": dg.MetadataValue.md(frame_to_markdown(frame.head(10).drop(columns=["scored_at"]))
                                       if len(frame) else "no list"),
    })


def _replace(warehouse: WarehouseResource, dates: list[dt.date], frame: pd.DataFrame | None) -> None:
    """The dates' lists replaced by ``frame`` (None: none) in one transaction: a run killed midway leaves them as
    they were (a date whose new list is empty keeps no old one either)."""
    with warehouse.writer() as con:
        con.execute("create schema if not exists predictions")
        con.execute(table_ddl(MODEL_NAME))
        con.execute("begin transaction")
        try:
            con.execute(f"delete from predictions.{MODEL_NAME} where as_of_date in (select unnest(?))", [dates])
            if frame is not None and len(frame):
                con.register("_lists", frame)
                con.execute(f"insert into predictions.{MODEL_NAME} by name select * from _lists")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise


@dg.asset_check(asset=COLD_START_ITEMS, name="lists_offer_new_items_only", blocking=True, partitions_def=as_of_daily,
                pool="duckdb", description="predictions.cold_start_items: ranks 1..n per user without a gap or a "
                                           "repeated item, at most k items, every item first seen in the window "
                                           "before the date, none the user bought before it")
def lists_offer_new_items_only(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                               recommendation_policy: RecommendationPolicy) -> dg.AssetCheckResult:
    found = list_problems(warehouse, as_of_dates(context), recommendation_policy.per_user,
                          recommendation_policy.cold_start_window_days)
    passed = found.broken_lists == 0 and found.not_new == 0 and found.bought_before == 0
    return dg.AssetCheckResult(passed=bool(passed), metadata={k: int(v) for k, v in found.items()})


def list_problems(warehouse: WarehouseResource, dates: list[dt.date], per_user: int, window_days: int) -> pd.Series:
    """The dates' rows, and the lists with a gap, a repeat or more than ``per_user`` items (broken_lists), the rows
    of an item first seen before the window (not_new) and of an item the user bought before (bought_before)."""
    return warehouse.query_df(f"""
        select
            (select count(*) from predictions.{MODEL_NAME} where as_of_date in (select unnest($1))) as rows,
            (select count(*) from (select user_id, as_of_date from predictions.{MODEL_NAME}
               where as_of_date in (select unnest($1)) group by 1, 2
               having max(rank) <> count(*) or min(rank) <> 1 or count(distinct item_id) <> count(*)
                   or count(*) > $2)) as broken_lists,
            (select count(*) from predictions.{MODEL_NAME} p
               where p.as_of_date in (select unnest($1)) and (
                   select min(d.activity_date) from intermediate.int_user_item_daily d
                   where d.item_id = p.item_id and d.activity_date < p.as_of_date)
                 < p.as_of_date - cast($3 as integer)) as not_new,
            (select count(*) from predictions.{MODEL_NAME} p join marts.fct_user_item_interactions i
               on i.user_id = p.user_id and i.item_id = p.item_id and i.as_of_date = p.as_of_date
               where p.as_of_date in (select unnest($1)) and i.purchases > 0) as bought_before
    """, [dates, per_user, window_days]).iloc[0]


@dg.definitions
def cold_start_defs() -> dg.Definitions:
    return dg.Definitions(assets=[cold_start_items_evidence, cold_start_items],
                          asset_checks=[lists_offer_new_items_only])
