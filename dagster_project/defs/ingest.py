"""Raw layer: load landed export files into raw.events (and raw.reviews), quarantining bad rows with their reasons."""


from pathlib import Path

import dagster as dg
import pandas as pd

from dagster_project.defs.resources import PipelineSettings, WarehouseResource
from dagster_project.ingest import FORMATS, LoadReport, load_path
from dagster_project.markdown import frame_to_markdown
from dagster_project.settings import start_partitions_at
from dagster_project.warehouse import ensure_raw_schema, event_day_bounds

RAW_EVENTS = dg.AssetKey(["raw", "events"])


class IngestConfig(dg.Config):
    format: str = "canonical"
    # files or folders to load; empty means every file under <home>/landing/<format>/
    paths: list[str] = []  # noqa: RUF012 (a pydantic field: each config gets its own list)
    # the YAML mapping of the mapped format; default: <file>.yaml or mapping.yaml beside each file
    mapping: str | None = None


def _report_table(reports: list[LoadReport]) -> str:
    return frame_to_markdown(pd.DataFrame([{
        "file": Path(r.source_file).name, "read": r.rows_read, "accepted": r.rows_accepted,
        "rejected": r.rows_rejected, "duplicate": r.rows_duplicate,
        "rejected by reason": ", ".join(f"{k}: {v}" for k, v in r.rejected_by_reason.items()) or "-",
    } for r in reports], columns=["file", "read", "accepted", "rejected", "duplicate", "rejected by reason"]))


@dg.asset(key=RAW_EVENTS, group_name="ingest", kinds={"duckdb", "python"}, pool="duckdb",
          description="Canonical behaviour events (UTC), loaded idempotently from landed files. A reviews format "
                      "(amazon-reviews) loads raw.reviews and, as a proxy, one purchase event per review.")
def raw_events(config: IngestConfig, warehouse: WarehouseResource, settings: PipelineSettings) -> dg.MaterializeResult:
    if config.format not in FORMATS:
        raise dg.Failure(f"unknown format {config.format!r}; expected one of {', '.join(sorted(FORMATS))}")
    if config.paths:
        targets = [Path(p) for p in config.paths]
    else:  # the landing folder; nothing landed is not an error for a scheduled run
        landing = Path(settings.home) / "landing" / config.format
        targets = [landing] if landing.is_dir() and any(landing.iterdir()) else []
    mapping = Path(config.mapping) if config.mapping else None
    # a landing-folder scan loads only files not loaded before (they accumulate there day after day)
    reports = [r for target in targets
               for r in load_path(warehouse.file, target, config.format, mapping, new_files_only=not config.paths)]
    ensure_raw_schema(warehouse.file)  # downstream models read raw.* even when nothing has landed yet
    total = warehouse.scalar("select count(*) from raw.events")
    with warehouse.reader() as con:
        first_day, last_day = event_day_bounds(con, settings.business_timezone)
    # the partitions start where the data does, not at the 2010 default (a bar of 6,000 empty days)
    moved = start_partitions_at(Path(settings.home), first_day) if first_day is not None else None
    return dg.MaterializeResult(
        metadata={
            "files": len(reports),
            "rows_read": sum(r.rows_read for r in reports),
            "rows_accepted": sum(r.rows_accepted for r in reports),
            "rows_rejected": sum(r.rows_rejected for r in reports),
            "rows_duplicate": sum(r.rows_duplicate for r in reports),
            "dagster/row_count": total,
            "first_event_day": str(first_day), "last_event_day": str(last_day),
            "partitions_start": (f"{moved} (written to the project file: reload the code location to see the "
                                 "partitions from it)" if moved else "unchanged"),
            "loads": dg.MetadataValue.md(_report_table(reports)),
        }
    )


@dg.asset_check(asset=RAW_EVENTS, blocking=True, pool="duckdb", description="Every load's counts reconcile: read = accepted + rejected + duplicate.")
def raw_events_loads_reconcile(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    broken = warehouse.query_df(
        "select source_file, rows_read, rows_accepted, rows_rejected, rows_duplicate from raw.load_audit "
        "where rows_read <> rows_accepted + rows_rejected + rows_duplicate"
    )
    return dg.AssetCheckResult(
        passed=broken.empty,
        metadata={"unreconciled_loads": len(broken),
                  "loads": warehouse.scalar("select count(*) from raw.load_audit")},
    )
