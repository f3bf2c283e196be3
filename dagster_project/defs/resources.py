"""Typed resources, configured from the environment (SHOPCAST_HOME and the variables derived from it)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster_dbt import DbtCliResource

from dagster_project.dbt_project import dbt_project
from dagster_project.locking import PID_TAG, recover_crashed_runs, run_lock
from dagster_project.serving import Publish, ServingOptions, publish, serving_path
from dagster_project.warehouse import connect, ensure_raw_schema, table_exists


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Read-write connections are opened only to write, and closed at once.

    Within a run it also holds the home's run lock (dagster_project/locking.py) from the first step to the last:
    one run writes at a time; another waits up to ``lock_timeout_seconds`` and then fails, saying who holds it."""

    path: str
    lock_timeout_seconds: int = 1800

    @property
    def file(self) -> Path:
        return Path(self.path)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        if context.dagster_run is None:  # built outside a run (a sensor, a script): nothing to serialise
            yield self
            return
        run_id = context.dagster_run.run_id
        with run_lock(self.file.parent / "locks", run_id, context.dagster_run.job_name,
                      self.lock_timeout_seconds):
            for crashed in recover_crashed_runs(context.instance, run_id):
                context.log.warning(f"run {crashed} had crashed holding the run lock: reported failed, "
                                    "its pool slots freed")
            context.instance.add_run_tags(run_id, {PID_TAG: str(os.getpid())})
            yield self

    @contextmanager
    def writer(self):
        ensure_raw_schema(self.file)
        with connect(self.file) as con:
            yield con

    @contextmanager
    def reader(self):
        with connect(self.file, read_only=True) as con:
            yield con

    def query_df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.reader() as con:
            return con.execute(sql, params or []).df()

    def has_table(self, schema: str, table: str) -> bool:
        with self.reader() as con:
            return table_exists(con, schema, table)

    def scalar(self, sql: str, params: list | None = None):
        with self.reader() as con:
            row = con.execute(sql, params or []).fetchone()
        return row[0] if row else None


class PipelineSettings(dg.ConfigurableResource):
    """Where state lives and the business rules every stage shares."""

    home: str
    business_timezone: str = "UTC"
    training_cutoffs: int = 12
    training_cadence_days: int = 7
    clv_fit_users: int = 100_000        # BG/NBD is fitted on a hash sample of at most this many users per date

    @property
    def gx_dir(self) -> Path:
        return Path(self.home) / "gx"

    def training_cutoff_dates(self, as_of: dt.date) -> list[dt.date]:
        from dagster_project.settings import training_cutoff_dates

        return training_cutoff_dates(as_of, self.training_cutoffs, self.training_cadence_days)

    def dbt_vars(self, dates: list[dt.date]) -> dict:
        """The dbt vars of a run over ``dates``: a range, or (when they are not consecutive) the dates themselves."""
        consecutive = (dates[-1] - dates[0]).days == len(dates) - 1
        return {
            "min_as_of_date": dates[0].isoformat(),
            "as_of_date": dates[-1].isoformat(),
            "as_of_dates": None if consecutive else [d.isoformat() for d in dates],
            "business_timezone": self.business_timezone,
            "training_cutoffs": self.training_cutoffs,
            "training_cadence_days": self.training_cadence_days,
        }


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, got {text!r}")
    return value in ("true", "1", "yes")


class ServingResource(dg.ConfigurableResource):
    """Where and how BI's serving file is published (dagster_project/serving.py). The pseudonymisation key is read
    from the environment variable named by ``key_variable`` when a publish needs it: it is never run config."""

    folder: str
    days: int = 28
    pseudonymise_user_ids: str = "false"
    storage_version: str = "v1.0.0"
    key_variable: str = "SHOPCAST_PSEUDONYMISATION_KEY"

    @property
    def path(self) -> Path:
        return serving_path(Path(self.folder))

    @property
    def pseudonymise(self) -> bool:
        return _flag("SHOPCAST_PSEUDONYMISE_USER_IDS", self.pseudonymise_user_ids)

    def options(self) -> ServingOptions:
        return ServingOptions(days=self.days, pseudonymise=self.pseudonymise,
                              key=os.environ.get(self.key_variable, ""), storage_version=self.storage_version)

    def publish(self, warehouse_file: Path, as_of: dt.date, run_id: str) -> Publish:
        return publish(warehouse_file, Path(self.folder), as_of, self.options(), run_id)


class MlflowStore(dg.ConfigurableResource):
    """The MLflow tracking server and registry (a SQLite file under SHOPCAST_HOME by default)."""

    tracking_uri: str
    artifact_root: str

    def store(self):
        from ml.registry import Store

        return Store(self.tracking_uri, Path(self.artifact_root))

    def run_link(self, run_id: str) -> str:
        return f"http://127.0.0.1:5000/#/runs/{run_id}"  # make mlflow-ui


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {text!r}") from exc


class TrainingPolicy(dg.ConfigurableResource):
    """How candidates are searched and when one may be published. Numbers that may be fractional are strings,
    because Dagster's EnvVar reads text."""

    budget_seconds: int = 300           # one target's whole search (ml.train.train_candidates), per run
    families: str = "all"               # comma-separated model families, or all
    gate_margin: str = "0.0"            # how much better (primary metric) a candidate must be than the champion
    min_examples_per_class: int = 1000  # eligibility: positives and negatives in the training cutoffs
    min_roc_auc: str = "0.6"            # quality floor
    min_pr_auc_skill: str = "0.05"      # (PR-AUC - base rate) / (1 - base rate)
    min_normalized_gini: str = "0.2"    # amount targets
    backtest_cutoffs: int = 3           # the gate compares candidate and champion on this many closed cutoffs
    personal_features: str = "false"    # true: personal attributes (age, gender, region...) may be features
    rows_per_cutoff: int = 200_000      # training reads at most about this many users per cutoff (a hash sample)
    max_training_rows: int = 100_000    # models are fitted on at most this many rows (a uniform sample)

    @property
    def allow_personal_features(self) -> bool:
        return _flag("SHOPCAST_PERSONAL_FEATURES", self.personal_features)

    @property
    def margin(self) -> float:
        return _number("SHOPCAST_GATE_MARGIN", self.gate_margin)

    @property
    def family_list(self) -> list[str] | None:
        from ml.models import FAMILIES, REGRESSION_FAMILIES

        if self.families.strip() in ("", "all"):
            return None
        chosen = [f.strip() for f in self.families.split(",") if f.strip()]
        known = [*FAMILIES, *REGRESSION_FAMILIES]
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"SHOPCAST_MODEL_FAMILIES: unknown famil(ies) {', '.join(unknown)}; "
                             f"expected some of {', '.join(known)}")
        return chosen

    def eligibility(self):
        from ml.targets import Eligibility

        return Eligibility(self.min_examples_per_class, _number("SHOPCAST_MIN_ROC_AUC", self.min_roc_auc),
                           _number("SHOPCAST_MIN_PR_AUC_SKILL", self.min_pr_auc_skill),
                           _number("SHOPCAST_MIN_NORMALIZED_GINI", self.min_normalized_gini))


class MonitoringPolicy(dg.ConfigurableResource):
    """When drift or realised performance calls for a retrain (numbers as text: EnvVar reads text)."""

    psi_warn: str = "0.1"
    psi_fail: str = "0.25"
    null_rate_jump: str = "0.1"
    informational_features: str = "tenure_days,clv_*"  # PSI reported, never failing (ml.monitoring.DriftLimits)
    performance_drop: str = "0.05"   # realised primary metric below the validation figure by more than this
    retrain_cooldown_days: int = 7   # no retrain request for a champion trained fewer days ago than this

    def may_retrain(self, champion, as_of) -> bool:
        """A retrain signal counts only once the champion is old enough: a model trained for this week is not
        retrained for drift between its own training data and today (nor before its first label window closed)."""
        if champion is None or not champion.tags.get("as_of_date"):
            return True
        trained_for = dt.date.fromisoformat(champion.tags["as_of_date"])
        return (pd.Timestamp(as_of).date() - trained_for).days >= self.retrain_cooldown_days

    def limits(self):
        from ml.monitoring import DriftLimits

        return DriftLimits(_number("SHOPCAST_PSI_WARN", self.psi_warn), _number("SHOPCAST_PSI_FAIL", self.psi_fail),
                           _number("SHOPCAST_NULL_RATE_JUMP", self.null_rate_jump),
                           tuple(p.strip() for p in self.informational_features.split(",") if p.strip()))

    @property
    def drop(self) -> float:
        return _number("SHOPCAST_PERFORMANCE_DROP", self.performance_drop)


# A run over a range of partitions that needs only some of its dates (the training cutoffs of a first run, a week
# apart) names them in this tag: every asset and check of the run then builds and validates those dates only.
AS_OF_DATES_TAG = "shopcast/as_of_dates"


def as_of_dates(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[dt.date]:
    """The as-of dates of the run: one for a daily partition, several for a single-run backfill, or the dates
    its AS_OF_DATES_TAG names within its range."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    named = context.run.tags.get(AS_OF_DATES_TAG)
    if not named:
        return [first + dt.timedelta(days=i) for i in range((end - first).days)]
    dates = sorted({dt.date.fromisoformat(text.strip()) for text in named.split(",") if text.strip()})
    outside = [d for d in dates if not first <= d < end]
    if not dates or outside:
        raise ValueError(f"run tag {AS_OF_DATES_TAG}={named!r}: every date must lie in the run's partitions "
                         f"{first} .. {end - dt.timedelta(days=1)}")
    return dates


def _dbt_executable() -> str:
    """dbt from this interpreter's environment, so the UI and tests work without an activated venv."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(path=dg.EnvVar("SHOPCAST_WAREHOUSE_PATH"),
                                           lock_timeout_seconds=dg.EnvVar.int("SHOPCAST_RUN_LOCK_TIMEOUT_SECONDS")),
            "serving": ServingResource(
                folder=dg.EnvVar("SHOPCAST_SERVING_DIR"),
                days=dg.EnvVar.int("SHOPCAST_SERVING_DAYS"),
                pseudonymise_user_ids=dg.EnvVar("SHOPCAST_PSEUDONYMISE_USER_IDS"),
                storage_version=dg.EnvVar("SHOPCAST_SERVING_STORAGE_VERSION"),
            ),
            "settings": PipelineSettings(
                home=dg.EnvVar("SHOPCAST_HOME"),
                business_timezone=dg.EnvVar("SHOPCAST_BUSINESS_TZ"),
                training_cutoffs=dg.EnvVar.int("SHOPCAST_TRAINING_CUTOFFS"),
                training_cadence_days=dg.EnvVar.int("SHOPCAST_TRAINING_CADENCE_DAYS"),
                clv_fit_users=dg.EnvVar.int("SHOPCAST_CLV_FIT_USERS"),
            ),
            "mlflow": MlflowStore(
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                artifact_root=dg.EnvVar("SHOPCAST_MLFLOW_ARTIFACTS"),
            ),
            "training_policy": TrainingPolicy(
                budget_seconds=dg.EnvVar.int("SHOPCAST_TRAINING_BUDGET_SECONDS"),
                families=dg.EnvVar("SHOPCAST_MODEL_FAMILIES"),
                gate_margin=dg.EnvVar("SHOPCAST_GATE_MARGIN"),
                min_examples_per_class=dg.EnvVar.int("SHOPCAST_MIN_CLASS_EXAMPLES"),
                min_roc_auc=dg.EnvVar("SHOPCAST_MIN_ROC_AUC"),
                min_pr_auc_skill=dg.EnvVar("SHOPCAST_MIN_PR_AUC_SKILL"),
                min_normalized_gini=dg.EnvVar("SHOPCAST_MIN_NORMALIZED_GINI"),
                backtest_cutoffs=dg.EnvVar.int("SHOPCAST_BACKTEST_CUTOFFS"),
                personal_features=dg.EnvVar("SHOPCAST_PERSONAL_FEATURES"),
                rows_per_cutoff=dg.EnvVar.int("SHOPCAST_TRAINING_ROWS_PER_CUTOFF"),
                max_training_rows=dg.EnvVar.int("SHOPCAST_MAX_TRAINING_ROWS"),
            ),
            "monitoring_policy": MonitoringPolicy(
                psi_warn=dg.EnvVar("SHOPCAST_PSI_WARN"),
                psi_fail=dg.EnvVar("SHOPCAST_PSI_FAIL"),
                null_rate_jump=dg.EnvVar("SHOPCAST_NULL_RATE_JUMP"),
                informational_features=dg.EnvVar("SHOPCAST_DRIFT_INFORMATIONAL_FEATURES"),
                performance_drop=dg.EnvVar("SHOPCAST_PERFORMANCE_DROP"),
                retrain_cooldown_days=dg.EnvVar.int("SHOPCAST_RETRAIN_COOLDOWN_DAYS"),
            ),
            "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=_dbt_executable()),
        }
    )


__all__ = ["AS_OF_DATES_TAG", "MlflowStore", "MonitoringPolicy", "PipelineSettings", "ServingResource", "TrainingPolicy", "WarehouseResource", "as_of_dates", "duckdb"]
