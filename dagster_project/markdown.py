"""Small Markdown tables for Dagster metadata previews (no extra dependency)."""

from __future__ import annotations

import pandas as pd


def frame_to_markdown(frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return float_format.format(value)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
