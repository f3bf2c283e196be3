"""The served cold-start list's blocking check (dagster_project/defs/cold_start.py) on hand-made lists: it finds a
broken list, an item that is not new and an item the user bought before."""

import datetime as dt

import duckdb

from dagster_project.defs.cold_start import list_problems
from dagster_project.defs.recommendations import table_ddl
from dagster_project.defs.resources import WarehouseResource

DAY = dt.date(2026, 3, 10)


def test_the_check_counts_broken_lists_old_items_and_items_bought_before(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        for schema in ("predictions", "intermediate", "marts"):
            con.execute(f"create schema {schema}")
        con.execute(table_ddl("cold_start_items"))
        con.execute("create table intermediate.int_user_item_daily (user_id varchar, item_id varchar, "
                    "activity_date date)")
        con.execute("create table marts.fct_user_item_interactions (as_of_date date, user_id varchar, "
                    "item_id varchar, purchases integer)")
        con.execute("insert into intermediate.int_user_item_daily values ('x', 'new1', date '2026-03-01'), "
                    "('x', 'new2', date '2026-03-05'), ('x', 'old', date '2025-12-01'), ('x', 'old', date '2026-03-02')")
        con.execute("insert into marts.fct_user_item_interactions values (date '2026-03-10', 'u2', 'new1', 1)")
        lists = [("u1", 1, "new1"), ("u1", 2, "new2"),       # whole, new: fine
                 ("u2", 1, "new1"),                          # bought by u2 before the date
                 ("u3", 1, "new2"), ("u3", 3, "new1"),       # a gap in the ranks
                 ("u4", 1, "old")]                           # first seen 99 days before the date
        con.executemany("insert into predictions.cold_start_items (user_id, as_of_date, rank, item_id) "
                        "values (?, ?, ?, ?)", [(u, DAY, r, i) for u, r, i in lists])
    found = list_problems(WarehouseResource(path=str(path)), [DAY], per_user=10, window_days=28)
    assert {k: int(v) for k, v in found.items()} == {"rows": 6, "broken_lists": 1, "not_new": 1, "bought_before": 1}
    assert int(list_problems(WarehouseResource(path=str(path)), [DAY], 10, 120).not_new) == 0  # a wider window
