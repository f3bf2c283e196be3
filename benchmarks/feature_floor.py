"""The two yardsticks of the feature step (issue 9), each computing marts.feat_user_daily for one as-of date
straight from the raw event files, with none of the pipeline's machinery:

- the floor: one hand-written DuckDB query, the fastest this engine gets on these files;
- the pandas peer: read the files, mask by window, group by user, the way the usual tutorials do it.

Both give exactly the columns and values of the dbt model (tests/test_benchmarks.py checks it on generated data),
so their timings compare like with like. Raw timestamps are UTC and business days are UTC days here (the
benchmark's generated data); sessions come from the source's session id, or from 30-minute gaps where it is null.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

EVENT_TYPES = ["view", "cart", "remove_from_cart", "fav", "purchase", "checkout", "return"]
WINDOWS = [1, 7, 28, 90]
LOOKBACK = 90
ACTIVE_WINDOW = 28
SESSION_GAP_MINUTES = 30

WINDOWED = [
    *[c for w in WINDOWS for c in (f"events_{w}d", *[f"{t}_count_{w}d" for t in EVENT_TYPES])],
    *[f"days_since_last_{t}" for t in EVENT_TYPES], "days_since_last_event", "revenue_28d", f"revenue_{LOOKBACK}d",
    "sessions_7d", "sessions_28d", "active_days_28d", f"active_days_{LOOKBACK}d",
]
DERIVED = ["avg_purchase_value_28d", f"avg_purchase_value_{LOOKBACK}d", "cart_per_view_28d", "purchase_per_cart_28d",
           f"purchase_per_cart_{LOOKBACK}d", "distinct_items_28d", "distinct_categories_28d", "tenure_days",
           "activity_trend_7d_vs_21d"]
FEATURE_COLUMNS = ["as_of_date", "user_id", *WINDOWED, *DERIVED]


def floor_sql() -> str:
    """One query, parameters: $files (list of Parquet paths), $as_of (date)."""
    per_window = ",\n        ".join(
        f"count(*) filter (where days_ago <= {w}) as events_{w}d" + "".join(
            f",\n        count(*) filter (where days_ago <= {w} and event_type = '{t}') as {t}_count_{w}d"
            for t in EVENT_TYPES)
        for w in WINDOWS)
    last_seen = ",\n        ".join(f"min(days_ago) filter (where event_type = '{t}') as days_since_last_{t}"
                                   for t in EVENT_TYPES)
    return f"""
with
history as (
    select user_id, min(cast(event_ts as date)) as first_seen_date
    from read_parquet($files)
    where event_ts < $as_of
    group by 1
),
events as (
    select
        user_id, event_type, item_id, category_id, session_id, event_ts,
        cast(event_ts as date) as event_date,
        date_diff('day', cast(event_ts as date), $as_of) as days_ago,
        case when event_type = 'purchase' then price * coalesce(quantity, 1) end as revenue,
        case
            when session_id is not null then 0
            when lag(event_ts) over (partition by user_id order by event_ts) is null then 1
            when date_diff('minute', lag(event_ts) over (partition by user_id order by event_ts), event_ts)
                 > {SESSION_GAP_MINUTES} then 1
            else 0
        end as starts_session
    from read_parquet($files)
    where event_ts >= $as_of - interval {LOOKBACK} day and event_ts < $as_of
),
windowed as (
    select
        user_id,
        {per_window},
        {last_seen},
        min(days_ago) as days_since_last_event,
        coalesce(sum(revenue) filter (where days_ago <= 28), 0) as revenue_28d,
        coalesce(sum(revenue), 0) as revenue_{LOOKBACK}d,
        count(distinct (event_date, session_id)) filter (where days_ago <= 7 and session_id is not null)
            + coalesce(sum(starts_session) filter (where days_ago <= 7), 0) as sessions_7d,
        count(distinct (event_date, session_id)) filter (where days_ago <= 28 and session_id is not null)
            + coalesce(sum(starts_session) filter (where days_ago <= 28), 0) as sessions_28d,
        count(distinct event_date) filter (where days_ago <= 28) as active_days_28d,
        count(distinct event_date) as active_days_{LOOKBACK}d,
        count(distinct item_id) filter (where days_ago <= 28) as distinct_items_28d,
        count(distinct category_id) filter (where days_ago <= 28) as distinct_categories_28d
    from events
    group by 1
    having count(*) filter (where days_ago <= {ACTIVE_WINDOW}) > 0
)
select
    cast($as_of as date) as as_of_date,
    w.* exclude (distinct_items_28d, distinct_categories_28d),
    w.revenue_28d / nullif(w.purchase_count_28d, 0) as avg_purchase_value_28d,
    w.revenue_{LOOKBACK}d / nullif(w.purchase_count_{LOOKBACK}d, 0) as avg_purchase_value_{LOOKBACK}d,
    cast(w.cart_count_28d as double) / nullif(w.view_count_28d, 0) as cart_per_view_28d,
    cast(w.purchase_count_28d as double) / nullif(w.cart_count_28d, 0) as purchase_per_cart_28d,
    cast(w.purchase_count_{LOOKBACK}d as double) / nullif(w.cart_count_{LOOKBACK}d, 0) as purchase_per_cart_{LOOKBACK}d,
    w.distinct_items_28d,
    w.distinct_categories_28d,
    date_diff('day', h.first_seen_date, $as_of) as tenure_days,
    (w.events_7d / 7.0 + 1.0) / ((w.events_28d - w.events_7d) / 21.0 + 1.0) as activity_trend_7d_vs_21d
from windowed as w
left join history as h using (user_id)
"""


def floor_features(con, files: Sequence[str], as_of: dt.date) -> pd.DataFrame:
    """The floor query on an open DuckDB connection (its threads and memory limit are the caller's)."""
    con.execute("set TimeZone = 'UTC'")
    return con.execute(floor_sql(), {"files": list(files), "as_of": as_of}).df()[FEATURE_COLUMNS]


def pandas_features(files: Sequence[str], as_of: dt.date) -> pd.DataFrame:
    """The pandas peer: load the events, mask, group by."""
    events = pd.concat([pd.read_parquet(f, columns=["user_id", "event_ts", "event_type", "item_id", "category_id",
                                                    "price", "quantity", "session_id"]) for f in files],
                       ignore_index=True)
    as_of_ts = pd.Timestamp(as_of)
    events = events[events.event_ts < as_of_ts]
    events["event_date"] = events.event_ts.dt.normalize()
    first_seen = events.groupby("user_id").event_date.min()

    recent = events[events.event_date >= as_of_ts - pd.Timedelta(days=LOOKBACK)].copy()
    recent["days_ago"] = (as_of_ts - recent.event_date).dt.days
    recent["revenue"] = np.where(recent.event_type == "purchase", recent.price * recent.quantity.fillna(1), np.nan)
    recent = recent.sort_values(["user_id", "event_ts"], kind="stable")
    gap = recent.groupby("user_id").event_ts.diff()
    recent["starts_session"] = np.where(recent.session_id.notna(), 0,
                                        (gap.isna() | (gap > pd.Timedelta(minutes=SESSION_GAP_MINUTES))).astype(int))
    recent = recent[recent.user_id.isin(recent.loc[recent.days_ago <= ACTIVE_WINDOW, "user_id"].unique())]

    out = pd.DataFrame(index=pd.Index(recent.user_id.unique(), name="user_id"))
    for window in WINDOWS:
        within = recent[recent.days_ago <= window]
        out[f"events_{window}d"] = within.groupby("user_id").size()
        counts = within.groupby(["user_id", "event_type"]).size().unstack()
        for event_type in EVENT_TYPES:
            out[f"{event_type}_count_{window}d"] = counts.get(event_type, 0)
    last = recent.groupby(["user_id", "event_type"]).days_ago.min().unstack()
    for event_type in EVENT_TYPES:
        out[f"days_since_last_{event_type}"] = last.get(event_type, np.nan)
    out["days_since_last_event"] = recent.groupby("user_id").days_ago.min()
    month = recent[recent.days_ago <= 28]
    out["revenue_28d"] = month.groupby("user_id").revenue.sum()
    out[f"revenue_{LOOKBACK}d"] = recent.groupby("user_id").revenue.sum()
    for window, part in ((7, recent[recent.days_ago <= 7]), (28, month)):
        named = part[part.session_id.notna()].groupby("user_id")[["event_date", "session_id"]].value_counts()
        out[f"sessions_{window}d"] = named.groupby("user_id").size().reindex(out.index, fill_value=0) \
            + part.groupby("user_id").starts_session.sum().reindex(out.index, fill_value=0)
    out["active_days_28d"] = month.groupby("user_id").event_date.nunique()
    out[f"active_days_{LOOKBACK}d"] = recent.groupby("user_id").event_date.nunique()
    counted = [c for c in out.columns if c.startswith(("events_", "sessions_", "active_days_", "revenue_"))
               or "_count_" in c]
    out[counted] = out[counted].fillna(0)

    out["avg_purchase_value_28d"] = out.revenue_28d / out.purchase_count_28d.replace(0, np.nan)
    out[f"avg_purchase_value_{LOOKBACK}d"] = out[f"revenue_{LOOKBACK}d"] / out[f"purchase_count_{LOOKBACK}d"].replace(0, np.nan)
    out["cart_per_view_28d"] = out.cart_count_28d / out.view_count_28d.replace(0, np.nan)
    out["purchase_per_cart_28d"] = out.purchase_count_28d / out.cart_count_28d.replace(0, np.nan)
    out[f"purchase_per_cart_{LOOKBACK}d"] = out[f"purchase_count_{LOOKBACK}d"] / out[f"cart_count_{LOOKBACK}d"].replace(0, np.nan)
    out["distinct_items_28d"] = month.groupby("user_id").item_id.nunique().reindex(out.index, fill_value=0)
    out["distinct_categories_28d"] = month.groupby("user_id").category_id.nunique().reindex(out.index, fill_value=0)
    out["tenure_days"] = (as_of_ts - first_seen.reindex(out.index)).dt.days
    out["activity_trend_7d_vs_21d"] = (out.events_7d / 7.0 + 1.0) / ((out.events_28d - out.events_7d) / 21.0 + 1.0)
    out.insert(0, "as_of_date", as_of_ts)
    return out.reset_index()[FEATURE_COLUMNS]
