"""dbt models as partitioned assets. Staging and the marts are two steps so that the raw-events suite, a
blocking check on staging, can stop the marts from being built on a bad day of data. The audiences and the
monitoring models are a third step: they read the prediction tables the scoring assets write, downstream of the
marts."""


import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg
import yaml
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from dagster_project.dbt_project import dbt_project
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import (
    PipelineSettings,
    RecommendationPolicy,
    ShopcastDbt,
    WarehouseResource,
    as_of_dates,
)
from dagster_project.faults import failpoint
from dagster_project.markdown import frame_to_markdown
from dagster_project.settings import DBT_PROJECT_DIR
from dagster_project.warehouse import column_exists, event_day_bounds, table_exists


class ShopcastTranslator(DagsterDbtTranslator):
    """Groups assets by dbt folder (staging, intermediate, marts); sources keep their schema as key prefix."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "model":
            return dbt_resource_props["fqn"][1]
        return super().get_group_name(dbt_resource_props)

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.key == TRAINING_SET:  # it joins the features of the cutoffs that asset computes
            return spec.replace_attributes(deps=[*spec.deps, dg.AssetDep(TRAINING_CUTOFF_FEATURES)])
        return spec


TRAINING_SET = dg.AssetKey(["marts", "fct_training_set"])
TRAINING_CUTOFF_FEATURES = dg.AssetKey(["marts", "training_cutoff_features"])
STAGED_EVENTS = dg.AssetKey(["staging", "stg_shop__events"])
STAGED_REVIEWS = dg.AssetKey(["staging", "stg_shop__reviews"])  # read by the review features (defs/reviews.py)
# What a cutoff's training example reads: its features, its BG/NBD inputs, and the activity they are summed from.
CUTOFF_FEATURE_MODELS = "intermediate feat_user_daily feat_user_rfm"
translator = ShopcastTranslator()
BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]  # unit tests run in CI, not on every partition


def dates_per_build(dates: list[dt.date], rows_per_date: int, rows_per_build: int) -> list[list[dt.date]]:
    """``dates`` in dbt builds of as many dates as keep each build's input under ``rows_per_build`` (at least one
    date a build). A build over several dates holds (and spills) all of their inputs before it aggregates: at 100M
    events ten interaction dates at once filled a 56 GB disk. On a small shop every date goes in one build: each dbt
    invocation costs a few seconds of its own, which was most of a small run's per-date steps."""
    size = max(1, rows_per_build // max(rows_per_date, 1))
    return [dates[i:i + size] for i in range(0, len(dates), size)]


def build_selection(dbt: ShopcastDbt, selection: str, run_vars: dict, name: str) -> None:
    """dbt build of ``selection`` (models and their tests) for ``run_vars``, outside the dbt assets: the steps that
    build older dates of a mart (training cutoffs, recommendation folds, sequences) report their own metadata."""
    dbt.build([*BUILD_ARGS, "--select", selection], run_vars, name=name, manifest=dbt_project.manifest_path,
              dagster_dbt_translator=translator).wait()


def interaction_dates_kept(settings: PipelineSettings, recommendation_policy: RecommendationPolicy,
                           as_of: dt.date) -> list[str]:
    """The older as-of dates of marts.fct_user_item_interactions a run at ``as_of`` keeps: the recommenders'
    folds and snapshots (the mart's post-hook deletes the rest)."""
    dates = recommendation_policy.dates(as_of, settings.windows(as_of).cadence_days)
    return [d.isoformat() for d in dates.all]


def _build(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
           recommendation_policy: RecommendationPolicy, crash_test_point: str | None = None):
    """(The dbt assets take the ``warehouse`` resource only for its run lock: dbt writes the same file.)"""
    dates = as_of_dates(context)
    run_vars = {**settings.dbt_run_vars(dates),
                "interaction_dates_kept": interaction_dates_kept(settings, recommendation_policy, dates[-1])}
    context.log.info(f"dbt build for as-of dates {dates[0]} .. {dates[-1]}"
                     + (f" (only {', '.join(map(str, dates))})" if run_vars["as_of_dates"] else ""))
    for number, event in enumerate(dbt.build(BUILD_ARGS, run_vars, context=context).stream()):
        if number == 1 and crash_test_point:  # the first result is in, dbt is building the rest
            failpoint(crash_test_point)
        yield event


@dbt_assets(manifest=dbt_project.manifest_path, select="staging", dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_staging")
def dbt_staging(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
                warehouse: WarehouseResource, recommendation_policy: RecommendationPolicy):
    yield from _build(context, dbt, settings, recommendation_policy)


# the event sequences (tag:sequences) are built for the sequence models where they ask for them, not by every run
@dbt_assets(manifest=dbt_project.manifest_path, select="intermediate marts", exclude="tag:sequences",
            dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_marts")
def dbt_marts(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
              warehouse: WarehouseResource, recommendation_policy: RecommendationPolicy):
    yield from _build(context, dbt, settings, recommendation_policy, crash_test_point="dbt.mid_build")


@dbt_assets(manifest=dbt_project.manifest_path, select="audiences monitoring", dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_audiences")
def dbt_audiences(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
                  warehouse: WarehouseResource, recommendation_policy: RecommendationPolicy):
    yield from _build(context, dbt, settings, recommendation_policy)


@dg.asset(key=TRAINING_CUTOFF_FEATURES, deps=[STAGED_EVENTS], group_name="marts", partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"dbt", "duckdb"},
          description="The features (feat_user_daily, feat_user_rfm) of the training cutoffs of the run's date that "
                      "are not built yet, computed by dbt over those dates alone (their dbt tests included), so that "
                      "a first run, or a retrain on any weekday, trains on every cutoff without backfilling every "
                      "day. A cutoff's features use only events before it, so a cutoff built once is final.")
def training_cutoff_features(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
                             warehouse: WarehouseResource) -> dg.MaterializeResult:
    cutoffs = settings.training_cutoff_dates(as_of_dates(context)[-1])
    missing, before_data = missing_feature_dates(warehouse, cutoffs, settings.business_timezone)
    if missing:
        context.log.info(f"dbt build of the features of {len(missing)} training cutoffs: {', '.join(map(str, missing))}")
        build_selection(dbt, CUTOFF_FEATURE_MODELS, settings.dbt_run_vars(missing), name="training_cutoff_features")
    rows = warehouse.query_df("select as_of_date, count(*) as users from marts.feat_user_daily "
                              "where as_of_date in (select unnest(?)) group by 1 order by 1", [cutoffs])
    return dg.MaterializeResult(metadata={
        "cutoffs": len(cutoffs), "computed": len(missing), "already_built": len(cutoffs) - len(missing) - len(before_data),
        "before_first_event": len(before_data), "dagster/row_count": int(rows.users.sum()),
        "users_per_cutoff": dg.MetadataValue.md(frame_to_markdown(rows)),
    })


def features_version() -> int:
    """The version of feat_user_daily's columns (dbt var features_version), stamped on every row it writes."""
    return int(yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]["features_version"])


def missing_feature_dates(warehouse: WarehouseResource, dates: list[dt.date], business_timezone: str
                          ) -> tuple[list[dt.date], list[dt.date]]:
    """(dates without features yet, or with features an older version of the columns computed; dates on or before
    the first day with events: no features can exist)."""
    with warehouse.reader() as con:
        first_day, _ = event_day_bounds(con, business_timezone)
        built = set()
        if all(table_exists(con, "marts", t) for t in ("feat_user_daily", "feat_user_rfm")) \
                and column_exists(con, "marts", "feat_user_daily", "features_version"):
            built = {row[0] for row in con.execute(
                "select as_of_date from marts.feat_user_daily where as_of_date in (select unnest(?)) "
                "group by 1 having min(features_version) = ? intersect "
                "select as_of_date from marts.feat_user_rfm where as_of_date in (select unnest(?))",
                [dates, features_version(), dates]).fetchall()}
    before_data = sorted(d for d in dates if first_day is None or d <= first_day)
    return sorted(set(dates) - built - set(before_data)), before_data
