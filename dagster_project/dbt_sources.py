"""dbt's declaration of the tables the pipeline writes from Python (``dbt/models/audiences/__sources.yml``),
generated from the target registry: dbt sources cannot be templated, so the file is written from here and a test
keeps it equal (``python -m dagster_project.dbt_sources`` rewrites it after a target is added)."""

from __future__ import annotations

from dagster_project.settings import DBT_PROJECT_DIR
from ml.targets import ALL_TARGETS

SOURCES_FILE = DBT_PROJECT_DIR / "models" / "audiences" / "__sources.yml"


def prediction_sources_yml() -> str:
    lines = ["# Generated from ml/targets.py by dagster_project/dbt_sources.py: do not edit by hand.",
             "version: 2", "", "sources:", "  - name: predictions",
             ("    description: Scores written back by the Dagster scoring assets (one table per target) and the "
             "BG/NBD baseline."), "    schema: predictions", "    tables:"]
    for target in ALL_TARGETS.values():  # every registered target: the file is the same for every home
        lines += [f"      - name: {target.name}",
                  (f"        description: \"{target.description} Per user and as-of date, with decile, reason codes "
                  "and the model version.\"")]
    lines += ["      - name: next_items",
              ("        description: \"The recommendations: per user and as-of date, k items the user is likely to buy "
               "next (rank, item, category, score, reason, model version).\""),
              "      - name: new_items",
              ("        description: \"The cross-sell list: per user and as-of date, k items the user has not bought "
               "before.\""),
              "      - name: clv",
              ("        description: BG/NBD + Gamma-Gamma outputs (P(alive), expected purchases, expected spend) per "
              "user and as-of date.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    SOURCES_FILE.write_text(prediction_sources_yml())
    print(f"wrote {SOURCES_FILE}")
