"""MLflow: tracking store and registry set-up, registration, aliases, loading by alias.

Models are addressed by alias (``models:/<name>@champion``), never by 'the newest file'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: Path

    def activate(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        client = self.activate()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=(self.artifact_root / name).as_uri())


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


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    store.activate().set_registered_model_alias(name, alias, version)


def tag_version(store: Store, name: str, version: str, tags: dict) -> None:
    client = store.activate()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
