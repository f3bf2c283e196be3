"""Loaders from shop exports into the canonical raw layer, with quarantine and a reconciled audit."""

from dagster_project.ingest.loader import FORMATS, IngestError, LoadReport, load_file, load_path

__all__ = ["FORMATS", "IngestError", "LoadReport", "load_file", "load_path"]
