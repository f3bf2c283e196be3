"""Training windows sized to the data: how many training cutoffs, how far apart.

A training example is a user's features at a cutoff joined with what the user did in the label window after it, so
the newest cutoff is ``LABEL_HORIZON_DAYS`` before the as-of date and each cutoff needs at least a day of events
before it. Unless the settings pin them, a run chooses weekly cutoffs (up to ``MAX_CUTOFFS``, as the schedules
assume) when the history holds at least ``MIN_WEEKLY_CUTOFFS`` of them, and daily cutoffs otherwise (a short
history such as the 9-day Taobao sample), and says which and why. The history starts at its first day with a real
share of events (warehouse.history_start): a few stray events weeks earlier do not stretch it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dagster_project.targets import LABEL_HORIZON_DAYS

MAX_CUTOFFS = 12           # more cutoffs add rows, not much signal, and cost time
MIN_WEEKLY_CUTOFFS = 4     # validation, tuning and at least two to train on
MIN_CUTOFFS = 2            # one to validate on, one to train on (ml.train)


@dataclass(frozen=True)
class TrainingWindows:
    cutoffs: int
    cadence_days: int
    reason: str

    def cutoff_dates(self, as_of: dt.date) -> list[dt.date]:
        """The as-of dates of the training examples of a run at ``as_of``, newest first (fct_training_set.sql)."""
        return [as_of - dt.timedelta(days=LABEL_HORIZON_DAYS + self.cadence_days * k) for k in range(self.cutoffs)]

    def describe(self) -> str:
        every = "every day" if self.cadence_days == 1 else f"every {self.cadence_days} days"
        return f"{self.cutoffs} training cutoffs {every} ({self.reason})"


def choose_windows(as_of: dt.date, first_event_day: dt.date | None, pinned_cutoffs: int | None = None,
                   pinned_cadence_days: int | None = None) -> TrainingWindows:
    """The windows of a run at ``as_of`` whose events start on ``first_event_day`` (None: no events yet)."""
    if pinned_cutoffs is not None and pinned_cadence_days is not None:
        return TrainingWindows(pinned_cutoffs, pinned_cadence_days, "set in the settings")
    newest = as_of - dt.timedelta(days=LABEL_HORIZON_DAYS)
    # days from the first cutoff that has a day of events before it to the newest cutoff
    room = (newest - first_event_day).days - 1 if first_event_day else -1
    if pinned_cadence_days is not None:
        cadence = pinned_cadence_days
    else:
        cadence = 7 if room >= 7 * (MIN_WEEKLY_CUTOFFS - 1) else 1
    fitting = max(0, room // cadence + 1) if room >= 0 else 0
    cutoffs = pinned_cutoffs if pinned_cutoffs is not None else max(MIN_CUTOFFS, min(MAX_CUTOFFS, fitting))
    span = f"{(as_of - first_event_day).days} days of history before {as_of}" if first_event_day else "no events yet"
    if fitting < cutoffs:
        needed = (cutoffs - 1) * cadence - room
        reason = (f"{span}: only {fitting} cutoff(s) {cadence} day(s) apart have events before them and a closed "
                  f"{LABEL_HORIZON_DAYS}-day label window; {needed} more day(s) of history would give {cutoffs}")
    elif pinned_cutoffs is not None or pinned_cadence_days is not None:
        reason = f"{span}; partly set in the settings"
    elif cadence == 7:
        reason = f"{span}: weekly cutoffs, as many as fit up to {MAX_CUTOFFS}"
    else:
        reason = (f"{span}: fewer than {MIN_WEEKLY_CUTOFFS} weekly cutoffs fit, so daily ones, as many as fit up "
                  f"to {MAX_CUTOFFS}")
    return TrainingWindows(cutoffs, cadence, reason)
