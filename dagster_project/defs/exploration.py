"""The data exploration report (issue 26): per as-of date, an HTML page of what the events look like before any
model (dagster_project/explore.py), written into the Data Docs site that `shopcast ui` serves, linked from the
asset, its key charts in the metadata. `shopcast explore` materializes it from the command line."""

from urllib.parse import urljoin

import dagster as dg

from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import PipelineSettings, WarehouseResource, as_of_dates
from dagster_project.explore import explore, figures, write_html
from dagster_project.markdown import figure_to_markdown, frame_to_markdown

EXPLORATION = dg.AssetKey(["reports", "exploration"])


@dg.asset(key=EXPLORATION, group_name="reports", kinds={"python", "html"}, partitions_def=as_of_daily,
          pool="duckdb",
          deps=[dg.AssetKey(["marts", "feat_user_daily"]), dg.AssetKey(["marts", "fct_training_set"]),
                dg.AssetKey(["intermediate", "int_user_daily_activity"])],
          description="A data exploration report of the 90 days before the as-of date: events per day and type, "
                      "the view -> cart -> purchase funnel, weekly cohort retention, the main features by label, "
                      "missing values, top categories and items, the loads' rejection reasons (HTML, served by "
                      "`shopcast ui` beside the Data Docs).")
def exploration_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                       settings: PipelineSettings) -> dg.MaterializeResult:
    as_of = as_of_dates(context)[-1]
    with warehouse.reader() as con:
        found = explore(con, as_of)
    site, charts = settings.data_docs_site, figures(found)
    page = write_html(found, site / "exploration" / f"{as_of.isoformat()}.html", settings.home, charts)
    summary = found.summary()
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.url(urljoin(settings.data_docs_url.rstrip("/") + "/",
                                               page.relative_to(site).as_posix())),
        "report_file": str(page),
        "window": summary["window"], "events": summary["events"], "buyers": summary["buyers"],
        "view_to_purchase": summary["view_to_purchase"], "rejected_rows": summary["rejected_rows"],
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in found.notes) or "none"),
        "funnel": dg.MetadataValue.md(frame_to_markdown(found.funnel, "{:.3f}")),
        "events_per_day": dg.MetadataValue.md(figure_to_markdown(charts["events per day and type"], "events")),
        "cohort_retention": dg.MetadataValue.md(figure_to_markdown(charts["weekly cohort retention"], "cohorts")),
    })
