"""A data exploration report per home and as-of date (issue 26): what a data engineer meeting a new export looks at
before any model, as the source articles start. Events per day and type, the view -> cart -> purchase funnel,
weekly cohort retention, the main features' distributions by label, missing values, the top categories and items,
and the rejection reasons of the loads, over the window before the as-of date.

``explore`` reads the warehouse (staging, intermediate and marts, as the run built them) and returns the tables;
``figures`` draws the charts (matplotlib: the project's charting library, as in every asset's metadata);
``write_html`` writes one self-contained page (charts embedded as PNG, tables as HTML: it opens offline, from the
Data Docs site ``shopcast ui`` serves, or as a file).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dagster_project.markdown import figure_to_png_base64

WINDOW_DAYS = 90      # the events explored: the 90 days before the as-of date
COHORT_WEEKS = 12     # cohorts of first-seen weeks in the window, followed for as many weeks as the window holds
TOP = 15
FUNNEL = ("view", "cart", "checkout", "purchase")
# the features drawn by label: activity, recency, engagement, spend (columns of the training set)
FEATURES_BY_LABEL = ("events_28d", "days_since_last_event", "sessions_28d", "cart_count_28d", "purchase_count_90d",
                     "revenue_90d")
LABEL = "purchase_next_7d"


@dataclass
class Exploration:
    as_of: dt.date
    window_start: dt.date
    events_by_day: pd.DataFrame       # event_date, event_type, events
    funnel: pd.DataFrame              # stage, users, share_of_viewers, share_of_previous
    cohorts: pd.DataFrame             # cohort_week, users, week_1 .. week_n retention shares
    label_date: dt.date | None        # the training cutoff whose labels the features are drawn by
    features_by_label: pd.DataFrame   # feature, label, value (a row per user)
    missing: pd.DataFrame             # column, null_share (features at the as-of date)
    top_categories: pd.DataFrame
    top_items: pd.DataFrame
    rejections: pd.DataFrame          # reason_code, rows
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        events = int(self.events_by_day.events.sum()) if len(self.events_by_day) else 0
        viewers = self.funnel.set_index("stage").users.get("view", 0) if len(self.funnel) else 0
        buyers = self.funnel.set_index("stage").users.get("purchase", 0) if len(self.funnel) else 0
        return {"window": f"{self.window_start} .. {self.as_of - dt.timedelta(days=1)}", "events": events,
                "viewers": int(viewers), "buyers": int(buyers),
                "view_to_purchase": float(buyers / viewers) if viewers else float("nan"),
                "rejected_rows": int(self.rejections.rows.sum()) if len(self.rejections) else 0}


def _has(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]).fetchone()[0] > 0


def explore(con: duckdb.DuckDBPyConnection, as_of: dt.date, window_days: int = WINDOW_DAYS) -> Exploration:
    """The exploration's tables for the ``window_days`` before ``as_of`` (events strictly before it)."""
    if not _has(con, "staging", "stg_shop__events"):
        raise ValueError("staging.stg_shop__events does not exist: run the pipeline (shopcast run) before exploring")
    start = as_of - dt.timedelta(days=window_days)
    window = [start, as_of]
    events_by_day = con.execute("""
        select event_date, event_type, count(*) as events from staging.stg_shop__events
        where event_date >= ? and event_date < ? group by all order by all""", window).df()
    funnel = con.execute(f"""
        select stage, count(distinct user_id) as users from (
            select user_id, event_type as stage from staging.stg_shop__events
            where event_date >= ? and event_date < ? and event_type in ({", ".join("?" * len(FUNNEL))}))
        group by stage""", [*window, *FUNNEL]).df().set_index("stage").reindex(list(FUNNEL)).fillna(0)
    funnel["users"] = funnel.users.astype(int)
    viewers = funnel.users.get("view", 0)
    funnel["share_of_viewers"] = funnel.users / viewers if viewers else np.nan
    # a stage the shop does not record (no checkout events in many exports) is skipped, not a drop to zero
    recorded = funnel.users.where(funnel.users > 0)
    funnel["share_of_previous"] = funnel.users / recorded.shift(1).ffill()
    funnel = funnel.reset_index()
    notes = [f"no {stage} events in the window: the shop does not record them (the funnel skips the stage)"
             for stage in funnel.stage[funnel.users == 0]]
    cohorts = con.execute("""
        with first_seen as (
            select user_id, date_trunc('week', first_seen_date) as cohort_week from intermediate.int_user_first_seen
            where first_seen_date >= ? and first_seen_date < ?),
        active as (
            select distinct a.user_id, f.cohort_week,
                   cast(datediff('week', f.cohort_week, date_trunc('week', a.activity_date)) as integer) as week
            from intermediate.int_user_daily_activity a join first_seen f using (user_id)
            where a.activity_date < ?)
        select cohort_week, week, count(*) as users from active group by all order by all""",
                          [*window, as_of]).df()
    if len(cohorts):
        table = cohorts.pivot(index="cohort_week", columns="week", values="users").fillna(0)
        table = table[[w for w in table.columns if 0 <= w <= COHORT_WEEKS]]
        size = table[0] if 0 in table.columns else table.max(axis=1)
        shares = table.div(size, axis=0)
        # a week that has not begun by the as-of date is unknown, not a week without activity
        weeks_seen = (pd.Timestamp(as_of) - pd.to_datetime(shares.index)).days // 7
        shares = shares.where(np.asarray(shares.columns)[None, :] <= np.asarray(weeks_seen)[:, None])
        shares.columns = [f"week_{w}" for w in shares.columns]
        cohorts = shares.assign(users=size.astype(int)).reset_index()
        cohorts = cohorts[["cohort_week", "users", *[c for c in cohorts.columns if c.startswith("week_")]]]
        cohorts["cohort_week"] = pd.to_datetime(cohorts.cohort_week).dt.date
    label_date, features = None, pd.DataFrame(columns=["feature", "label", "value"])
    if _has(con, "marts", "fct_training_set"):
        label_date = con.execute(f"select max(as_of_date) from marts.fct_training_set where {LABEL} is not null "
                                 "and as_of_date < ?", [as_of]).fetchone()[0]
        if label_date is not None:
            columns = [c for c in FEATURES_BY_LABEL if c in _columns(con, "marts", "fct_training_set")]
            wide = con.execute(f"select {LABEL} as label, {', '.join(columns)} from marts.fct_training_set "
                               "where as_of_date = ?", [label_date]).df()
            features = wide.melt(id_vars="label", var_name="feature", value_name="value")
    missing = pd.DataFrame(columns=["column", "null_share"])
    if _has(con, "marts", "feat_user_daily"):
        columns = [c for c in _columns(con, "marts", "feat_user_daily") if c not in ("user_id", "as_of_date")]
        newest = con.execute("select max(as_of_date) from marts.feat_user_daily where as_of_date <= ?",
                             [as_of]).fetchone()[0]
        if newest is not None:
            counts = con.execute("select count(*), " + ", ".join(f'count("{c}")' for c in columns)
                                 + " from marts.feat_user_daily where as_of_date = ?", [newest]).fetchone()
            rows = counts[0]
            missing = pd.DataFrame({"column": columns, "null_share": [1 - n / rows if rows else np.nan
                                                                       for n in counts[1:]]})
            missing = missing.sort_values("null_share", ascending=False, kind="stable").reset_index(drop=True)
    top = """
        select {key}, count(*) as events, count(distinct user_id) as users,
               count(*) filter (where event_type = 'purchase') as purchases,
               coalesce(sum(purchase_revenue), 0) as revenue
        from staging.stg_shop__events where event_date >= ? and event_date < ? and {key} is not null
        group by {key} order by events desc, {key} limit {top}"""
    top_categories = con.execute(top.format(key="category_id", top=TOP), window).df()
    top_items = con.execute(top.format(key="item_id", top=TOP), window).df()
    rejections = con.execute("select reason_code, count(*) as rows from raw.rejected_events group by all "
                             "order by rows desc, reason_code").df() if _has(con, "raw", "rejected_events") \
        else pd.DataFrame(columns=["reason_code", "rows"])
    return Exploration(as_of, start, events_by_day, funnel, cohorts, label_date, features, missing, top_categories,
                       top_items, rejections, notes)


def _columns(con, schema: str, table: str) -> list[str]:
    return [r[0] for r in con.execute("select column_name from information_schema.columns where table_schema = ? "
                                      "and table_name = ? order by ordinal_position", [schema, table]).fetchall()]


def figures(exploration: Exploration) -> dict[str, plt.Figure]:
    """The report's charts, by title."""
    charts = {}
    figure, ax = plt.subplots(figsize=(9, 3.5))
    if len(exploration.events_by_day):
        daily = exploration.events_by_day.pivot(index="event_date", columns="event_type", values="events").fillna(0)
        daily.plot.area(ax=ax, linewidth=0)
        ax.legend(fontsize=7, ncol=4)
    ax.set_title("events per day and type", fontsize=10)
    ax.set_xlabel("")
    charts["events per day and type"] = figure

    figure, ax = plt.subplots(figsize=(6, 3))
    funnel = exploration.funnel
    ax.barh(funnel.stage[::-1], funnel.users[::-1], color="tab:blue")
    for y, (users, share) in enumerate(zip(funnel.users[::-1], funnel.share_of_viewers[::-1])):
        ax.text(users, y, f" {users:,}" + (f" ({share:.1%} of viewers)" if not np.isnan(share) else ""), va="center",
                fontsize=8)
    ax.set_title("funnel: users with each event in the window", fontsize=10)
    ax.margins(x=0.35)
    charts["funnel"] = figure

    figure, ax = plt.subplots(figsize=(9, 4))
    weeks = [c for c in exploration.cohorts.columns if c.startswith("week_")]
    if len(exploration.cohorts) and weeks:
        values = exploration.cohorts[weeks].to_numpy(dtype=float)
        image = ax.imshow(values, aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(weeks)), [w.removeprefix("week_") for w in weeks], fontsize=7)
        ax.set_yticks(range(len(exploration.cohorts)),
                      [f"{c} ({n:,})" for c, n in zip(exploration.cohorts.cohort_week, exploration.cohorts.users)],
                      fontsize=7)
        figure.colorbar(image, ax=ax, label="share of the cohort active")
    ax.set_xlabel("weeks after the first week")
    ax.set_title("weekly cohort retention (cohort: week first seen; users)", fontsize=10)
    charts["weekly cohort retention"] = figure

    features = exploration.features_by_label
    names = list(dict.fromkeys(features.feature)) if len(features) else []
    columns = 3
    rows_of_charts = max(1, -(-len(names) // columns))
    figure, axes = plt.subplots(rows_of_charts, columns, figsize=(9, 2.6 * rows_of_charts), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        rows = features[features.feature == name]
        values = np.log1p(rows.value.astype(float).clip(lower=0))
        bins = np.histogram_bin_edges(values.dropna(), bins=20) if values.notna().any() else 10
        for label, colour in ((0, "tab:grey"), (1, "tab:orange")):
            ax.hist(values[rows.label == label].dropna(), bins=bins, density=True, alpha=0.6, color=colour,
                    label=f"{LABEL} = {label}")
        ax.set_title(f"log1p({name})", fontsize=8)
        ax.tick_params(labelsize=6)
    if names:
        axes[0][0].legend(fontsize=6)
    figure.suptitle(f"features by label at the training cutoff {exploration.label_date}", fontsize=10)
    figure.tight_layout()
    charts["features by label"] = figure
    return charts


def write_html(exploration: Exploration, path: Path, home: str = "", charts: dict | None = None) -> Path:
    """One self-contained HTML page (no script, no stylesheet from elsewhere); ``charts``: ``figures``' (drawn
    here when not given)."""
    summary = exploration.summary()
    tables = {"funnel": exploration.funnel, "top categories": exploration.top_categories,
              "top items": exploration.top_items, "rejected rows by reason (every load)": exploration.rejections,
              "missing values (features at the as-of date)": exploration.missing[exploration.missing.null_share > 0],
              "cohorts": exploration.cohorts}
    parts = [f"<h1>Data exploration: as-of {exploration.as_of}</h1>",
             (f"<p>{html.escape(home)} &middot; events {summary['window']} &middot; {summary['events']:,} events, "
              f"{summary['viewers']:,} viewers, {summary['buyers']:,} buyers, {summary['rejected_rows']:,} rows "
              "rejected at load</p>")]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in exploration.notes]
    for title, figure in (charts or figures(exploration)).items():
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{figure_to_png_base64(figure, dpi=72)}'>")
    for title, table in tables.items():
        body = table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0) if len(table) else \
            "<p>none</p>"
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
             ".note{color:#a60}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>shopcast exploration "
                    f"{exploration.as_of}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>",
                    encoding="utf-8")
    return path
