"""The real public samples in ../shared/datasets, and the settings each needs to run end to end.

`shopcast sample NAME` (and `make demo DATA=NAME`) loads one into its own home and runs the whole graph.
The settings are written to the home's project file (shopcast.toml), so that `make ui` and later runs see the same
business time zone and eligibility floor. The training windows are not presets: every run sizes them to the span
of history it sees (training_windows.py), a user's own export of the same span as much as the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dagster_project.settings import load_settings


@dataclass(frozen=True)
class Sample:
    name: str
    relative_path: str     # under the datasets folder
    format: str
    business_timezone: str
    min_class_examples: int  # the samples are small: GA has ~20 buyers per validation week
    why: str
    recommendation_horizon_days: int = 28  # the truth of the recommendations (items bought in this many days)
    extra_targets: str = ""                # optional targets its data support (ml/targets.py)
    active_window_days: int = 28           # who is scored: users with an event in this many days
    purge_overlapping_labels: bool = True  # false: too short a history for a purged split (ml/train.py)

    def settings(self) -> dict:
        """The project-file settings of a home holding this sample (field names of the settings model)."""
        return {"business_tz": self.business_timezone, "min_class_examples": self.min_class_examples,
                "recommendation_horizon_days": self.recommendation_horizon_days,
                "extra_targets": self.extra_targets, "active_window_days": self.active_window_days,
                "purge_overlapping_labels": self.purge_overlapping_labels}

    def path(self, datasets: Path | None = None) -> Path:
        return (datasets or load_settings().datasets_dir) / self.relative_path


SAMPLES = {s.name: s for s in (
    Sample("taobao", "taobao_userbehavior/UserBehavior_head.csv", "taobao", "Asia/Shanghai", 50,
           "9 days (2017-11-25 .. 12-03, China time): a small sample, so a low eligibility floor, what users buy in "
           "3 days as the recommendations' truth, and training cutoffs a day apart whose 7-day label windows "
           "overlap the validation one's (no purged split fits in 9 days: its figures are optimistic)",
           recommendation_horizon_days=3, purge_overlapping_labels=False),
    Sample("ga-merch", "ga_merch_store/product_events.parquet", "ga-merch", "America/Los_Angeles", 100,
           "92 days of web analytics; GA's reporting day is US Pacific; ~20 buyers a week; recommendations judged "
           "on 14 days, as issue 23 measured them", recommendation_horizon_days=14),
    Sample("online-retail", "uci_online_retail/online_retail_2010_2011.parquet", "online-retail", "Europe/London",
           200, "a year of UK invoice lines"),
    Sample("amazon-reviews", "amazon_reviews_5core/Musical_Instruments.parquet", "amazon-reviews", "UTC", 200,
           "10,261 Amazon reviews of 1,429 reviewers (2004-2014), each review also a purchase (a proxy): ~440 "
           "reviewers a quarter, so users active in 90 days are scored, on the 90-day purchase target beside the "
           "default ones, and recommendations are judged on 90 days",
           recommendation_horizon_days=90, extra_targets="purchase_propensity_90d", active_window_days=90),
)}


def get(name: str) -> Sample:
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; expected one of {', '.join(SAMPLES)}")
    return SAMPLES[name]
