"""Jobs and schedules: the whole graph for an as-of date, a feature backfill, and the daily run."""

import dagster as dg

from dagster_project.defs.partitions import as_of_daily

# Everything: ingest what has landed, then staging → checks → marts → checks (→ models and scores, later).
shopcast_graph = dg.define_asset_job(
    "shopcast_graph",
    selection=dg.AssetSelection.all(),
    partitions_def=as_of_daily,
    description="The whole graph for one as-of date (or a range, as one run).",
)

# The history the training set needs: staging, daily activity and features over a range of as-of dates.
feature_backfill = dg.define_asset_job(
    "feature_backfill",
    selection=dg.AssetSelection.assets(["marts", "feat_user_daily"]).upstream() - dg.AssetSelection.groups("ingest"),
    partitions_def=as_of_daily,
    description="Features (and their checks) for a range of as-of dates, as one run.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    shopcast_graph, hour_of_day=2, minute_of_hour=0, name="shopcast_daily",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

# Load landed files into the raw layer (the CLI's `shopcast ingest`, and the landing sensor later).
ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("ingest"),
    description="Load landed export files into raw.events.",
)
