"""Publish what BI reads to <home>/serving/ (a DuckDB file and Parquet), swapped in atomically.

The work is in dagster_project/serving.py; docs/serving.md shows how BI tools connect."""

import dagster as dg

from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import ServingResource, WarehouseResource, as_of_dates
from dagster_project.markdown import frame_to_markdown
from dagster_project.serving import PUBLISHED_TABLES, read_manifest, verify
from dagster_project.targets import TARGETS

SERVING = dg.AssetKey(["serving", "shopcast"])
PUBLISHED = [dg.AssetKey([schema, table]) for schema, table, _ in PUBLISHED_TABLES
             if (schema, table) != ("monitoring", "model_decisions")]  # not an asset: the gates append to it


@dg.asset(key=SERVING, deps=PUBLISHED, group_name="serving", partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"duckdb", "parquet"},
          description="The serving file BI reads (<home>/serving/shopcast.duckdb, and Parquet): prediction "
                      "tables, audiences, latest scores and monitoring, built under a temporary name and swapped in "
                      "atomically; user ids pseudonymised when pseudonymise_user_ids is on.")
def serving_file(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                 serving: ServingResource) -> dg.MaterializeResult:
    result = serving.publish(warehouse.file, as_of_dates(context)[-1], context.run.run_id)
    context.log.info(f"published {result.publish_id} to {result.path} in {result.seconds:.1f} s")
    return dg.MaterializeResult(metadata={
        "publish_id": result.publish_id, "path": dg.MetadataValue.path(str(result.path)),
        "parquet": dg.MetadataValue.path(str(result.parquet)), "seconds": round(result.seconds, 2),
        "as_of_date": result.as_of_date.isoformat(), "dagster/row_count": int(result.tables.rows.sum()),
        "pseudonymised": serving.pseudonymise,
        "tables": dg.MetadataValue.md(frame_to_markdown(result.tables)),
    })


@dg.asset_check(asset=SERVING, blocking=True, partitions_def=as_of_daily,
                description="The swapped-in serving file is the one this run built, its tables and their Parquet "
                            "copies hold the rows and content hash its manifest says, and every published target's latest as-of date is the run's.")
def serving_file_is_consistent(context: dg.AssetCheckExecutionContext,
                               serving: ServingResource) -> dg.AssetCheckResult:
    publish, tables = read_manifest(serving.path)
    problems = verify(serving.path, serving.parquet_current)
    as_of = as_of_dates(context)[-1]
    if publish["dagster_run_id"] != context.run.run_id:
        problems.append(f"the serving file was published by run {publish['dagster_run_id']}, not this one")
    scored = tables[(tables.schema == "predictions") & tables.table_name.isin(list(TARGETS)) & (tables.rows > 0)]
    stale = scored[scored.max_as_of_date.dt.date != as_of]
    problems += [f"{r.schema}.{r.table_name}: latest as-of date {r.max_as_of_date.date()}, not {as_of}"
                 for r in stale.itertuples()]
    return dg.AssetCheckResult(passed=not problems, metadata={
        "publish_id": publish["publish_id"], "problems": dg.MetadataValue.json(problems)})


@dg.definitions
def serving_defs() -> dg.Definitions:
    return dg.Definitions(assets=[serving_file], asset_checks=[serving_file_is_consistent])
