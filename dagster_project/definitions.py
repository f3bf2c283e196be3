"""The Dagster code location: everything under defs/ is discovered, one module per concern."""

from pathlib import Path

import dagster as dg

from dagster_project.settings import configure_environment

configure_environment()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
