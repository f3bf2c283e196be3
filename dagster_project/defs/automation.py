"""Jobs and schedules: the whole graph for an as-of date, a feature backfill, and the daily run."""

import dagster as dg

# Steps run one after another in the run's process: every step touches the one DuckDB file, which admits one
# writer or several readers, and a process per step would re-import the code each time (seconds per step).
EXECUTOR = dg.in_process_executor

from dagster_project.defs.partitions import as_of_daily
from ml.targets import TARGETS

# Everything: ingest what has landed, then staging → checks → marts → checks (→ models and scores, later).
shopcast_graph = dg.define_asset_job(
    "shopcast_graph",
    executor_def=EXECUTOR,
    selection=dg.AssetSelection.all(),
    partitions_def=as_of_daily,
    description="The whole graph for one as-of date (or a range, as one run).",
)

# The history the training set needs: staging, daily activity and features over a range of as-of dates.
feature_backfill = dg.define_asset_job(
    "feature_backfill",
    executor_def=EXECUTOR,
    selection=dg.AssetSelection.assets(["marts", "feat_user_daily"], ["marts", "feat_user_rfm"]).upstream()
    - dg.AssetSelection.groups("ingest"),
    partitions_def=as_of_daily,
    description="Features (and their checks) for a range of as-of dates, as one run.",
)

TRAINING = dg.AssetSelection.assets(*[dg.AssetKey(["models", f"{t}_{step}"]) for t in TARGETS
                                      for step in ("candidates", "champion")])

# Daily: ingest, features, checks and scores with the current champion, no retraining.
daily_scoring = dg.define_asset_job(
    "daily_scoring",
    executor_def=EXECUTOR,
    selection=dg.AssetSelection.all() - TRAINING,
    partitions_def=as_of_daily,
    description="Ingest what landed, build the marts, score with the current champions.",
)

# Weekly: retrain the candidates on the latest training set and run the promotion gate.
weekly_training = dg.define_asset_job(
    "weekly_training",
    executor_def=EXECUTOR,
    selection=TRAINING | dg.AssetSelection.assets(["marts", "fct_training_set"]).upstream()
    - dg.AssetSelection.groups("ingest"),
    partitions_def=as_of_daily,
    description="Rebuild the training set, train candidates, and let the gate decide on the champion.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_scoring, hour_of_day=2, minute_of_hour=0, name="shopcast_daily",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.schedule(cron_schedule="0 1 * * 1", job=weekly_training, name="shopcast_weekly_training",
             execution_timezone=as_of_daily.timezone, default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_training_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Mondays: retrain for the as-of date of the tick (events up to Sunday)."""
    as_of = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=f"weekly-training-{as_of}", partition_key=as_of)

# Load landed files into the raw layer (the CLI's `shopcast ingest`, and the landing sensor later).
ingest_job = dg.define_asset_job(
    "ingest",
    executor_def=EXECUTOR,
    selection=dg.AssetSelection.groups("ingest"),
    description="Load landed export files into raw.events.",
)


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Each new file under SHOPCAST_HOME/landing/<format>/ is ingested once, keyed by its content.")
def landing_sensor(context: dg.SensorEvaluationContext):
    from pathlib import Path

    from dagster_project.ingest import FORMATS
    from dagster_project.ingest.loader import SUFFIXES, file_sha256
    from dagster_project.settings import get_paths

    landing = get_paths().landing
    for fmt in sorted(FORMATS):
        folder = landing / fmt
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
            # the run key is the content: the same bytes are never requested twice, under any name
            yield dg.RunRequest(
                run_key=f"{fmt}:{file_sha256(path)}",
                run_config={"ops": {"raw__events": {"config": {"format": fmt, "paths": [str(Path(path))]}}}},
                tags={"shopcast/landing_file": str(path)},
            )
