"""Loaders from shop exports into the canonical raw layer, with quarantine and a reconciled audit."""

from dagster_project.ingest.formats import FORMATS
from dagster_project.ingest.loader import LoadReport, load_file, load_path
from dagster_project.ingest.readers import IngestError

__all__ = ["FORMATS", "IngestError", "LoadReport", "load_file", "load_path"]
