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


def figure_to_png_base64(figure, dpi: int = 80) -> str:
    """A matplotlib figure as a base64 PNG (closed afterwards), for a data: URL."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_to_markdown(figure, alt: str) -> str:
    """A matplotlib figure as an inline PNG image, which the Dagster UI shows in a Markdown metadata entry."""
    return f"![{alt}](data:image/png;base64,{figure_to_png_base64(figure)})"
