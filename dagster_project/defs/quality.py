"""Great Expectations suites as blocking asset checks: a failed suite stops everything downstream.

Each check validates bounded batches only: the events of one business day, or the mart rows of one as-of date.
"""


import datetime as dt

import dagster as dg

from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import PipelineSettings, WarehouseResource, as_of_dates
from expectations import SuiteValidator, ValidationSummary, validate


def _result(summaries: list[ValidationSummary]) -> dg.AssetCheckResult:
    failed = [s for s in summaries if not s.success]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "batches_validated": len(summaries),
            "batches_failed": len(failed),
            "expectations_evaluated": sum(s.evaluated for s in summaries),
            "result": dg.MetadataValue.md("\n\n".join(s.markdown() for s in (failed or summaries[-1:]))),
            "data_docs": dg.MetadataValue.url(summaries[-1].data_docs_url or ""),
        },
    )


def _validate_per_date(context, warehouse, settings, suite: str, sql: str, date_of) -> dg.AssetCheckResult:
    """One batch per as-of date of the run, each loaded alone: memory stays bounded in a long backfill."""
    validator = SuiteValidator(settings.gx_dir, suite)
    summaries = []
    for as_of in as_of_dates(context):
        day = date_of(as_of)
        summaries.append(validator.run(warehouse.query_df(sql, [day]), batch=f"{suite}-{day.isoformat()}"))
    return _result(validator.finish(summaries))


@dg.asset_check(asset=["staging", "stg_shop__events"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="raw_events suite on the last business day before each as-of date of the run.")
def raw_events_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                     settings: PipelineSettings) -> dg.AssetCheckResult:
    return _validate_per_date(context, warehouse, settings, "raw_events",
                              "select * from staging.stg_shop__events where event_date = ?",
                              lambda as_of: as_of - dt.timedelta(days=1))


@dg.asset_check(asset=["marts", "feat_user_daily"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="feat_user_daily suite on the feature rows of each as-of date of the run.")
def feat_user_daily_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                          settings: PipelineSettings) -> dg.AssetCheckResult:
    return _validate_per_date(context, warehouse, settings, "feat_user_daily",
                              "select * from marts.feat_user_daily where as_of_date = ?", lambda as_of: as_of)


@dg.asset_check(asset=["marts", "fct_scoring_population"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="fct_scoring_population suite on the rows of each as-of date of the run.")
def scoring_population_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                             settings: PipelineSettings) -> dg.AssetCheckResult:
    return _validate_per_date(context, warehouse, settings, "fct_scoring_population",
                              "select * from marts.fct_scoring_population where as_of_date = ?",
                              lambda as_of: as_of)


@dg.asset_check(asset=["marts", "fct_training_set"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="fct_training_set suite: labels binary, label rates sane, enough cutoffs.")
def training_set_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                       settings: PipelineSettings) -> dg.AssetCheckResult:
    df = warehouse.query_df("select * from marts.fct_training_set")
    last = as_of_dates(context)[-1]
    return _result([validate(settings.gx_dir, "fct_training_set", df, batch=f"fct_training_set-{last}")])
