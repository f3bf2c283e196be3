"""Daily partitions by as-of date: partition D holds what is known with the events before business day D."""

import os

import dagster as dg

# The first as-of date a run may ask for; the real samples reach back to 2010.
PARTITIONS_START = os.environ.get("SHOPCAST_PARTITIONS_START", "2010-01-01")

as_of_daily = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START,
    end_offset=1,  # today's partition exists: its as-of date is today, its events end yesterday
    timezone=os.environ.get("SHOPCAST_BUSINESS_TZ", "UTC"),
)
