"""One Great Expectations suite per table, defined in code so that they are reviewed like code.

Each suite validates a bounded batch: the raw events of one business day, or the mart rows of one as-of date,
never a whole history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import great_expectations as gx

EVENT_TYPES = ["view", "cart", "remove_from_cart", "fav", "purchase", "checkout", "return"]
FEATURE_WINDOWS = (1, 7, 14, 28, 90)


def raw_events() -> list:
    """The events of one or more whole business days, as staged from raw.events."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchSet(
            column_set=["event_id", "user_id", "event_ts_utc", "event_ts_local", "event_date", "event_type",
                        "item_id", "category_id", "price", "quantity", "purchase_revenue", "return_value",
                        "session_id", "load_id"],
            exact_match=True,
        ),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("event_id", "user_id", "event_ts_utc", "event_type")),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=EVENT_TYPES),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1),
    ]


def feat_user_daily(active_window_days: int = 28) -> list:
    """The feature rows of one or more whole as-of dates; the population is users with an event in the
    ``active_window_days`` before the date (a setting)."""
    window = active_window_days
    active_in_28d = 1 if window <= 28 else 0  # a longer window scores users quiet for the last 28 days too
    counts = [f"{t}_count_{w}d" for w in FEATURE_WINDOWS for t in EVENT_TYPES]
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnToExist(column=c) for c in ("as_of_date", "user_id", *counts)),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="as_of_date"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "as_of_date"]),
        # column minimums are one aggregate each: much cheaper than row-wise checks on 28 count columns
        *(gxe.ExpectColumnMinToBeBetween(column=c, min_value=0) for c in counts),
        # the population is users active in the window before, and features never see the as-of date itself
        gxe.ExpectColumnValuesToBeBetween(column="days_since_last_event", min_value=1, max_value=window),
        gxe.ExpectColumnValuesToBeBetween(column="events_28d", min_value=active_in_28d),
        gxe.ExpectColumnValuesToBeBetween(column="tenure_days", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="revenue_90d", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="cart_per_view_28d", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="purchase_per_cart_28d", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="active_days_28d", min_value=active_in_28d, max_value=28),
        # hours are counted to the start of the as-of date: an event on it would be leakage (below 0), and the
        # population's last event lies within the window before
        gxe.ExpectColumnValuesToBeBetween(column="hours_since_last_event", min_value=0, max_value=window * 24),
        # row-wise, not by column minimum: a shop without checkout events has a column of NULLs, whose minimum
        # is no value and would fail
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0)
          for c in ("hours_since_last_view", "hours_since_last_cart", "hours_since_last_checkout",
                    "open_cart_age_hours", "open_cart_items", "open_cart_value", "purchase_days_all")),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
          for c in ("evening_event_share_90d", "night_event_share_90d", "weekend_event_share_90d")),
        gxe.ExpectColumnValuesToBeBetween(column="mean_event_hour_90d", min_value=0, max_value=23),
        gxe.ExpectColumnValuesToBeBetween(column="min_days_between_active_days_90d", min_value=1),
    ]


def fct_training_set() -> list:
    """The training examples of one cutoff (validated cutoff by cutoff, so that memory stays bounded): labels
    binary, rates within sane bounds. That there are enough cutoffs is checked across them, in SQL
    (dagster_project/defs/quality.py: MIN_TRAINING_CUTOFFS)."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "as_of_date"]),
        gxe.ExpectColumnValuesToNotBeNull(column="cutoff_rank"),
        gxe.ExpectColumnValuesToBeInSet(column="purchase_next_7d", value_set=[0, 1]),
        gxe.ExpectColumnValuesToBeInSet(column="churn_next_7d", value_set=[0, 1]),
        gxe.ExpectColumnValuesToNotBeNull(column="purchase_next_7d"),
        gxe.ExpectColumnValuesToBeBetween(column="revenue_next_28d", min_value=0),
        # a label rate outside these bounds means a broken join or window, not a real shop; a churn rate of 0 is
        # real in short samples of active users (Taobao's 9 days), one near 1 means the future was not joined
        gxe.ExpectColumnMeanToBeBetween(column="purchase_next_7d", min_value=0.0005, max_value=0.8),
        gxe.ExpectColumnMeanToBeBetween(column="churn_next_7d", min_value=0.0, max_value=0.99),
    ]


def fct_scoring_population() -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "as_of_date"]),
    ]


SUITES = {
    "raw_events": raw_events,
    "feat_user_daily": feat_user_daily,
    "fct_training_set": fct_training_set,
    "fct_scoring_population": fct_scoring_population,
}


def suite_columns(name: str) -> list[str] | None:
    """The columns the suite reads, so that a batch loads only those (the training set has ~75 columns, its
    suite reads 6); None when the suite checks the table's set of columns itself and so needs every one."""
    columns: list[str] = []
    for expectation in SUITES[name]():
        if "TableColumn" in type(expectation).__name__:
            return None
        named = getattr(expectation, "column_list", None) or [getattr(expectation, "column", None)]
        columns += [c for c in named if c and c not in columns]
    return columns


def build_suite(name: str, **params) -> gx.ExpectationSuite:
    """The suite ``name``; ``params``: its builder's settings (feat_user_daily's active_window_days)."""
    if name not in SUITES:
        raise KeyError(f"no expectation suite named {name!r}; known: {', '.join(SUITES)}")
    import great_expectations as gx

    return gx.ExpectationSuite(name=name, expectations=SUITES[name](**params))
