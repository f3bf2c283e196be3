"""Great Expectations suites as blocking asset checks: a failed suite stops everything downstream.

Each check validates bounded batches only: the events of one business day, or the mart rows of one as-of date.
"""


import datetime as dt
import json

import dagster as dg

from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import PipelineSettings, WarehouseResource, as_of_dates
from dagster_project.defs.training import TRAINING_SAMPLE, TRAINING_SAMPLE_TABLE
from dagster_project.warehouse import quote_identifier
from expectations import SuiteValidator, ValidationSummary, suite_columns

# What a failed check tells the CLI (runs._failure_message): one line of explanation, and every failed expectation
# with its batch (the partition or days), observed value and bound.
EXPLANATION = "explanation"
FAILED_EXPECTATIONS = "failed_expectations"


def _result(summaries: list[ValidationSummary], explanation: str | None = None, **extra) -> dg.AssetCheckResult:
    failed = [s for s in summaries if not s.success]
    details = [{"batch": s.batch, **f} for s in failed for f in s.failed]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            **extra,
            **({EXPLANATION: explanation} if failed and explanation else {}),
            FAILED_EXPECTATIONS: dg.MetadataValue.json(json.loads(json.dumps(details, default=str))),
            "batches_validated": len(summaries),
            "batches_failed": len(failed),
            "expectations_evaluated": sum(s.evaluated for s in summaries),
            "result": dg.MetadataValue.md("\n\n".join(s.markdown() for s in (failed or summaries[-1:]))),
            # the first failed batch's page (what a user opens the link for), else the newest's
            "data_docs": dg.MetadataValue.url((failed or summaries)[0 if failed else -1].data_docs_url or ""),
        },
    )


# Rows per validated batch: a long backfill is validated in batches of whole days, each loaded alone, so that
# memory stays bounded while the per-batch overhead of Great Expectations is paid a few times, not once a day.
MAX_BATCH_ROWS = 500_000


def _batches(days: list[dt.date], rows_per_day: dict[dt.date, int]) -> list[list[dt.date]]:
    batches, current, size = [], [], 0
    for day in days:
        rows = rows_per_day.get(day, 0)
        if current and size + rows > MAX_BATCH_ROWS:
            batches.append(current)
            current, size = [], 0
        current.append(day)
        size += rows
    return batches + ([current] if current else [])


def _rows_per_day(warehouse, table: str, date_column: str, days: list[dt.date] | None) -> dict[dt.date, int]:
    """Rows per day of ``table``, of the days first .. last of ``days`` (or of every day, with None)."""
    where = f"where {date_column} between ? and ?" if days else ""
    counts = warehouse.query_df(f"select {date_column} as day, count(*) as n from {table} {where} group by 1",
                                [days[0], days[-1]] if days else [])
    return {d.date() if hasattr(d, "date") else d: int(n) for d, n in zip(counts.day, counts.n)}


def _validate_days(context, warehouse, settings, suite: str, table: str, date_column: str,
                   days: list[dt.date], empty_days_fail: bool = True,
                   rows_per_day: dict[dt.date, int] | None = None, explain_empty=None) -> dg.AssetCheckResult:
    """Validate ``table`` for the given days, batch by batch. A day without rows fails the suite, unless
    ``empty_days_fail`` is off (shops close on some days): then empty days are listed, and only a run whose days
    are all empty fails. (``rows_per_day``: the rows of those days, when the caller has counted them already.)"""
    rows_per_day = rows_per_day if rows_per_day is not None else _rows_per_day(warehouse, table, date_column, days)
    extra = {}
    empty = [d for d in days if rows_per_day.get(d, 0) == 0]
    if not empty_days_fail:
        extra = {"days_without_rows": len(empty),
                 "days_without_rows_list": ", ".join(d.isoformat() for d in empty[:30]) or "-"}
        days = [d for d in days if d not in set(empty)] or days
    if explain_empty and empty and set(days) <= set(empty):
        extra["explanation"] = explain_empty(empty)
    # the features' population window is a setting: their suite's bounds follow it
    params = {"active_window_days": settings.active_window_days} if suite == "feat_user_daily" else {}
    validator = SuiteValidator(settings.gx_dir, suite, **params)
    read = suite_columns(suite)
    columns = ", ".join(map(quote_identifier, read)) if read else "*"  # only what the suite reads
    summaries = []
    for batch in _batches(days, rows_per_day):
        if any(rows_per_day.get(day, 0) == 0 for day in batch):  # validate each empty day alone: it fails
            for day in batch:
                frame = warehouse.query_df(f"select {columns} from {table} where {date_column} = ?", [day])
                summaries.append(validator.run(frame, batch=f"{suite}-{day.isoformat()}"))
            continue
        frame = warehouse.query_df(f"select {columns} from {table} where {date_column} between ? and ?",
                                   [batch[0], batch[-1]])
        name = batch[0].isoformat() + (f"..{batch[-1].isoformat()}" if len(batch) > 1 else "")
        summaries.append(validator.run(frame, batch=f"{suite}-{name}"))
    return _result(validator.finish(summaries, settings.data_docs_url), **extra)


def _empty_newest_day(empty: list[dt.date]) -> str:
    day = max(empty)
    return (f"no events on business day {day}, the day before the as-of date {day + dt.timedelta(days=1)}: a "
            "source outage or a closed day; a run never scores a day it has no events for (load that day's "
            "events, or choose another --as-of). Empty days earlier in the history are days without activity "
            "(check events_every_day warns)")


@dg.asset_check(asset=["staging", "stg_shop__events"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="raw_events suite on the business day before each as-of date of the run, in batches of days.")
def raw_events_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                     settings: PipelineSettings) -> dg.AssetCheckResult:
    days = [as_of - dt.timedelta(days=1) for as_of in as_of_dates(context)]
    # Empty days: in a range they are listed and skipped (a closed day, an outage: GA exports miss days); a run
    # whose days are all empty (a daily run after a day without events) is blocked, and says why in one line.
    return _validate_days(context, warehouse, settings, "raw_events", "staging.stg_shop__events", "event_date", days,
                          empty_days_fail=False, explain_empty=_empty_newest_day)


@dg.asset_check(asset=["staging", "stg_shop__events"], partitions_def=as_of_daily, pool="duckdb",
                description="Warns (does not block) when a business day of the run has no events: a closed day, "
                            "or a feed that stopped.")
def events_every_day(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    days = [as_of - dt.timedelta(days=1) for as_of in as_of_dates(context)]
    rows = _rows_per_day(warehouse, "staging.stg_shop__events", "event_date", days)
    empty = [d.isoformat() for d in days if rows.get(d, 0) == 0]
    return dg.AssetCheckResult(passed=not empty, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"days": len(days), "days_without_events": len(empty),
                                         "first_empty_days": ", ".join(empty[:30]) or "-"})


@dg.asset_check(asset=["marts", "feat_user_daily"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="feat_user_daily suite on the feature rows of the run's as-of dates, in batches of dates.")
def feat_user_daily_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                          settings: PipelineSettings) -> dg.AssetCheckResult:
    return _validate_days(context, warehouse, settings, "feat_user_daily", "marts.feat_user_daily", "as_of_date",
                          as_of_dates(context))


@dg.asset_check(asset=["marts", "fct_scoring_population"], blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="fct_scoring_population suite on the rows of each as-of date of the run.")
def scoring_population_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                             settings: PipelineSettings) -> dg.AssetCheckResult:
    return _validate_days(context, warehouse, settings, "fct_scoring_population", "marts.fct_scoring_population",
                          "as_of_date", as_of_dates(context))


# At least a validation cutoff and a training cutoff: fewer means the events begin too late for more.
MIN_TRAINING_CUTOFFS = 2


@dg.asset_check(asset=TRAINING_SAMPLE, blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="fct_training_set suite, cutoff by cutoff, on the rows training reads (the training "
                            "sample: at most training_rows_per_cutoff users a cutoff): labels binary, label "
                            f"rates sane; and at least {MIN_TRAINING_CUTOFFS} cutoffs.")
def training_set_suite(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                       settings: PipelineSettings) -> dg.AssetCheckResult:
    rows_per_cutoff = _rows_per_day(warehouse, TRAINING_SAMPLE_TABLE, "as_of_date", None)
    cutoffs = sorted(rows_per_cutoff)
    if len(cutoffs) < MIN_TRAINING_CUTOFFS:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={
            "cutoffs": len(cutoffs), "result": f"{len(cutoffs)} training cutoff(s), at least {MIN_TRAINING_CUTOFFS} "
                                               "needed: the events begin too late for more (see the metadata of "
                                               "marts/training_cutoff_features)"})
    return _validate_days(context, warehouse, settings, "fct_training_set", TRAINING_SAMPLE_TABLE, "as_of_date", cutoffs,
                          rows_per_day=rows_per_cutoff)
