"""MLflow: tracking store and registry set-up, registration, aliases, loading by alias.

Models are addressed by alias (``models:/<name>@champion``), never by 'the newest file'.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
# These are model-training experiments: the tag says so to MLflow's clients and APIs. MLflow 3.17's UI ignores it
# (seen in a browser: an experiment opens on its GenAI traces page unless the page's address, or the user's toggle
# in the sidebar, says workflowType=machine_learning), so every link the project gives carries that parameter.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(ui_url: str, route: str) -> str:
    """An MLflow UI address (``route``: e.g. ``experiments/4`` or ``runs/<id>``) in the model-training view."""
    return f"{ui_url.rstrip('/')}/#/{route}?{MODEL_TRAINING_VIEW}"


# MLflow keeps absolute artifact URIs in its store: these columns of its SQL schema (MLflow 3) hold them
ARTIFACT_URI_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                        ("logged_models", "artifact_location"), ("model_versions", "storage_location"))
_FOLLOWED: set[tuple[str, Path]] = set()  # the stores this process has checked


def follow_artifact_root(tracking_uri: str, artifact_root: Path) -> str | None:
    """A home copied or moved elsewhere keeps its MLflow store, whose artifact URIs still point into the old home:
    rewrite them to ``artifact_root`` (the home's own artifact folder), so that ``@champion`` loads from the copy
    and never from the original. Returns the old root when it rewrote, None when nothing had moved. Only a local
    SQLite store whose experiments keep their artifacts in a local folder is rewritten (a tracking server or an
    object store is not the home's to move)."""
    import sqlite3

    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if not database.exists():
        return None
    new_root = artifact_root.absolute().as_uri()
    with sqlite3.connect(database) as con:
        tables = {name for (name,) in con.execute("select name from sqlite_master where type = 'table'")}
        if "experiments" not in tables:
            return None
        # each experiment's folder is <root>/<its name> (Store.experiment_id), so its location gives the root
        roots = {location.rsplit("/", 1)[0] for (location,) in con.execute("select artifact_location from experiments where name != 'Default' "
                                                "and artifact_location like 'file://%'")}
        old_roots = sorted(root for root in roots if root != new_root)
        if not old_roots:
            return None
        for old_root in old_roots:
            for table, column in ARTIFACT_URI_COLUMNS:
                if table in tables:
                    con.execute(f"update {table} set {column} = ? || substr({column}, ?) "
                                f"where {column} like ? escape '\\'",
                                [new_root, len(old_root) + 1, old_root.replace("%", "\\%").replace("_", "\\_")
                                 + "/%"])
    return ", ".join(old_roots)


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: Path

    def activate(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if (self.tracking_uri, self.artifact_root) not in _FOLLOWED:
            follow_artifact_root(self.tracking_uri, self.artifact_root)
            _FOLLOWED.add((self.tracking_uri, self.artifact_root))
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str, description: str = "") -> str:
        """The experiment of a registered model's training runs, created on first use as a model-training experiment
        (an older store's experiment is tagged when next used), described in the UI by ``description``."""
        client = self.activate()
        experiment = client.get_experiment_by_name(name)
        tags = EXPERIMENT_KIND | ({"mlflow.note.content": description} if description else {})
        if experiment is None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            return client.create_experiment(name, artifact_location=(self.artifact_root.absolute() / name).as_uri(), tags=tags)
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def describe(self, entry: RegisteredModel, model: str, version: str) -> None:
        """What the registered model is (``model``: its target, population, metric and gate rule) and what this
        version is (``version``: its family, data and the gate's reason), shown on the registry's pages."""
        client = self.activate()
        if client.get_registered_model(entry.name).description != model:
            client.update_registered_model(entry.name, description=model)
        client.update_model_version(entry.name, entry.version, description=version)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    tags: dict

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def version_by_alias(store: Store, name: str, alias: str) -> RegisteredModel | None:
    client = store.activate()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return RegisteredModel(name, str(mv.version), mv.run_id, dict(mv.tags))


def load_by_alias(store: Store, name: str, alias: str = CHAMPION):
    """(fitted scikit-learn model, its registry entry), loaded from ``models:/<name>@<alias>``."""
    entry = version_by_alias(store, name, alias)
    if entry is None:
        raise LookupError(f"no model version of {name!r} has the alias {alias!r}: train and promote one first")
    store.activate()
    import mlflow.sklearn

    return mlflow.sklearn.load_model(f"models:/{name}@{alias}"), entry


def load_version(store: Store, entry: RegisteredModel):
    """The fitted scikit-learn model of one registered version."""
    store.activate()
    import mlflow.sklearn

    return mlflow.sklearn.load_model(entry.uri)


def load_review_features(store: Store, entry: RegisteredModel):
    """The fitted ReviewFeatures a version's model was trained with (ml/review_features.py): logged in the training
    run its candidate run belongs to. An error naming the version when there is none."""
    from ml.review_features import ARTIFACT, load

    client = store.activate()
    parent = client.get_run(entry.run_id).data.tags.get("mlflow.parentRunId")
    for run_id in (entry.run_id, parent):
        if run_id and ARTIFACT in {f.path for f in client.list_artifacts(run_id)}:
            with tempfile.TemporaryDirectory() as folder:
                return load(Path(client.download_artifacts(run_id, ARTIFACT, folder)))
    raise LookupError(f"{entry.name} v{entry.version} reads review features, but neither its run {entry.run_id} nor "
                      f"its training run {parent} holds {ARTIFACT}: retrain it")


def version_for_date(store: Store, name: str, as_of: str) -> RegisteredModel | None:
    """The version registered for an as-of date (the newest, if training ran twice), or None."""
    versions = store.activate().search_model_versions(f"name = '{name}' and tags.as_of_date = '{as_of}'")
    if not versions:
        return None
    mv = max(versions, key=lambda v: int(v.version))
    return RegisteredModel(name, str(mv.version), mv.run_id, dict(mv.tags))


def run_tags(store: Store, entry: RegisteredModel) -> dict:
    """The tags of the training run behind a version (training dates, validation date...)."""
    return dict(store.activate().get_run(entry.run_id).data.tags)


def run_metrics(store: Store, entry: RegisteredModel) -> dict[str, float]:
    """The metrics of the training run behind a version (its validation metrics)."""
    return dict(store.activate().get_run(entry.run_id).data.metrics)


def latest_training(store: Store, name: str, metrics: tuple[str, ...]) -> dict | None:
    """The newest finished training run of a target: its candidates' and the baseline's validation ``metrics``."""
    client = store.activate()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    parents = client.search_runs([experiment.experiment_id],
                                 "tags.best_run_id LIKE '%' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        return None
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    # by run name: the family and its feature set ("gradient_boosting (behaviour)")
    candidates = {c.info.run_name or c.data.tags.get("family"):
                  {k: round(c.data.metrics[k], 4) for k in metrics if k in c.data.metrics} for c in children}
    baseline = {k: round(parent.data.metrics[f"baseline_{k}"], 4) for k in metrics
                if f"baseline_{k}" in parent.data.metrics}
    return {"run_id": parent.info.run_id, "validation_as_of_date": parent.data.tags.get("validation_as_of_date"),
            "best_family": parent.data.tags.get("best_family"), "candidates": candidates, "baseline": baseline,
            "baseline_name": parent.data.tags.get("baseline_name", "naive")}


def training_dates(store: Store, entry: RegisteredModel) -> set[str]:
    """The as-of dates (cutoffs) a version was trained on."""
    return {d for d in run_tags(store, entry).get("training_as_of_dates", "").split(",") if d}


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    store.activate().set_registered_model_alias(name, alias, version)


def tag_version(store: Store, name: str, version: str, tags: dict) -> None:
    client = store.activate()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
