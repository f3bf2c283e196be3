"""Every setting of shopcast, in one typed model: its type, default, bounds and one-line doc are written here once.

Where a value comes from, lowest to highest priority:
1. the default below;
2. the home's project file, ``<home>/shopcast.toml`` (``key = value`` lines with the field names below; ``shopcast
   sample`` writes its presets there), so that every process opening the home (the CLI, ``make ui``, the daemon)
   sees the same values;
3. an environment variable ``SHOPCAST_<FIELD>`` (``SHOPCAST_GATE_MARGIN=0.01``).

The home itself comes from the environment (``SHOPCAST_HOME``) or the default ``./data``. An invalid value fails at
load, naming the setting, the value and what is allowed. Nothing else in the code reads a ``SHOPCAST_*`` variable:
resources, the CLI, dbt's vars and the subprocesses started for the UIs get their values from here
(``shopcast config`` prints them and where each came from). No Dagster import: the CLI, the tests and the
Dagster resources all read this one model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt"


def file_stamps(files) -> tuple:
    """(path, mtime, size) of each existing file: what tells a changed file from the one seen before, cheaply."""
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists())


def dbt_source_stamps(project_dir: Path = DBT_PROJECT_DIR) -> tuple:
    """``file_stamps`` of every file of the dbt project a parse reads (not its target or packages' installs): what
    changes the manifest, apart from the vars."""
    files = [p for folder in ("models", "macros", "tests", "seeds", "snapshots", "analyses")
             for p in sorted((project_dir / folder).rglob("*")) if p.is_file()]
    files += [project_dir / name for name in ("dbt_project.yml", "packages.yml", "package-lock.yml")]
    return file_stamps(files)

# What a run decides travels to dbt in this variable, not in --vars (defs/resources.py ShopcastDbt; read by the
# macro run_var, dbt/macros/as_of.sql)
DBT_RUN_VARS_ENV = "DBT_SHOPCAST_RUN_VARS"
ENV_PREFIX = "SHOPCAST_"
PROJECT_FILE = "shopcast.toml"
LEGACY_SETTINGS_FILE = "settings.env"   # what homes of shopcast <= 0.1 kept (KEY=VALUE lines); read, then replaced
# Settings that live in the environment only: where the home is (the file is inside it), secrets, test hooks.
ENVIRONMENT_ONLY = frozenset({"home", "pseudonymisation_key", "failpoint", "datasets"})

# Telemetry off: the product runs offline and must not phone home (variables the libraries read themselves).
OFFLINE_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # not telemetry, but noise: a progress bar on every artifact a run downloads (the review encoder of a model)
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the setting, the value and what is allowed."""


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not a known IANA time zone name (e.g. UTC, Europe/London)") from exc
    return name


def _subset(text: str, what: str, known) -> str:
    """"all", or a comma-separated subset of the names ``known()`` returns (imported only when needed: the model
    libraries are slow imports, and every command validates its settings)."""
    if text.strip() in ("", "all"):
        return "all"
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    names = list(known())
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; expected all or some of {', '.join(names)}")
    return ",".join(chosen)


def _families(text: str) -> str:
    def known():
        from ml.models import FAMILIES, REGRESSION_FAMILIES

        return [*FAMILIES, *REGRESSION_FAMILIES]

    return _subset(text, "famil(ies)", known)


def _feature_sets(text: str) -> str:
    def known():
        from ml.features import FEATURE_SETS

        return FEATURE_SETS

    return _subset(text, "feature set(s)", known)


def _recommenders(text: str) -> str:
    def known():
        from ml.recommendations import CANDIDATES

        return CANDIDATES

    return _subset(text, "recommender(s)", known)


def _optional_targets(text: str) -> str:
    """"" or a comma-separated subset of the optional targets (unlike the lists above, none is the default)."""
    if not text.strip():
        return ""
    from ml.targets import OPTIONAL_TARGETS

    chosen = _subset(text, "optional target(s)", lambda: OPTIONAL_TARGETS)
    return ",".join(OPTIONAL_TARGETS) if chosen == "all" else chosen


TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
OptionalTargetList = Annotated[str, AfterValidator(_optional_targets)]
RecommenderList = Annotated[str, AfterValidator(_recommenders)]
FamilyList = Annotated[str, AfterValidator(_families)]
FeatureSetList = Annotated[str, AfterValidator(_feature_sets)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True,
                                      env_ignore_empty=True)

    # -- where state lives
    home: Path = Field(Path("data"), description="all state: warehouse, MLflow, Dagster home, landing files")
    business_tz: TimeZoneName = Field(
        "UTC", description="the zone business days (partitions, windows) follow; raw timestamps stay UTC")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="what builds the dbt project: DuckDB in the home's one file, or Apache Spark (the spark "
                              "extra; a local session with its tables under the home: docs/scale_out.md). A home runs "
                              "on one engine")
    # -- training windows
    training_cutoffs: int | None = Field(
        None, ge=2, le=104, description="training cutoffs in the training set; unset: chosen from the span of "
                                        "history (training_windows.py)")
    training_cadence_days: int | None = Field(
        None, ge=1, le=28, description="days between training cutoffs; unset: chosen from the span of history")
    partitions_start: dt.date = Field(
        dt.date(2010, 1, 1), description="the first as-of date a run may ask for (the daily partitions' start): each "
                                         "load moves it back to its data's first business day, in the project file")
    active_window_days: int = Field(
        28, ge=1, le=365, description="who is scored and trained on at an as-of date: users with an event in this "
                                      "many days before it (90 or more where customers buy a few times a year)")
    # -- targets, training and the gate
    extra_targets: OptionalTargetList = Field(
        "", description="optional targets trained, gated and scored beside the default three, comma-separated: "
                        "purchase_propensity_90d (for shops whose customers buy a few times a year; its 90-day label "
                        "makes every target's newest training cutoff 90 days old)")
    gate_margin: float = Field(0.0, ge=0, le=1, allow_inf_nan=False,
                               description="primary metric a candidate must gain over the champion to replace it")
    training_budget_seconds: int = Field(
        300, ge=1, description="time budget of one target's model search, shared by the families: every family "
                               "tries at least its first configuration, further ones while they and the refit fit in "
                               "what is left")
    model_families: FamilyList = Field(
        "all", description="or a comma-separated subset of logistic_regression, decision_tree, random_forest, "
                           "linear_svm, neural_network, gradient_boosting, gru (the sequence model, opt-in: not in "
                           "all; needs the deep extra, left out with the reason otherwise)")
    feature_sets: FeatureSetList = Field(
        "all", description="or a comma-separated subset of counts, behaviour, reviews, sequence: the feature sets the "
                           "families are tried on (each aggregate family on counts, behaviour and, where the shop "
                           "loads reviews, reviews; the sequence families on sequence; see ml/features.py)")
    min_class_examples: int = Field(
        1000, ge=1, description="eligibility: positive and negative examples a target's training cutoffs must hold "
                                "(the validation cutoff a tenth); below it the target is not trained")
    min_roc_auc: Fraction = Field(0.6, description="quality floor: a candidate below it is never promoted")
    min_pr_auc_skill: Fraction = Field(
        0.05, description="quality floor: (PR-AUC - base rate) / (1 - base rate), PR-AUC's gain over a random "
                          "ranking")
    min_normalized_gini: float = Field(0.2, ge=-1, le=1, allow_inf_nan=False,
                                       description="quality floor of amount targets (revenue)")
    min_expected_over_observed: float = Field(
        0.8, gt=0, allow_inf_nan=False, description="quality floor: a classifier's calibrated probabilities summed over "
                                                    "the validation cutoff, over the positives observed, at least this; "
                                                    "after release, a champion's realised ratio outside the band warns "
                                                    "and asks for a retrain")
    max_expected_over_observed: float = Field(
        1.25, gt=0, allow_inf_nan=False, description="quality floor: ... and at most this (probabilities that add up)")
    backtest_cutoffs: int = Field(
        3, ge=1, description="closed cutoffs on which a candidate is backtested against the champion before the gate "
                             "decides")
    purge_overlapping_labels: bool = Field(
        True, description="a model judged on a cutoff (validation, tuning, each backtest fold) trains only on cutoffs "
                          "whose label windows close by it; false trains on overlapping windows too, for a history "
                          "too short for that (the 9-day Taobao sample), and every run says its figures are "
                          "optimistic")
    training_rows_per_cutoff: int = Field(
        200_000, ge=100, description="training and the gate read at most about this many users per cutoff: a hash "
                                     "sample of user ids taken in the warehouse (the same users at every cutoff)")
    max_training_rows: int = Field(
        100_000, ge=100, description="models (and the gate's backtest refits) are fitted on a uniform sample of at "
                                     "most this many rows; validation is never sampled")
    clv_fit_users: int = Field(
        100_000, ge=100, description="BG/NBD and Gamma-Gamma are fitted on at most this many users per date (a hash "
                                     "sample), then applied to every user")
    personal_features: bool = Field(
        False, description="true lets personal attributes (age, gender, region...) be model features")
    text_model_dir: Path | None = Field(
        None, description="a local sentence-transformers model folder (one SentenceTransformer.save wrote, copied "
                          "from a machine with internet; the deep extra) that encodes review text; read, never "
                          "downloaded; unset: TF-IDF with a truncated SVD (docs/reviews.md)")
    # -- recommendations (which items each user buys next)
    recommendation_horizon_days: int = Field(
        28, ge=1, le=90, description="the recommendations' truth: the items a user buys in this many days after a "
                                     "cutoff")
    recommendation_candidates: RecommenderList = Field(
        "all", description="or a comma-separated subset of the recommenders of ml/recommendations.py (popularity, "
                           "history_bought, als, ease, reranker...); the best naive one is always tried; the "
                           "sequence recommenders (gru4rec, history_engaged_then_gru4rec) only when named")
    recommendations_per_user: int = Field(10, ge=1, le=100, description="items in each user's next_items and "
                                                                         "new_items lists")
    cold_start_window_days: int = Field(
        28, ge=1, le=365, description="the cold-start list offers items first seen within this many days before the "
                                      "date, by their text (docs/reviews.md); published where the text beats the "
                                      "rankings without text on items held out from training")
    recommendation_training_users: int = Field(
        100_000, ge=100, description="the recommenders are fitted and backtested on at most this many users (those "
                                     "with the smallest hash of their id, the same from run to run); every user is "
                                     "served, from their own interactions")
    recommendation_min_buyers: int = Field(
        30, ge=1, description="eligibility: users with history who bought in the validation cutoff's horizon; below "
                              "it the recommenders are not trained")
    # -- monitoring
    psi_warn: float = Field(0.1, gt=0, allow_inf_nan=False,
                            description="drift checks warn above this population stability index")
    psi_fail: float = Field(0.25, gt=0, allow_inf_nan=False,
                            description="drift checks fail above this population stability index")
    drift_informational_features: str = Field(
        "tenure_days,clv_*", description="features (patterns) whose PSI is shown with status info but never fails "
                                         "the drift check: they move by construction")
    null_rate_jump: Fraction = Field(0.1, description="a rise in a feature's share of missing values that the drift "
                                                      "checks warn about")
    performance_drop: Fraction = Field(
        0.05, description="realised primary metric this far below the promoted figure requests a retrain")
    retrain_cooldown_days: int = Field(7, ge=0, description="the retraining sensor asks at most once per target in "
                                                            "this many days")
    # -- serving
    serving_days: int = Field(28, ge=1, description="as-of dates of each prediction and audience table kept in the "
                                                    "serving file")
    pseudonymise_user_ids: bool = Field(
        False, description="true: user ids in everything published become u_ + HMAC-SHA256(pseudonymisation key, id)")
    pseudonymisation_key: SecretStr | None = Field(
        None, description="the secret of the pseudonyms, at least 16 characters; environment only, never stored")
    serving_storage_version: str = Field(
        "v1.0.0", pattern=r"^v\d+\.\d+\.\d+$", description="the oldest DuckDB that must open the serving file (BI "
                                                            "drivers lag behind)")
    # -- operations
    data_docs_url: str = Field(
        "http://127.0.0.1:3001", pattern=r"^https?://[^/\s]+/?$",
        description="where `shopcast ui` serves the home's Great Expectations Data Docs (its port is this address's): "
                    "the checks' links point there")
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", pattern=r"^https?://[^/\s]+/?$",
        description="where `shopcast mlflow-ui` serves the MLflow UI (its port is this address's): the training "
                    "assets' links point there, in MLflow's model-training view")
    run_lock_timeout_seconds: float = Field(
        1800, gt=0, allow_inf_nan=False, description="how long a run waits for another run of the same home before "
                                                     "it fails")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "WARNING", description="the run messages the CLI prints beside its one line per step (every event is in the "
                               "command's log file under the home and in the UI)")
    duckdb_memory_limit: str = Field(
        "6GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB memory bound for dbt and loads (beyond it they spill under the home)")
    datasets: Path | None = Field(
        None, description="the folder of the shared real samples (default: ../shared/datasets beside the checkout)")
    failpoint: str | None = Field(None, description="crash tests only: the failpoint at which the process kills "
                                                    "itself (faults.py)")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # the file lives in the home: the one the caller names (load_settings always does), else the environment's
        home = init_settings.init_kwargs.get("home")
        return init_settings, env_settings, _ProjectFileSource(settings_cls, Path(home) if home else None)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.psi_fail < self.psi_warn:
            raise ValueError(f"psi_fail ({self.psi_fail}) must not be below psi_warn ({self.psi_warn})")
        if self.max_expected_over_observed <= self.min_expected_over_observed:
            raise ValueError(f"max_expected_over_observed ({self.max_expected_over_observed}) must be above "
                             f"min_expected_over_observed ({self.min_expected_over_observed})")
        if self.pseudonymise_user_ids and len(self.key) < 16:
            raise ValueError(f"pseudonymise_user_ids is on but {env_name('pseudonymisation_key')} is missing or "
                             "shorter than 16 characters")
        return self

    # -- derived
    @property
    def paths(self) -> ShopcastPaths:
        return ShopcastPaths(self.home)

    @property
    def key(self) -> str:
        return self.pseudonymisation_key.get_secret_value() if self.pseudonymisation_key else ""

    @property
    def family_list(self) -> list[str] | None:
        return None if self.model_families == "all" else self.model_families.split(",")

    @property
    def informational_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.drift_informational_features.split(",") if p.strip())

    @property
    def datasets_dir(self) -> Path:
        return (self.datasets or REPO_ROOT.parent / "shared" / "datasets").expanduser()

    @property
    def extra_target_list(self) -> list[str]:
        return [name for name in self.extra_targets.split(",") if name]

    def dbt_vars(self) -> dict:
        """The vars every dbt invocation gets from the settings (a run adds its dates and training windows)."""
        from ml.targets import enabled_targets

        return dbt_base_vars(self.paths.warehouse, self.duckdb_memory_limit, self.business_tz,
                             enabled_targets(self.extra_target_list), self.active_window_days)

    def subprocess_env(self) -> dict[str, str]:
        """What a process this one starts needs to see the same home: the UIs (Dagster's instance, MLflow's store),
        dbt and the CLI. The settings themselves travel in the project file and the environment."""
        return {**OFFLINE_ENV, env_name("home"): str(self.home), "DAGSTER_HOME": str(self.paths.dagster_home),
                "MLFLOW_TRACKING_URI": self.paths.mlflow_tracking_uri, "DBT_LOG_PATH": str(self.paths.logs / "dbt")}


def dbt_base_vars(warehouse: Path, duckdb_memory_limit: str, business_timezone: str, targets: dict | None = None,
                  active_window_days: int = 28) -> dict:
    """The dbt vars that come from the settings and the target registry, on every dbt invocation (the profile reads
    the warehouse path and memory limit; the models the zone, the targets' horizons and the sequences' length).
    The same on every invocation of a home: what a run decides goes to dbt apart (defs/resources.py ShopcastDbt)."""
    from ml.sequences import SEQUENCE_LENGTH
    from ml.targets import dbt_vars as target_vars

    return {"warehouse_path": str(warehouse), "duckdb_memory_limit": duckdb_memory_limit,
            "business_timezone": business_timezone, "sequence_length": SEQUENCE_LENGTH,
            "active_window_days": active_window_days, **target_vars(targets)}


def env_name(field: str) -> str:
    """The environment variable of a setting (for messages: the name is built here, never spelled elsewhere)."""
    if field not in Settings.model_fields:
        raise KeyError(field)
    return ENV_PREFIX + field.upper()


class _ProjectFileSource(PydanticBaseSettingsSource):
    """``<home>/shopcast.toml``; the home is the one the environment (or the caller) names."""

    def __init__(self, settings_cls, home: Path | None = None):
        super().__init__(settings_cls)
        self.values = read_project_file(home or _home_from_environment())

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def _home_from_environment() -> Path:
    return Path(os.environ.get(ENV_PREFIX + "HOME") or "data").expanduser().resolve()


def read_project_file(home: Path) -> dict[str, Any]:
    """The settings a home's project file holds (an older home's settings.env is read as the same)."""
    file = home / PROJECT_FILE
    if file.is_file():
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{file}: not valid TOML: {exc}") from exc
    elif (home / LEGACY_SETTINGS_FILE).is_file():
        values = _read_legacy(home / LEGACY_SETTINGS_FILE)
    else:
        return {}
    unknown = sorted(set(values) - set(Settings.model_fields))
    refused = sorted(set(values) & ENVIRONMENT_ONLY)
    if unknown or refused:
        raise SettingsError(f"{file}: " + "; ".join(
            ([f"unknown setting(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"{', '.join(refused)} can only be set in the environment"] if refused else [])))
    return values


def _read_legacy(file: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key.startswith(ENV_PREFIX):
            raise SettingsError(f"{file}:{number}: expected {ENV_PREFIX}NAME=VALUE")
        values[key.removeprefix(ENV_PREFIX).lower()] = value
    return values


def write_project_file(home: Path, values: dict[str, Any], comment: str) -> Path:
    """Write ``values`` (field names) to the home's project file, after validating them as settings would."""
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown or set(values) & ENVIRONMENT_ONLY:
        raise SettingsError(f"not a project-file setting: {', '.join(unknown or sorted(set(values) & ENVIRONMENT_ONLY))}")
    load_settings(home=home, **values)  # fail before writing anything invalid
    home.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    file = home / PROJECT_FILE
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (home / LEGACY_SETTINGS_FILE).unlink(missing_ok=True)
    return file


def start_partitions_at(home: Path, first_event_day: dt.date) -> dt.date | None:
    """Partitions start where the home's data starts: after a load whose first event's business day is before the
    project file's ``partitions_start`` (or the file has none), write that day there, keeping the file's other
    settings and comments. Returns the new start, or None when the file already covers the data. (The environment
    still overrides the file; the Dagster UI reads the new start when its code location is next loaded.)"""
    values = read_project_file(home)
    current = values.get("partitions_start")
    if current is not None and dt.date.fromisoformat(str(current)) <= first_event_day:
        return None
    file = home / PROJECT_FILE
    comments = [line.removeprefix("# ") for line in file.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")] if file.is_file() else []
    note = "partitions_start: the first event's business day of the loaded data (written by each load)"
    write_project_file(home, {**values, "partitions_start": first_event_day},
                       "\n".join([*[c for c in comments if c != note], note]))
    return first_event_day


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return json.dumps(str(value))  # a TOML basic string


def load_settings(*, home: Path | None = None, **overrides) -> Settings:
    """The effective settings: ``overrides`` (field names) > environment > the home's project file > defaults."""
    home = (Path(home).expanduser().resolve() if home is not None else _home_from_environment())
    try:
        return Settings(**overrides, home=home)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, home)) from None


def _explain(exc: ValidationError, home: Path) -> str:
    in_file = set(read_project_file(home))
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in Settings.model_fields:
            where = "settings"
        elif os.environ.get(env_name(field)):
            where = f"{env_name(field)} (environment)"
        elif field in in_file:
            where = f"{field} in {home / PROJECT_FILE}"
        else:
            where = f"{field} ({env_name(field)})"
        given = error.get("input")
        value = "" if isinstance(given, dict) else f"={given!r}"
        lines.append(f"invalid setting {where}{value}: {error['msg']}")
    return "\n".join(lines)


def sources(settings: Settings) -> dict[str, str]:
    """Where each effective value came from: default, file (the home's project file) or environment."""
    in_file = read_project_file(settings.home)
    out = {}
    for name in Settings.model_fields:
        if name == "home":
            out[name] = "environment" if os.environ.get(env_name(name)) else "default"
        elif os.environ.get(env_name(name)):
            out[name] = "environment"
        else:
            out[name] = "file" if name in in_file else "default"
    return out


def describe(settings: Settings) -> list[dict]:
    """Every setting with its effective value, source and doc (``shopcast config``)."""
    origin = sources(settings)
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = "(set)" if isinstance(value, SecretStr) else ("(unset)" if value is None else value)
        rows.append({"setting": name, "variable": env_name(name), "value": str(shown), "source": origin[name],
                     "doc": field.description})
    return rows


def settings_table_markdown() -> str:
    """The README's configuration table, generated from the model (tests/test_settings.py keeps them equal)."""
    lines = ["| variable | project file key | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = ("(none)" if default is None else str(default).lower() if isinstance(default, bool)
                 else "./data" if name == "home" else str(default))
        key = "(environment only)" if name in ENVIRONMENT_ONLY else f"`{name}`"
        lines.append(f"| `{env_name(name)}` | {key} | `{shown}` | {field.description} |")
    return "\n".join(lines)


def offline() -> None:
    """Telemetry off in this process (and what it starts), before dbt, GX or MLflow is imported."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def ensure_home(settings: Settings | None = None) -> Settings:
    """Create the home's folders and its Dagster instance file; the entry points (CLI, tests) call it once."""
    settings = settings or load_settings()
    paths = settings.paths
    # tmp/duckdb: where DuckDB spills (warehouse.duckdb_config); DuckDB creates only its last level
    for folder in (paths.home, paths.dagster_home, paths.mlflow_artifacts, paths.landing, paths.logs,
                   paths.home / "tmp" / "duckdb"):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = paths.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    offline()
    return settings


@dataclass(frozen=True)
class ShopcastPaths:
    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def data_docs_site(self) -> Path:
        """Great Expectations' local Data Docs site in the home's file context (expectations/runner.py: the context's
        root is <home>/gx, and GX keeps its files in a gx/ folder there)."""
        return self.home / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site"

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

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    @property
    def spark(self) -> Path:
        """engine=spark: Spark's warehouse (the dbt project's tables) and metastore, and the Parquet copies of the
        DuckDB tables the models read (dagster_project/spark_engine.py)."""
        return self.home / "spark"

    @property
    def dbt_invocations(self) -> Path:
        """dbt's target folders, one per invocation (artifacts and log), and the parse they pass on."""
        return self.home / "dbt"


def get_paths() -> ShopcastPaths:
    return load_settings().paths


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
