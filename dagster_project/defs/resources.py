"""Typed resources, configured from the one settings model (dagster_project/settings.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster_dbt import DbtCliResource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation
from packaging.version import Version

from dagster_project.dbt_in_process import PARTIAL_PARSE, InProcessDbt, in_process
from dagster_project.dbt_project import dbt_project
from dagster_project.locking import PID_TAG, recover_crashed_runs, run_lock
from dagster_project.serving import CURRENT_LINK, PARQUET_DIR, Publish, ServingOptions, publish, serving_path
from dagster_project.settings import DBT_RUN_VARS_ENV, Settings, ShopcastPaths, load_settings
from dagster_project.spark_engine import SPARK_TARGET
from dagster_project.training_windows import TrainingWindows, choose_windows
from dagster_project.warehouse import connect, ensure_raw_schema, history_start, table_exists


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Read-write connections are opened only to write, and closed at once.

    Within a run it also holds the home's run lock (dagster_project/locking.py) from the first step to the last:
    one run writes at a time; another waits up to ``lock_timeout_seconds`` and then fails, saying who holds it."""

    path: str
    lock_timeout_seconds: float = 1800

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
    """Where state lives and the business rules every stage shares (values from dagster_project/settings.py)."""

    home: str
    business_timezone: str = "UTC"
    training_cutoffs: int | None = None       # None: chosen from the span of history (training_windows.py)
    training_cadence_days: int | None = None
    clv_fit_users: int = 100_000        # BG/NBD is fitted on a hash sample of at most this many users per date
    active_window_days: int = 28        # the population: users with an event in this many days before a date
    duckdb_memory_limit: str = "6GB"
    data_docs_url: str = "http://127.0.0.1:3001"  # where `shopcast ui` serves the Data Docs (the checks link there)
    engine: str = "duckdb"              # settings.engine

    def rows_scorer(self):
        """How the scoring assets score their rows (ml.predict.score): on Spark's workers where the engine is Spark
        (dagster_project/spark_engine.py), else in this process (None)."""
        if self.engine != "spark":
            return None
        from dagster_project import spark_engine

        return spark_engine.spark_rows_scorer(spark_engine.session_for(ShopcastPaths(Path(self.home)).spark))

    @property
    def gx_dir(self) -> Path:
        return Path(self.home) / "gx"

    @property
    def warehouse_file(self) -> Path:
        return Path(self.home) / "warehouse.duckdb"

    @property
    def data_docs_site(self) -> Path:
        """The Data Docs site `shopcast ui` serves at data_docs_url (the exploration reports live there too)."""
        return ShopcastPaths(Path(self.home)).data_docs_site

    @property
    def review_features_cache(self) -> Path:
        """Where a training run's ReviewFeatures fit is kept for its other targets (defs/reviews.py)."""
        return Path(self.home) / "cache" / "review_features"

    def windows(self, as_of: dt.date) -> TrainingWindows:
        """The training windows of a run at ``as_of``: pinned by the settings, or chosen from the events' span."""
        first_day = None
        if self.training_cutoffs is None or self.training_cadence_days is None:
            with connect(self.warehouse_file, read_only=True) as con:
                first_day = history_start(con, self.business_timezone) if table_exists(con, "raw", "events") \
                    else None
        return choose_windows(as_of, first_day, self.training_cutoffs, self.training_cadence_days)

    def training_cutoff_dates(self, as_of: dt.date) -> list[dt.date]:
        return self.windows(as_of).cutoff_dates(as_of)

    def dbt_run_vars(self, dates: list[dt.date]) -> dict:
        """What dbt learns of a run over ``dates`` (ShopcastDbt.build): a range, or (when they are not consecutive)
        the dates themselves, and the training windows."""
        consecutive = (dates[-1] - dates[0]).days == len(dates) - 1
        windows = self.windows(dates[-1])
        return {
            "min_as_of_date": dates[0].isoformat(),
            "as_of_date": dates[-1].isoformat(),
            "as_of_dates": None if consecutive else [d.isoformat() for d in dates],
            "training_cutoffs": windows.cutoffs,
            "training_cadence_days": windows.cadence_days,
        }


DBT_INVOCATIONS_KEPT = 20  # the newest target folders stay for a look at their artifacts and logs


class ShopcastDbt(DbtCliResource):
    """dbt, run in the run's own process with the project parsed once per process (dagster_project/dbt_in_process.py).

    The vars that come from the settings (``settings_vars``: the same on every invocation of a home) go as --vars,
    and what each run decides as DBT_RUN_VARS_ENV, read only when dbt executes: so one parse serves every
    invocation of a process, and a new process starts from the partial parse the last one left in the home.
    Each invocation's target folder (its artifacts and dbt.log) lies in the home."""

    settings_vars: str            # JSON: dagster_project/settings.py dbt_base_vars
    invocations_dir: str          # <home>/dbt
    engine: str = "duckdb"        # settings.engine: "spark" builds on the home's local SparkSession
    spark_dir: str = ""           # <home>/spark
    warehouse_path: str = ""      # the DuckDB warehouse: the loaders' raw layer, the scoring assets' tables

    def build(self, args: Sequence[str], run_vars: dict, *, context: dg.AssetExecutionContext | None = None,
              name: str | None = None, **kwargs) -> DbtCliInvocation:
        """``dbt <args>`` with the settings' vars and the run's, in a new target folder of the home named after
        the asset (``context``, which a dbt asset passes for its selection) or ``name``."""
        root = Path(self.invocations_dir)
        root.mkdir(parents=True, exist_ok=True)
        _prune(root)
        name = name or (context.op_execution_context.op.name if context else "dbt")
        target = root / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{name}-{uuid.uuid4().hex[:6]}"
        target.mkdir()
        environment, after, engine_args = {DBT_RUN_VARS_ENV: json.dumps(run_vars)}, None, []
        if self.engine == "spark":
            after, engine_args = self._on_spark(), ["--target", SPARK_TARGET]
        with in_process(InProcessDbt(environment=environment, parse_folder=root, after=after)):
            return self.cli([*args, *engine_args, "--vars", self.settings_vars], target_path=target, context=context,
                            **kwargs)

    def _on_spark(self):
        """engine=spark: the home's SparkSession, the DuckDB tables the models read published to it (the raw layer,
        the prediction tables), and what to do when dbt is done: its tables as views of the DuckDB warehouse."""
        from dagster_project import spark_engine

        folder, warehouse = Path(self.spark_dir), Path(self.warehouse_path)
        spark = spark_engine.session_for(folder)
        for schema in ("raw", "predictions"):
            spark_engine.publish_schema(spark, warehouse, folder / "published", schema)
        return lambda: spark_engine.mirror_to_duckdb(spark, warehouse)

    @cached_property
    def _cli_version(self) -> Version:
        """The dbt-core this process runs (in process, so its own): dagster-dbt asks a `dbt --version` process,
        which cost every process that runs dbt ~2 s (measured) to learn what is imported here already."""
        from dbt.version import __version__

        return Version(__version__)

    def _initialize_dbt_core_adapter(self, args) -> None:
        """Not done: dagster-dbt opens a dbt adapter in this process only for the row counts and column metadata it
        can add to materializations, which shopcast does not ask for; loading it parsed every macro of the project
        on each invocation (6 s on the first, 1.3 s after, measured). dagster-dbt runs without one."""


def _prune(root: Path) -> None:
    """Keep the newest DBT_INVOCATIONS_KEPT target folders, and always the newest parse (the next process's start)."""
    earlier = sorted(p for p in root.iterdir() if p.is_dir())  # named by their start time
    parses = [p for p in earlier if (p / PARTIAL_PARSE).is_file()]
    for old in earlier[:max(0, len(earlier) + 1 - DBT_INVOCATIONS_KEPT)]:
        if not parses or old != parses[-1]:
            shutil.rmtree(old, ignore_errors=True)


class ServingResource(dg.ConfigurableResource):
    """Where and how BI's serving file is published (dagster_project/serving.py). The pseudonymisation key is
    read from the settings when a publish needs it: it is never run config."""

    folder: str
    days: int = 28
    pseudonymise_user_ids: bool = False
    storage_version: str = "v1.0.0"

    @property
    def path(self) -> Path:
        return serving_path(Path(self.folder))

    @property
    def parquet_current(self) -> Path:
        """The folder of the current publish's Parquet copies (a symlink swapped with each publish)."""
        return Path(self.folder) / PARQUET_DIR / CURRENT_LINK

    @property
    def pseudonymise(self) -> bool:
        return self.pseudonymise_user_ids

    def options(self) -> ServingOptions:
        from dagster_project.settings import load_settings

        return ServingOptions(days=self.days, pseudonymise=self.pseudonymise, key=load_settings().key,
                              storage_version=self.storage_version)

    def publish(self, warehouse_file: Path, as_of: dt.date, run_id: str) -> Publish:
        return publish(warehouse_file, Path(self.folder), as_of, self.options(), run_id)


class MlflowStore(dg.ConfigurableResource):
    """The MLflow tracking server and registry (a SQLite file in the home by default)."""

    tracking_uri: str
    artifact_root: str
    ui_url: str = "http://127.0.0.1:5000"  # where `shopcast mlflow-ui` serves (setting mlflow_ui_url)

    def store(self):
        from ml.registry import Store

        return Store(self.tracking_uri, Path(self.artifact_root))

    def run_link(self, run_id: str) -> str:
        """The run's page in the MLflow UI, in its model-training view (MLflow's /runs/<id> redirect drops the view)."""
        from mlflow import MlflowClient

        from ml.registry import ui_link

        experiment_id = MlflowClient(tracking_uri=self.tracking_uri).get_run(run_id).info.experiment_id
        return ui_link(self.ui_url, f"experiments/{experiment_id}/runs/{run_id}")


class TrainingPolicy(dg.ConfigurableResource):
    """How candidates are searched and when one may be published."""

    budget_seconds: int = 300           # one target's whole search (ml.train.train_candidates), per run
    families: str = "all"               # comma-separated model families, or all (validated by the settings)
    feature_sets: str = "all"           # comma-separated feature sets (ml/features.py), or all
    gate_margin: float = 0.0            # how much better (primary metric) a candidate must be than the champion
    min_examples_per_class: int = 1000  # eligibility: positives and negatives in the training cutoffs
    min_roc_auc: float = 0.6            # quality floor
    min_pr_auc_skill: float = 0.05      # (PR-AUC - base rate) / (1 - base rate)
    min_normalized_gini: float = 0.2    # amount targets
    min_expected_over_observed: float = 0.8   # calibration band of the classifiers' summed probabilities
    max_expected_over_observed: float = 1.25
    backtest_cutoffs: int = 3           # the gate compares candidate and champion on this many closed cutoffs
    personal_features: bool = False     # true: personal attributes (age, gender, region...) may be features
    rows_per_cutoff: int = 200_000      # training reads at most about this many users per cutoff (a hash sample)
    max_training_rows: int = 100_000    # models are fitted on at most this many rows (a uniform sample)
    purge_overlapping_labels: bool = True  # judged cutoffs train on cutoffs whose labels closed by them (ml/train.py)
    text_model_dir: str = ""            # a local sentence-transformers folder for review text ("": TF-IDF)

    @property
    def allow_personal_features(self) -> bool:
        return self.personal_features

    @property
    def margin(self) -> float:
        return self.gate_margin

    @property
    def family_list(self) -> list[str] | None:
        return None if self.families in ("", "all") else [f for f in self.families.split(",") if f]

    @property
    def feature_set_list(self) -> list[str] | None:
        return None if self.feature_sets in ("", "all") else [f for f in self.feature_sets.split(",") if f]

    def eligibility(self):
        from ml.targets import Eligibility

        return Eligibility(self.min_examples_per_class, self.min_roc_auc, self.min_pr_auc_skill,
                           self.min_normalized_gini, self.min_expected_over_observed,
                           self.max_expected_over_observed)


class RecommendationPolicy(dg.ConfigurableResource):
    """How the recommenders are chosen and served (ml/recommendations.py)."""

    horizon_days: int = 28              # the truth: items bought in this many days after a cutoff
    candidates: str = "all"             # comma-separated recommenders, or all
    per_user: int = 10                  # items per list
    min_buyers: int = 30                # eligibility: buyers with history in the validation cutoff's horizon
    backtest_cutoffs: int = 3           # folds, newest first (the first validates)
    gate_margin: float = 0.0
    training_users: int = 100_000       # fitted and backtested on a hash sample of at most this many users
    budget_seconds: int = 300           # the model search's budget (the naive candidates and the champion's always run)
    cold_start_window_days: int = 28    # the cold-start list's new items: first seen within this many days

    @property
    def candidate_list(self) -> list[str]:
        from ml.recommendations import CANDIDATES, NAIVE, OPT_IN

        chosen = ([c for c in CANDIDATES if c not in OPT_IN] if self.candidates in ("", "all")
                  else [c for c in self.candidates.split(",") if c])
        return [*chosen, *(n for n in NAIVE if n not in chosen)]  # the first champion is the best naive one

    def dates(self, as_of: dt.date, cadence_days: int):
        from ml.recommendations import protocol_dates

        return protocol_dates(as_of, self.horizon_days, cadence_days, self.backtest_cutoffs)


class MonitoringPolicy(dg.ConfigurableResource):
    """When drift or realised performance calls for a retrain."""

    psi_warn: float = 0.1
    psi_fail: float = 0.25
    null_rate_jump: float = 0.1
    informational_features: str = "tenure_days,clv_*"  # PSI reported, never failing (ml.monitoring.DriftLimits)
    performance_drop: float = 0.05  # realised primary metric below the validation figure by more than this
    retrain_cooldown_days: int = 7  # no retrain request for a champion trained fewer days ago than this
    min_expected_over_observed: float = 0.8   # realised scores summed over what happened: the band they must stay in
    max_expected_over_observed: float = 1.25

    @property
    def calibration_band(self) -> tuple[float, float]:
        return self.min_expected_over_observed, self.max_expected_over_observed

    def may_retrain(self, champion, as_of) -> bool:
        """A retrain signal counts only once the champion is old enough: a model trained for this week is not
        retrained for drift between its own training data and today (nor before its first label window closed)."""
        if champion is None or not champion.tags.get("as_of_date"):
            return True
        trained_for = dt.date.fromisoformat(champion.tags["as_of_date"])
        return (pd.Timestamp(as_of).date() - trained_for).days >= self.retrain_cooldown_days

    def limits(self):
        from ml.monitoring import DriftLimits

        return DriftLimits(self.psi_warn, self.psi_fail, self.null_rate_jump,
                           tuple(p.strip() for p in self.informational_features.split(",") if p.strip()))

    @property
    def drop(self) -> float:
        return self.performance_drop


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


def build_resources(settings: Settings) -> dict:
    """Every resource, configured from the one settings model (dagster_project/settings.py)."""
    paths = settings.paths
    return {
        "warehouse": WarehouseResource(path=str(paths.warehouse),
                                       lock_timeout_seconds=settings.run_lock_timeout_seconds),
        "serving": ServingResource(folder=str(paths.serving), days=settings.serving_days,
                                   pseudonymise_user_ids=settings.pseudonymise_user_ids,
                                   storage_version=settings.serving_storage_version),
        "settings": PipelineSettings(home=str(paths.home), business_timezone=settings.business_tz,
                                     training_cutoffs=settings.training_cutoffs,
                                     training_cadence_days=settings.training_cadence_days,
                                     clv_fit_users=settings.clv_fit_users,
                                     active_window_days=settings.active_window_days,
                                     duckdb_memory_limit=settings.duckdb_memory_limit,
                                     data_docs_url=settings.data_docs_url, engine=settings.engine),
        "mlflow": MlflowStore(tracking_uri=paths.mlflow_tracking_uri, artifact_root=str(paths.mlflow_artifacts),
                              ui_url=settings.mlflow_ui_url),
        "training_policy": TrainingPolicy(
            budget_seconds=settings.training_budget_seconds, families=settings.model_families,
            feature_sets=settings.feature_sets,
            gate_margin=settings.gate_margin, min_examples_per_class=settings.min_class_examples,
            min_roc_auc=settings.min_roc_auc, min_pr_auc_skill=settings.min_pr_auc_skill,
            min_normalized_gini=settings.min_normalized_gini,
            min_expected_over_observed=settings.min_expected_over_observed,
            max_expected_over_observed=settings.max_expected_over_observed, backtest_cutoffs=settings.backtest_cutoffs,
            personal_features=settings.personal_features, rows_per_cutoff=settings.training_rows_per_cutoff,
            max_training_rows=settings.max_training_rows, purge_overlapping_labels=settings.purge_overlapping_labels,
            text_model_dir=str(settings.text_model_dir or "")),
        "recommendation_policy": RecommendationPolicy(
            horizon_days=settings.recommendation_horizon_days, candidates=settings.recommendation_candidates,
            per_user=settings.recommendations_per_user, min_buyers=settings.recommendation_min_buyers,
            backtest_cutoffs=settings.backtest_cutoffs, gate_margin=settings.gate_margin,
            training_users=settings.recommendation_training_users, budget_seconds=settings.training_budget_seconds,
            cold_start_window_days=settings.cold_start_window_days),
        "monitoring_policy": MonitoringPolicy(
            psi_warn=settings.psi_warn, psi_fail=settings.psi_fail, null_rate_jump=settings.null_rate_jump,
            informational_features=settings.drift_informational_features,
            performance_drop=settings.performance_drop, retrain_cooldown_days=settings.retrain_cooldown_days,
            min_expected_over_observed=settings.min_expected_over_observed,
            max_expected_over_observed=settings.max_expected_over_observed),
        "dbt": ShopcastDbt(project_dir=dbt_project, dbt_executable=_dbt_executable(),
                           settings_vars=json.dumps(settings.dbt_vars()), invocations_dir=str(paths.dbt_invocations),
                           engine=settings.engine, spark_dir=str(paths.spark), warehouse_path=str(paths.warehouse)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(load_settings()))


__all__ = ["AS_OF_DATES_TAG", "MlflowStore", "MonitoringPolicy", "PipelineSettings", "RecommendationPolicy", "ServingResource", "TrainingPolicy", "WarehouseResource", "as_of_dates", "duckdb"]
