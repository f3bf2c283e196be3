"""The feedback loop's measurements: realised performance of past predictions, and drift of the features and
scores from the champion's training data. Both say, in their metadata, which targets need a retrain; the
retraining sensor (automation.py) reads that and requests the training run."""

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from dagster_project.asset_keys import CLV, predictions_key
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.recommendations import NEW_ITEMS, NEXT_ITEMS
from dagster_project.defs.resources import (
    MlflowStore,
    MonitoringPolicy,
    PipelineSettings,
    RecommendationPolicy,
    ShopcastDbt,
    WarehouseResource,
    as_of_dates,
)
from dagster_project.defs.reviews import with_version_review_features
from dagster_project.defs.sequences import add_scoring_tokens
from dagster_project.defs.training import with_clv
from dagster_project.markdown import figure_to_markdown, frame_to_markdown
from dagster_project.targets import TARGETS
from dagster_project.warehouse import hash_sample_sql, replace_dates
from ml.evaluate import predict_scores
from ml.features import to_matrix
from ml.monitoring import (
    SCORE_FEATURE,
    calibration_drifts,
    drift_summary,
    drift_table,
    performance_drops,
    realised_performance,
)
from ml.recommendations import MODEL_NAME as RECOMMENDER
from ml.recommendations import realised_lists, recall_drop
from ml.registry import CHAMPION, load_by_alias, training_dates, version_by_alias
from ml.sequences import is_token

OUTCOMES = dg.AssetKey(["monitoring", "fct_prediction_outcomes"])
PERFORMANCE = dg.AssetKey(["monitoring", "prediction_performance"])
DRIFT = dg.AssetKey(["monitoring", "feature_drift"])
RETRAIN_METADATA = "retrain_requested"   # {target: reason}: what the retraining sensor reads
REFERENCE_ROWS = 50_000                  # the training-data sample drift is measured against (a hash sample)
# the scoring population's sample per date it is compared with (a hash sample: the same users day after day); the
# PSI on 200k rows differs from the whole population's by at most ~0.001 (simulated; the warn limit is 0.1), at a
# fraction of the load and scoring
CURRENT_ROWS = 200_000
REGRESSION = {t.name for t in TARGETS.values() if t.is_regression}
LISTS_LOOKBACK_DAYS = 90  # the recommendation lists judged on each run: the last 90 days' with a closed horizon


def _performance_plot(table: pd.DataFrame):
    figure, axes = plt.subplots(1, len(TARGETS), figsize=(5 * len(TARGETS), 3.2), squeeze=False)
    for ax, target in zip(axes[0], TARGETS.values()):
        rows = table[table.target == target.name]
        for version, part in rows.groupby("model_version"):
            ax.plot(pd.to_datetime(part.as_of_date), part[target.primary_metric], marker=".", label=f"v{version}")
        ax.set_title(f"{target.name}: realised {target.primary_metric}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        if len(rows):
            ax.legend(fontsize=7)
    return figure


def realised_recommendations(warehouse: WarehouseResource, horizon_days: int, as_of) -> pd.DataFrame:
    """Recall@10 and hit rate of the lists served in the last LISTS_LOOKBACK_DAYS whose horizon has closed."""
    first = pd.Timestamp(as_of) - pd.Timedelta(days=LISTS_LOOKBACK_DAYS + horizon_days)
    if not all(warehouse.has_table(s, t) for s, t in (("predictions", "next_items"), ("predictions", "new_items"),
                                                       ("intermediate", "int_user_item_daily"))):
        return realised_lists(pd.DataFrame(columns=["list", "user_id", "as_of_date", "rank", "item_id",
                                                    "model_version"]), pd.DataFrame(columns=["user_id", "item_id",
                                                                                             "activity_date"]),
                              horizon_days, as_of)
    # the lists as served (the fallback's rows included), under the version of the champion that served them
    lists = warehouse.query_df(" union all ".join(f"""
        select '{table}' as list, l.user_id, l.as_of_date, l.rank, l.item_id, v.model_version
        from predictions.{table} l
        join (select as_of_date, coalesce(max(model_version) filter (where model_version <> 'fallback'),
                                          'fallback') as model_version
              from predictions.{table} where as_of_date >= $1 group by 1) v on v.as_of_date = l.as_of_date
        where l.as_of_date >= $1""" for table in ("next_items", "new_items")), [first])
    purchases = warehouse.query_df("select user_id, item_id, activity_date from intermediate.int_user_item_daily "
                                   "where n_purchase > 0 and user_id in (select distinct user_id from "
                                   "predictions.next_items where as_of_date >= ?)", [first])
    lists["as_of_date"] = pd.to_datetime(lists.as_of_date).dt.date
    return realised_lists(lists, purchases, horizon_days, as_of)


@dg.asset(key=PERFORMANCE, deps=[OUTCOMES, NEXT_ITEMS, NEW_ITEMS], group_name="monitoring", partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"python", "duckdb"},
          description="Realised ROC-AUC, PR-AUC, top-decile lift and calibration (normalized Gini, Spearman and MAE "
                      "for amounts) per target, as-of date and model version, once the label windows have closed; "
                      "for the recommendation lists (next_items, new_items), Recall@10, NDCG@10 and hit rate.")
def prediction_performance(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                           monitoring_policy: MonitoringPolicy,
                           recommendation_policy: RecommendationPolicy) -> dg.MaterializeResult:
    outcomes = warehouse.query_df("select target, as_of_date, model_name, model_version, score, outcome "
                                  "from monitoring.fct_prediction_outcomes")
    as_of = as_of_dates(context)[-1]
    lists = realised_recommendations(warehouse, recommendation_policy.horizon_days, as_of)
    table = pd.concat([realised_performance(outcomes, REGRESSION), lists], ignore_index=True) \
        .assign(computed_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    with warehouse.writer() as con:  # recomputed whole from the outcomes: the table always matches them
        con.register("performance", table)
        con.execute("create schema if not exists monitoring")
        con.execute("create or replace table monitoring.prediction_performance as "
                    "select * replace (cast(as_of_date as date) as as_of_date) from performance")
        con.unregister("performance")
    store = mlflow.store()
    found: dict[str, list[str]] = {}
    for reasons in (performance_drops(table, store, TARGETS.values(), monitoring_policy.drop),
                    calibration_drifts(table, store, TARGETS.values(), *monitoring_policy.calibration_band)):
        for target, reason in reasons.items():
            found.setdefault(target, []).append(reason)
    listed = recall_drop(lists, version_by_alias(store, RECOMMENDER, CHAMPION), monitoring_policy.drop)
    if listed:
        found.setdefault(RECOMMENDER, []).append(listed)
    signals = {target: "; ".join(reasons) for target, reasons in found.items()
               if monitoring_policy.may_retrain(version_by_alias(store, target, CHAMPION), as_of_dates(context)[-1])}
    for target, reason in signals.items():
        context.log.warning(f"{target}: {reason}: a retrain will be requested")
    latest = table.sort_values("as_of_date").groupby("target").tail(1)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table), "closed_predictions": len(outcomes),
        RETRAIN_METADATA: dg.MetadataValue.json(signals),
        "latest": dg.MetadataValue.md(frame_to_markdown(latest.drop(columns=["computed_at"]), "{:.3f}")
                                      if len(latest) else "no closed label window yet"),
        "performance_over_time": dg.MetadataValue.md(figure_to_markdown(_performance_plot(table), "realised")),
    })


DRIFT_COLOURS = {"ok": "tab:green", "warn": "tab:orange", "fail": "tab:red", "info": "tab:grey"}


def _psi_plot(latest: pd.DataFrame, limits):
    targets = sorted(latest.target.unique())
    figure, axes = plt.subplots(1, max(1, len(targets)), figsize=(5 * max(1, len(targets)), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        rows = latest[latest.target == target].nlargest(15, "psi").iloc[::-1]
        colours = rows.status.map(DRIFT_COLOURS)
        # an informational feature (expected to move with time: tenure, recency) is drawn and named as such: its
        # PSI is shown, never judged, so a long grey bar beside "warn 0, fail 0" is not an alarm
        labels = [f"{f} (informational)" if s == "info" else "the score" if f == SCORE_FEATURE else f
                  for f, s in zip(rows.feature, rows.status)]
        ax.barh(labels, rows.psi, color=colours)
        ax.axvline(limits.psi_warn, color="tab:orange", linestyle="--")
        ax.axvline(limits.psi_fail, color="tab:red", linestyle="--")
        ax.set_title(f"{target}: PSI, top 15", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    handles = [Patch(color=colour, label=label) for label, colour in (
        ("ok", DRIFT_COLOURS["ok"]), (f"warn (> {limits.psi_warn})", DRIFT_COLOURS["warn"]),
        (f"fail (> {limits.psi_fail})", DRIFT_COLOURS["fail"]), ("informational: not judged", DRIFT_COLOURS["info"]))]
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def _champion_reference(warehouse: WarehouseResource, store, target):
    """(model, registry entry, reference rows): the champion and a sample of the rows of its newest training
    cutoff. The newest one, not all of them pooled: features that trend with time (tenure, the BG/NBD outputs of a
    young history) would make a pool of twelve weeks look drifted against any single day, the training day too."""
    model, entry = load_by_alias(store, target.name, CHAMPION)
    newest = max(training_dates(store, entry))
    # the features of that date (feat_user_daily keeps every date; fct_training_set holds today's cutoffs only),
    # sampled in the warehouse: a date of a large shop holds millions of users
    reference = warehouse.query_df(with_clv(hash_sample_sql(
        "marts.feat_user_daily", REFERENCE_ROWS, f"as_of_date = cast($1 as date) and ({target.population_sql})")),
        [newest])
    if reference.empty:
        raise ValueError(f"{target.name}: no feature rows for the champion v{entry.version}'s training date "
                         f"{newest}: were they deleted from marts.feat_user_daily?")
    return model, entry, reference


@dg.asset(key=DRIFT, group_name="monitoring", partitions_def=as_of_daily,
          deps=[dg.AssetKey(["marts", "fct_scoring_population"]), dg.AssetKey(["marts", "feat_user_daily"]),
                CLV, *[predictions_key(t) for t in TARGETS]],
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"python", "duckdb"},
          description="Population stability index of every model feature and of the score, between each champion's "
                      "training data and the scoring population of each as-of date; null rates on both sides.")
def feature_drift(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                  monitoring_policy: MonitoringPolicy, dbt: ShopcastDbt,
                  settings: PipelineSettings) -> dg.MaterializeResult:
    dates, limits, store = as_of_dates(context), monitoring_policy.limits(), mlflow.store()
    tables, signals = [], {}
    for target in TARGETS.values():
        if version_by_alias(store, target.name, CHAMPION) is None:
            continue  # nothing published, nothing to drift from
        model, entry, reference = _champion_reference(warehouse, store, target)
        version = entry.version
        columns = list(model.feature_names_in_)
        # a sequence model's tokens (hashed items, event positions) are inputs, not features whose distribution
        # means anything: the drift of its aggregated features is compared, and its score, which the tokens move
        features = [c for c in columns if not is_token(c)]
        current = warehouse.query_df(with_clv(hash_sample_sql(
            "marts.fct_scoring_population", CURRENT_ROWS,
            f"as_of_date between $1 and $2 and ({target.population_sql})")), [dates[0], dates[-1]])
        reference, current = (with_version_review_features(
            warehouse, store, entry, model, add_scoring_tokens(context, model, rows, dbt, settings, warehouse,
                                                               sorted(set(pd.to_datetime(rows.as_of_date).dt.date))))
                              for rows in (reference, current))
        reference_scores = predict_scores(model, to_matrix(reference, columns), target.is_regression)
        for as_of, rows in current.groupby("as_of_date"):
            scores = (predict_scores(model, to_matrix(rows, columns), target.is_regression)
                      if set(columns) <= set(rows.columns) else None)
            table = drift_table(reference, rows, features, limits, reference_scores, scores)
            tables.append(table.assign(as_of_date=pd.Timestamp(as_of).date(), target=target.name,
                                       model_version=version))
            failed = table[table.status == "fail"]
            if len(failed) and pd.Timestamp(as_of).date() == dates[-1] and monitoring_policy.may_retrain(entry, as_of):
                signals[target.name] = "drift: " + "; ".join(f"{f.feature} {f.problem}" for f in failed.head(5).itertuples())
    drift = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[
        "feature", "psi", "null_rate_reference", "null_rate_current", "status", "problem", "reference_rows",
        "current_rows", "as_of_date", "target", "model_version"])
    drift["computed_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    if len(drift):
        with warehouse.writer() as con:
            replace_dates(con, "monitoring", "feature_drift", drift)
    for target, reason in signals.items():
        context.log.warning(f"{target}: {reason}: a retrain will be requested")
    latest = drift[drift.as_of_date == dates[-1]] if len(drift) else drift
    summary = drift_summary(latest)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(drift), RETRAIN_METADATA: dg.MetadataValue.json(signals),
        "summary": dg.MetadataValue.md(frame_to_markdown(summary, "{:.3f}") if len(summary) else "no champion yet"),
        "psi_bars": dg.MetadataValue.md(figure_to_markdown(_psi_plot(latest, limits), "PSI") if len(latest)
                                        else "no champion yet"),
    })


def _latest_drift(warehouse: WarehouseResource, dates) -> pd.DataFrame:
    if not warehouse.has_table("monitoring", "feature_drift"):
        return pd.DataFrame(columns=["feature", "status", "psi", "problem", "target"])
    return warehouse.query_df("select * from monitoring.feature_drift where as_of_date = ?", [dates[-1]])


@dg.asset_check(asset=DRIFT, partitions_def=as_of_daily, pool="duckdb",
                description="No model feature, and no score distribution, has a PSI above the warn limit "
                            "(psi_warn: WARN) or the fail limit (psi_fail: ERROR).")
def feature_drift_within_limits(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                                monitoring_policy: MonitoringPolicy) -> dg.AssetCheckResult:
    limits = monitoring_policy.limits()
    rows = _latest_drift(warehouse, as_of_dates(context))
    rows = rows[rows.psi.notna() & (rows.status != "info")]  # informational features are shown, never judged
    worst = rows[rows.psi > limits.psi_warn].sort_values("psi", ascending=False)
    severity = dg.AssetCheckSeverity.ERROR if (worst.psi > limits.psi_fail).any() else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=worst.empty, severity=severity, metadata={
        "max_psi": float(rows.psi.max()) if len(rows) else 0.0, "above_warn": len(worst),
        "above_fail": int((worst.psi > limits.psi_fail).sum()),
        "worst": dg.MetadataValue.md(frame_to_markdown(worst[["target", "feature", "psi"]].head(10), "{:.3f}")
                                     if len(worst) else "none"),
    })


@dg.asset_check(asset=DRIFT, partitions_def=as_of_daily, pool="duckdb",
                description="Every model feature is present in the scoring data (ERROR if not) and no feature's "
                            "share of missing values jumped by more than null_rate_jump (WARN).")
def features_present_and_null_rates_stable(context: dg.AssetCheckExecutionContext,
                                           warehouse: WarehouseResource) -> dg.AssetCheckResult:
    rows = _latest_drift(warehouse, as_of_dates(context))
    missing = rows[rows.problem.fillna("").str.contains("missing from the scoring data")]
    jumps = rows[rows.problem.fillna("").str.contains("null rate")]
    severity = dg.AssetCheckSeverity.ERROR if len(missing) else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=missing.empty and jumps.empty, severity=severity, metadata={
        "missing_features": dg.MetadataValue.json(sorted(set(missing.feature))),
        "null_rate_jumps": dg.MetadataValue.json(sorted(set(jumps.feature))),
    })


@dg.asset_check(asset=PERFORMANCE, partitions_def=as_of_daily, pool="duckdb",
                description="Each champion's realised primary metric (last 7 closed dates) is within "
                            "performance_drop of the figure it was promoted on (WARN otherwise).")
def realised_performance_holds(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                               mlflow: MlflowStore, monitoring_policy: MonitoringPolicy) -> dg.AssetCheckResult:
    table = warehouse.query_df("select * from monitoring.prediction_performance")
    drops = performance_drops(table, mlflow.store(), TARGETS.values(), monitoring_policy.drop)
    return dg.AssetCheckResult(passed=not drops, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"drops": dg.MetadataValue.json(drops)})


@dg.asset_check(asset=PERFORMANCE, partitions_def=as_of_daily, pool="duckdb",
                description="Each champion's scores over its last 7 closed dates, summed, are within the "
                            "expected/observed band of what then happened (WARN otherwise; the retraining sensor "
                            "then asks for a retrain).")
def realised_scores_add_up(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                           mlflow: MlflowStore, monitoring_policy: MonitoringPolicy) -> dg.AssetCheckResult:
    table = warehouse.query_df("select * from monitoring.prediction_performance")
    drifts = calibration_drifts(table, mlflow.store(), TARGETS.values(), *monitoring_policy.calibration_band)
    return dg.AssetCheckResult(passed=not drifts, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"outside_band": dg.MetadataValue.json(drifts)})


@dg.definitions
def monitoring_defs() -> dg.Definitions:
    return dg.Definitions(assets=[prediction_performance, feature_drift],
                          asset_checks=[feature_drift_within_limits, features_present_and_null_rates_stable,
                                        realised_performance_holds, realised_scores_add_up])
