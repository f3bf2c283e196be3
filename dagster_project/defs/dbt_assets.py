"""dbt models as partitioned assets. Staging and the marts are two steps so that the raw-events suite, a
blocking check on staging, can stop the marts from being built on a bad day of data. The audiences and the
monitoring models are a third step: they read the prediction tables the scoring assets write, downstream of the
marts."""


import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from dagster_project.dbt_project import dbt_project
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import PipelineSettings, WarehouseResource, as_of_dates
from dagster_project.faults import failpoint


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


translator = ShopcastTranslator()
BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]  # unit tests run in CI, not on every partition


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings,
           crash_test_point: str | None = None):
    """(The dbt assets take the ``warehouse`` resource only for its run lock: dbt writes the same file.)"""
    dates = as_of_dates(context)
    dbt_vars = settings.dbt_vars(dates)
    context.log.info(f"dbt build for as-of dates {dates[0]} .. {dates[-1]}"
                     + (f" (only {', '.join(map(str, dates))})" if dbt_vars["as_of_dates"] else ""))
    for number, event in enumerate(dbt.cli([*BUILD_ARGS, "--vars", json.dumps(dbt_vars)], context=context).stream()):
        if number == 1 and crash_test_point:  # the first result is in, dbt is building the rest
            failpoint(crash_test_point)
        yield event


@dbt_assets(manifest=dbt_project.manifest_path, select="staging", dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_staging")
def dbt_staging(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings,
                warehouse: WarehouseResource):
    yield from _build(context, dbt, settings)


@dbt_assets(manifest=dbt_project.manifest_path, select="intermediate marts", dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_marts")
def dbt_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings,
              warehouse: WarehouseResource):
    yield from _build(context, dbt, settings, crash_test_point="dbt.mid_build")


@dbt_assets(manifest=dbt_project.manifest_path, select="audiences monitoring", dagster_dbt_translator=translator,
            partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
            name="dbt_audiences")
def dbt_audiences(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings,
                  warehouse: WarehouseResource):
    yield from _build(context, dbt, settings)
