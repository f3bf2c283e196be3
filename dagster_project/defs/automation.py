"""Jobs, schedules and sensors: the whole graph for an as-of date, a feature backfill, the daily scoring run, the
weekly retrain, the landing sensor, and the retraining sensor that reacts to drift and to falling performance."""

import datetime as dt
import json

import dagster as dg

# Steps run one after another in the run's process: every step touches the one DuckDB file, which admits one
# writer or several readers, and a process per step would re-import the code each time (seconds per step).
EXECUTOR = dg.in_process_executor

from dagster_project.asset_keys import candidates_key, champion_key
from dagster_project.defs.clv import CUTOFFS_KEY
from dagster_project.defs.cold_start import EVIDENCE as COLD_START_EVIDENCE
from dagster_project.defs.dbt_assets import TRAINING_CUTOFF_FEATURES
from dagster_project.defs.dbt_assets import TRAINING_SET as TRAINING_SET_KEY
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.recommendations import CANDIDATES_KEY as RECOMMENDATION_CANDIDATES
from dagster_project.defs.recommendations import CHAMPION_KEY as RECOMMENDATION_CHAMPION
from dagster_project.defs.recommendations import CUTOFF_INTERACTIONS as RECOMMENDATION_CUTOFFS
from dagster_project.defs.training import TRAINING_SAMPLE, TRAINING_SEQUENCES
from dagster_project.targets import TARGETS

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

TRAINING = dg.AssetSelection.assets(TRAINING_CUTOFF_FEATURES, CUTOFFS_KEY, TRAINING_SAMPLE, TRAINING_SEQUENCES,
                                    *[key(t) for t in TARGETS for key in (candidates_key, champion_key)],
                                    RECOMMENDATION_CUTOFFS, RECOMMENDATION_CANDIDATES, RECOMMENDATION_CHAMPION,
                                    COLD_START_EVIDENCE)

# Daily: ingest, features, checks and scores with the current champion, no retraining (and so no training set:
# twelve cutoffs of features joined with their labels, rebuilt when a run trains, with any cutoff's features missing).
TRAINING_SET = dg.AssetSelection.assets(TRAINING_SET_KEY)
daily_scoring = dg.define_asset_job(
    "daily_scoring",
    executor_def=EXECUTOR,
    selection=dg.AssetSelection.all() - TRAINING - TRAINING_SET,
    partitions_def=as_of_daily,
    description="Ingest what landed, build the marts, score with the current champions.",
)

# Weekly: retrain the candidates on the latest training set and run the promotion gate.
weekly_training = dg.define_asset_job(
    "weekly_training",
    executor_def=EXECUTOR,
    selection=TRAINING | TRAINING_SET.upstream() | dg.AssetSelection.assets(RECOMMENDATION_CANDIDATES).upstream()
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
           description="Each new file under <home>/landing/<format>/ is ingested once, keyed by its content.")
def landing_sensor(context: dg.SensorEvaluationContext):
    from pathlib import Path

    from dagster_project.ingest import FORMATS
    from dagster_project.ingest.readers import SUFFIXES, file_sha256
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


def _cooldown_days() -> int:
    from dagster_project.settings import load_settings

    return load_settings().retrain_cooldown_days


def _trained_since(instance: dg.DagsterInstance, target: str, as_of: str) -> bool:
    event = instance.get_latest_materialization_event(candidates_key(target))
    partition = event.asset_materialization.partition if event else None
    return partition is not None and partition >= as_of


@dg.sensor(job=weekly_training, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Requests a retrain of a target (candidates, backtest, gate) when the drift check of the "
                       "latest scoring date fails or the champion's realised performance fell by more than "
                       "the performance_drop setting; at most once per target every retrain_cooldown_days.")
def retraining_sensor(context: dg.SensorEvaluationContext):
    from dagster_project.decisions import TRIGGER_TAG
    from dagster_project.defs.monitoring import DRIFT, PERFORMANCE, RETRAIN_METADATA

    last_requested = json.loads(context.cursor) if context.cursor else {}  # target -> as-of date of its last request
    for key, trigger in ((DRIFT, "drift"), (PERFORMANCE, "performance")):
        event = context.instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization.partition is None:
            continue
        materialization = event.asset_materialization
        as_of = materialization.partition
        signals = materialization.metadata[RETRAIN_METADATA].value if RETRAIN_METADATA in materialization.metadata \
            else {}
        for target, reason in sorted(signals.items()):
            if _trained_since(context.instance, target, as_of):
                continue  # the weekly training (or an earlier request) has already retrained it for this date
            previous = last_requested.get(target)
            if previous and (dt.date.fromisoformat(as_of) - dt.date.fromisoformat(previous)).days < _cooldown_days():
                continue
            last_requested[target] = as_of
            context.log.info(f"retrain {target} for {as_of}: {reason}")
            yield dg.RunRequest(
                run_key=f"retrain:{target}:{as_of}", partition_key=as_of,
                asset_selection=[candidates_key(target), champion_key(target),
                                 *((RECOMMENDATION_CUTOFFS,) if target == "next_items" else
                                   (CUTOFFS_KEY, TRAINING_CUTOFF_FEATURES, TRAINING_SET_KEY, TRAINING_SAMPLE,
                                    TRAINING_SEQUENCES))],
                tags={TRIGGER_TAG: trigger, "shopcast/retrain_reason": reason[:500]},
            )
    context.update_cursor(json.dumps(last_requested))
