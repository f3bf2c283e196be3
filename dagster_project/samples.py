"""The real public samples in ../shared/datasets, and the settings each needs to run end to end.

`shopcast sample NAME` (and `make demo DATA=NAME`) loads one into its own SHOPCAST_HOME and runs the whole graph.
The settings are written to the home's settings.env, so that `make ui` and later runs see the same business time
zone and training windows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagster_project.settings import REPO_ROOT


@dataclass(frozen=True)
class Sample:
    name: str
    relative_path: str     # under the datasets folder
    format: str
    business_timezone: str
    training_cadence_days: int
    training_cutoffs: int
    min_class_examples: int  # the samples are small: GA has ~20 buyers per validation week
    why: str

    def settings(self) -> dict[str, str]:
        return {"SHOPCAST_BUSINESS_TZ": self.business_timezone,
                "SHOPCAST_TRAINING_CADENCE_DAYS": str(self.training_cadence_days),
                "SHOPCAST_TRAINING_CUTOFFS": str(self.training_cutoffs),
                "SHOPCAST_MIN_CLASS_EXAMPLES": str(self.min_class_examples)}

    def path(self, datasets: Path | None = None) -> Path:
        return (datasets or datasets_dir()) / self.relative_path


SAMPLES = {s.name: s for s in (
    Sample("taobao", "taobao_userbehavior/UserBehavior_head.csv", "taobao", "Asia/Shanghai", 1, 2, 50,
           "9 days (2017-11-25 .. 12-03, China time): daily cutoffs; only the two newest have 7-day windows that "
           "close inside the data"),
    Sample("ga-merch", "ga_merch_store/product_events.parquet", "ga-merch", "America/Los_Angeles", 7, 12, 100,
           "92 days of web analytics; GA's reporting day is US Pacific; weekly cutoffs"),
    Sample("online-retail", "uci_online_retail/online_retail_2010_2011.parquet", "online-retail", "Europe/London",
           7, 12, 200, "a year of UK invoice lines; weekly cutoffs"),
)}


def datasets_dir() -> Path:
    """SHOPCAST_DATASETS, else ../shared/datasets beside the checkout."""
    return Path(os.environ.get("SHOPCAST_DATASETS", REPO_ROOT.parent / "shared" / "datasets")).expanduser()


def get(name: str) -> Sample:
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; expected one of {', '.join(SAMPLES)}")
    return SAMPLES[name]
