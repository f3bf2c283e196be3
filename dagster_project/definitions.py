"""The Dagster code location: everything under defs/ is discovered, one module per concern. Resources are
configured from the one settings model (dagster_project/settings.py); nothing here writes files."""

from pathlib import Path

import dagster as dg

from dagster_project.settings import offline

offline()  # telemetry off before dbt, GX and MLflow are imported


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
