"""Where shopcast keeps its state, read from the environment.

Everything a run writes lives under one folder, ``SHOPCAST_HOME`` (default ``./data``): the DuckDB warehouse, the
MLflow store, the Dagster home, landing files and the Great Expectations results. No Dagster import here: the CLI,
the tests and the Dagster resources all read their paths from this one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt"

# Telemetry off: the product runs offline and must not phone home.
OFFLINE_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class ShopcastPaths:
    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def gx_dir(self) -> Path:
        return self.home / "gx"

    @property
    def serving(self) -> Path:
        return self.home / "serving"

    @property
    def logs(self) -> Path:
        return self.home / "logs"


def shopcast_home() -> Path:
    return Path(os.environ.get("SHOPCAST_HOME", "data")).expanduser().resolve()


def get_paths() -> ShopcastPaths:
    return ShopcastPaths(shopcast_home())


def business_timezone() -> str:
    """The zone business days (and so daily partitions and feature windows) follow; raw timestamps stay UTC."""
    name = os.environ.get("SHOPCAST_BUSINESS_TZ", "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"SHOPCAST_BUSINESS_TZ={name!r} is not a known IANA time zone") from exc
    return name


# The longest 7-day label window (dbt vars purchase_horizon_days, churn_horizon_days): the newest training cutoff
# is this many days before the as-of date (fct_training_set.sql).
LABEL_HORIZON_DAYS = 7


def training_cutoff_dates(as_of, cutoffs: int, cadence_days: int) -> list:
    """The as-of dates of the training examples of a run at ``as_of``, newest first (fct_training_set.sql)."""
    import datetime as dt

    return [as_of - dt.timedelta(days=LABEL_HORIZON_DAYS + cadence_days * (k - 1)) for k in range(1, cutoffs + 1)]


# Settings a SHOPCAST_HOME keeps for every process that opens it (the CLI, `make ui`, the daemon): KEY=VALUE
# lines, written by `shopcast sample`. A variable set in the environment wins over the file.
HOME_SETTINGS_FILE = "settings.env"
# Eligibility and quality floors of a published target (ml.targets.Eligibility), and which families are searched.
TRAINING_POLICY_DEFAULTS = {
    "SHOPCAST_MODEL_FAMILIES": "all",            # or a comma-separated list (ml.models.FAMILIES)
    "SHOPCAST_MIN_CLASS_EXAMPLES": "1000",
    "SHOPCAST_MIN_ROC_AUC": "0.6",
    "SHOPCAST_MIN_PR_AUC_SKILL": "0.05",
    "SHOPCAST_MIN_NORMALIZED_GINI": "0.2",
    "SHOPCAST_BACKTEST_CUTOFFS": "3",            # a retrain is backtested against the champion on this many cutoffs
    "SHOPCAST_TRAINING_ROWS_PER_CUTOFF": "200000",  # training reads a hash sample of at most this many users a cutoff
    "SHOPCAST_MAX_TRAINING_ROWS": "100000",      # models are fitted on a uniform sample of at most this many rows
    "SHOPCAST_CLV_FIT_USERS": "100000",          # BG/NBD is fitted on a hash sample of at most this many users a date
}
MONITORING_POLICY_DEFAULTS = {
    "SHOPCAST_PSI_WARN": "0.1",                  # drift checks warn above this population stability index ...
    "SHOPCAST_PSI_FAIL": "0.25",                 # ... and fail above this one (and request a retrain)
    "SHOPCAST_NULL_RATE_JUMP": "0.1",            # a feature's share of missing values rising by more than this warns
    "SHOPCAST_DRIFT_INFORMATIONAL_FEATURES": "tenure_days,clv_*",  # PSI shown, never failing: moves by construction
    "SHOPCAST_PERFORMANCE_DROP": "0.05",         # realised primary metric this far below validation: retrain
    "SHOPCAST_RETRAIN_COOLDOWN_DAYS": "7",       # the retraining sensor asks at most once per target in this time
}
SERVING_DEFAULTS = {
    "SHOPCAST_SERVING_DAYS": "28",               # as-of dates of each prediction table kept in the serving file
    "SHOPCAST_PSEUDONYMISE_USER_IDS": "false",   # true: user ids become HMAC-SHA256(SHOPCAST_PSEUDONYMISATION_KEY, id)
    "SHOPCAST_SERVING_STORAGE_VERSION": "v1.0.0",  # the oldest DuckDB (BI driver) that must open the serving file
    "SHOPCAST_RUN_LOCK_TIMEOUT_SECONDS": "1800",  # a second run waits this long for the first, then fails
    "SHOPCAST_PERSONAL_FEATURES": "false",       # true: age, gender, region... may become model features
}
HOME_SETTINGS_KEYS = ("SHOPCAST_BUSINESS_TZ", "SHOPCAST_TRAINING_CUTOFFS", "SHOPCAST_TRAINING_CADENCE_DAYS",
                      "SHOPCAST_TRAINING_BUDGET_SECONDS", "SHOPCAST_GATE_MARGIN", "SHOPCAST_PARTITIONS_START",
                      *TRAINING_POLICY_DEFAULTS, *MONITORING_POLICY_DEFAULTS, *SERVING_DEFAULTS)


def read_home_settings(home: Path) -> dict[str, str]:
    file = home / HOME_SETTINGS_FILE
    if not file.is_file():
        return {}
    settings = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or key not in HOME_SETTINGS_KEYS:
            raise ValueError(f"{file}:{number}: expected KEY=VALUE with KEY one of {', '.join(HOME_SETTINGS_KEYS)}")
        settings[key] = value
    return settings


def write_home_settings(home: Path, settings: dict[str, str], comment: str) -> Path:
    unknown = sorted(set(settings) - set(HOME_SETTINGS_KEYS))
    if unknown:
        raise ValueError(f"not a home setting: {', '.join(unknown)}")
    home.mkdir(parents=True, exist_ok=True)
    file = home / HOME_SETTINGS_FILE
    file.write_text(f"# {comment}\n" + "".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
    return file


def configure_environment(paths: ShopcastPaths | None = None) -> ShopcastPaths:
    """Export the derived variables the stack reads (Dagster, dbt, MLflow) and create the folders.

    Called by the CLI and the Dagster definitions before anything else touches the stack, so that a bare
    ``SHOPCAST_HOME`` is enough to point every component at the same state.
    """
    paths = paths or get_paths()
    # tmp/duckdb: where DuckDB spills (warehouse.duckdb_config, dbt's profile); DuckDB creates only its last level
    for folder in (paths.home, paths.dagster_home, paths.mlflow_artifacts, paths.landing, paths.logs,
                   paths.home / "tmp" / "duckdb"):
        folder.mkdir(parents=True, exist_ok=True)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    for key, value in read_home_settings(paths.home).items():
        os.environ.setdefault(key, value)
    os.environ["SHOPCAST_HOME"] = str(paths.home)
    os.environ["SHOPCAST_WAREHOUSE_PATH"] = str(paths.warehouse)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    os.environ["MLFLOW_TRACKING_URI"] = paths.mlflow_tracking_uri
    os.environ["SHOPCAST_MLFLOW_ARTIFACTS"] = str(paths.mlflow_artifacts)
    os.environ.setdefault("SHOPCAST_GATE_MARGIN", "0.0")
    os.environ.setdefault("SHOPCAST_TRAINING_BUDGET_SECONDS", "300")
    os.environ["DBT_LOG_PATH"] = str(paths.logs / "dbt")
    os.environ["SHOPCAST_BUSINESS_TZ"] = business_timezone()
    os.environ.setdefault("SHOPCAST_TRAINING_CUTOFFS", "12")
    os.environ.setdefault("SHOPCAST_TRAINING_CADENCE_DAYS", "7")
    os.environ["SHOPCAST_SERVING_DIR"] = str(paths.serving)
    for key, value in {**TRAINING_POLICY_DEFAULTS, **MONITORING_POLICY_DEFAULTS, **SERVING_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    dagster_yaml = paths.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    return paths


# One writer at a time on the DuckDB file: every asset that writes the warehouse declares pool "duckdb",
# and the pool admits one step at a time across all runs.
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 1
"""
