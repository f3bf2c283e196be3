import duckdb
import pandas as pd
import pytest

from dagster_project.ingest import IngestError, load_file, load_path
from dagster_project.warehouse import qualified, quote_identifier


def _events(**overrides):
    rows = {
        "user_id": ["u1", "u2", "u3"],
        "event_ts": ["2026-01-01 10:00:00", "2026-01-01 11:00:00", "2026-01-02 09:30:00"],
        "event_type": ["view", "cart", "purchase"],
        "item_id": ["i1", "i2", "i2"],
        "price": ["10.0", "5.5", "5.5"],
        "quantity": ["1", "1", "2"],
    }
    rows.update(overrides)
    return pd.DataFrame(rows)


def test_a_clean_file_loads_once_and_reloading_it_adds_nothing(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "events.csv"
    _events().to_csv(path, index=False)
    first = load_file(warehouse, path)
    again = load_file(warehouse, path)
    assert (first.rows_read, first.rows_accepted, first.rows_rejected, first.rows_duplicate) == (3, 3, 0, 0)
    assert again.duplicate_file and (again.rows_accepted, again.rows_duplicate) == (0, 3)
    con = duckdb.connect(str(warehouse))
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 3
    audit = con.execute("select rows_read, rows_accepted, rows_rejected, rows_duplicate from raw.load_audit").fetchall()
    assert all(r == a + j + d for r, a, j, d in audit) and len(audit) == 2
    revenue = con.execute("select price * quantity from raw.events where event_type = 'purchase'").fetchone()[0]
    assert revenue == pytest.approx(11.0)


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "bad.csv"
    pd.DataFrame({
        "user_id": ["ok", "", "u", "u", "u", "u", "u", "u", "ok"],
        "event_ts": ["2026-01-01", "2026-01-01", "yesterday", "1999-12-31", "2026-01-01", "2026-01-01",
                     "2026-01-01", "2026-01-01", "2026-01-01"],
        "event_type": ["view", "view", "view", "view", "teleport", "view", "view", "view", "view"],
        "price": ["1", "1", "1", "1", "1", "abc", "-2", "1", "1"],
        "quantity": ["1", "1", "1", "1", "1", "1", "1", "0", "1"],
    }).to_csv(path, index=False)
    report = load_file(warehouse, path)
    assert report.rejected_by_reason == {
        "missing_user_id": 1, "bad_timestamp": 1, "timestamp_too_old": 1, "unknown_event_type": 1,
        "non_numeric_price": 1, "negative_price": 1, "non_positive_quantity": 1,
    }
    # the last row is an exact copy of the first: a duplicate, not a second event
    assert (report.rows_read, report.rows_accepted, report.rows_duplicate) == (9, 1, 1)
    assert report.reconciles()
    con = duckdb.connect(str(warehouse))
    rejected = con.execute(
        "select row_number, reason_code, original_values ->> 'price' from raw.rejected_events order by 1"
    ).fetchall()
    assert rejected[4] == (6, "non_numeric_price", "abc")


def test_a_file_missing_a_required_column_fails_and_writes_nothing(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "no_user.csv"
    _events().drop(columns=["user_id"]).to_csv(path, index=False)
    with pytest.raises(IngestError, match=r"no_user.csv: missing required column\(s\) user_id"):
        load_file(warehouse, path)
    con = duckdb.connect(str(warehouse))
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 0
    assert con.execute("select count(*) from raw.load_audit").fetchone()[0] == 0


def test_a_binary_file_fails_with_a_message_naming_it(tmp_path):
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"\x00\x01not parquet at all" * 10)
    with pytest.raises(IngestError, match="garbage.parquet"):
        load_file(tmp_path / "w.duckdb", path)


def test_time_zones_are_converted_to_utc(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "tz.csv"
    _events(event_ts=["2026-01-01T10:00:00+02:00", "2026-01-01 11:00:00", "2026-01-02T09:30:00Z"]).to_csv(path, index=False)
    load_file(warehouse, path)
    con = duckdb.connect(str(warehouse))
    hours = [r[0] for r in con.execute("select hour(event_ts) from raw.events order by user_id").fetchall()]
    assert hours == [8, 11, 9]


def test_a_folder_loads_every_file_and_an_empty_one_is_an_error(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    with pytest.raises(IngestError, match="no .parquet or .csv files"):
        load_path(tmp_path / "w.duckdb", folder)
    _events().to_parquet(folder / "a.parquet")
    _events(user_id=["x", "y", "z"]).to_csv(folder / "b.csv", index=False)
    reports = load_path(tmp_path / "w.duckdb", folder)
    assert [r.rows_accepted for r in reports] == [3, 3]


@pytest.mark.parametrize("hostile", ["events; drop table raw.events", "2024-01-01'; DROP TABLE x; --", "a b", ""])
def test_hostile_identifiers_are_refused(hostile):
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        quote_identifier(hostile)
    assert qualified("raw", "events") == '"raw"."events"'
