"""shopcast's orchestration layer: settings, ingestion, generator, CLI and the Dagster definitions (defs/)."""
