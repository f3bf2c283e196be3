"""Training windows sized to the data: how many training cutoffs, how far apart.

A training example is a user's features at a cutoff joined with what the user did in the label window after it, so
the newest cutoff is ``LABEL_HORIZON_DAYS`` before the as-of date and each cutoff needs at least a day of events
before it. Unless the settings pin them, a run chooses weekly cutoffs (up to ``MAX_CUTOFFS``, as the schedules
assume) when the history holds at least ``MIN_WEEKLY_CUTOFFS`` of them, and daily cutoffs otherwise (a short
history such as the 9-day Taobao sample), and says which and why. A long label window stretches the weeks apart: a
model judged on a cutoff trains only on cutoffs whose labels closed by it (ml/train.py, purged), so with a 90-day
label at weekly cutoffs no cutoff of the twelve could train the validation one; every 4 weeks, eight can. The history starts at its first day with a real
share of events (warehouse.history_start): a few stray events weeks earlier do not stretch it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from dagster_project.targets import LABEL_HORIZON_DAYS

MAX_CUTOFFS = 12           # more cutoffs add rows, not much signal, and cost time
MIN_WEEKLY_CUTOFFS = 4     # validation, tuning and at least two to train on
MIN_CUTOFFS = 2            # one to validate on, one to train on (ml.train)
# a cadence of whole weeks such that a label window spans at most this many cutoffs: the ones purged from training
LABEL_WINDOW_CUTOFFS = 4


@dataclass(frozen=True)
class TrainingWindows:
    cutoffs: int
    cadence_days: int
    reason: str
    horizon_days: int = LABEL_HORIZON_DAYS  # the newest cutoff is this many days before the as-of date

    def cutoff_dates(self, as_of: dt.date) -> list[dt.date]:
        """The as-of dates of the training examples of a run at ``as_of``, newest first (fct_training_set.sql)."""
        return [as_of - dt.timedelta(days=self.horizon_days + self.cadence_days * k) for k in range(self.cutoffs)]

    def describe(self) -> str:
        every = "every day" if self.cadence_days == 1 else f"every {self.cadence_days} days"
        return f"{self.cutoffs} training cutoffs {every} ({self.reason})"


def weekly_cadence_days(horizon_days: int) -> int:
    """Whole weeks, enough that a ``horizon_days`` label window spans at most LABEL_WINDOW_CUTOFFS cutoffs."""
    return 7 * max(1, math.ceil(horizon_days / (7 * LABEL_WINDOW_CUTOFFS)))


def choose_windows(as_of: dt.date, first_event_day: dt.date | None, pinned_cutoffs: int | None = None,
                   pinned_cadence_days: int | None = None,
                   horizon_days: int = LABEL_HORIZON_DAYS) -> TrainingWindows:
    """The windows of a run at ``as_of`` whose events start on ``first_event_day`` (None: no events yet), for
    labels of at most ``horizon_days`` (the home's classification targets)."""
    if pinned_cutoffs is not None and pinned_cadence_days is not None:
        return TrainingWindows(pinned_cutoffs, pinned_cadence_days, "set in the settings", horizon_days)
    newest = as_of - dt.timedelta(days=horizon_days)
    # days from the first cutoff that has a day of events before it to the newest cutoff
    room = (newest - first_event_day).days - 1 if first_event_day else -1
    if pinned_cadence_days is not None:
        cadence = pinned_cadence_days
    else:
        weekly = weekly_cadence_days(horizon_days)
        cadence = next((c for c in (weekly, 7) if room >= c * (MIN_WEEKLY_CUTOFFS - 1)), 1)
    fitting = max(0, room // cadence + 1) if room >= 0 else 0
    cutoffs = pinned_cutoffs if pinned_cutoffs is not None else max(MIN_CUTOFFS, min(MAX_CUTOFFS, fitting))
    span = f"{(as_of - first_event_day).days} days of history before {as_of}" if first_event_day else "no events yet"
    if fitting < cutoffs:
        needed = (cutoffs - 1) * cadence - room
        reason = (f"{span}: only {fitting} cutoff(s) {cadence} day(s) apart have events before them and a closed "
                  f"{horizon_days}-day label window; {needed} more day(s) of history would give {cutoffs}")
    elif pinned_cutoffs is not None or pinned_cadence_days is not None:
        reason = f"{span}; partly set in the settings"
    elif cadence == 7:
        reason = f"{span}: weekly cutoffs, as many as fit up to {MAX_CUTOFFS}"
    elif cadence > 7:
        reason = (f"{span}: cutoffs {cadence // 7} weeks apart, as many as fit up to {MAX_CUTOFFS}, so that most "
                  f"of them close their {horizon_days}-day labels before the validation cutoff")
    else:
        reason = (f"{span}: fewer than {MIN_WEEKLY_CUTOFFS} weekly cutoffs fit, so daily ones, as many as fit up "
                  f"to {MAX_CUTOFFS}")
    return TrainingWindows(cutoffs, cadence, reason, horizon_days)
