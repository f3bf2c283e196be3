"""Daily partitions by as-of date: partition D holds what is known with the events before business day D."""

import dagster as dg

from dagster_project.settings import load_settings

_settings = load_settings()

as_of_daily = dg.DailyPartitionsDefinition(
    start_date=_settings.partitions_start.isoformat(),  # the real samples reach back to 2010
    end_offset=1,  # today's partition exists: its as-of date is today, its events end yesterday
    timezone=_settings.business_tz,
)
