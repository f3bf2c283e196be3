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


def test_item_descriptions_reach_raw_items_dated_by_their_first_event_and_never_from_a_rejected_row(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "events.csv"
    _events(user_id=["u1", "u2", ""], item_description=["Red mug", " Red mug, large ", "Blue mug"],
            item_id=["i1", "i1", "i2"]).to_csv(path, index=False)
    report = load_file(warehouse, path)
    assert report.rows_rejected == 1 and report.items_described == 1  # i2's only row has no user: quarantined
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select item_id, description, described_at from raw.items order by 3").fetchall() == [
            ("i1", "Red mug", pd.Timestamp("2026-01-01 10:00:00").to_pydatetime()),  # renamed an hour later
            ("i1", "Red mug, large", pd.Timestamp("2026-01-01 11:00:00").to_pydatetime())]


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "bad.csv"
    pd.DataFrame({
        "user_id": ["ok", "", "u", "u", "u", "u", "u", "u", "ok", "u", "u", "u"],
        "event_ts": ["2026-01-01", "2026-01-01", "yesterday", "1999-12-31", "2026-01-01", "2026-01-01",
                     "2026-01-01", "2026-01-01", "2026-01-01", "2099-01-01", "2026-01-01", "2026-01-01"],
        "event_type": ["view", "view", "view", "view", "teleport", "view", "view", "view", "view", "view", "view",
                       "view"],
        "price": ["1", "1", "1", "1", "1", "abc", "-2", "1", "1", "1", "1", "1"],
        "quantity": ["1", "1", "1", "1", "1", "1", "1", "0", "1", "1", "-3", "1.5"],
    }).to_csv(path, index=False)
    report = load_file(warehouse, path)
    assert report.rejected_by_reason == {
        "missing_user_id": 1, "bad_timestamp": 1, "timestamp_too_old": 1, "unknown_event_type": 1,
        "non_numeric_price": 1, "negative_price": 1, "non_positive_quantity": 2, "timestamp_in_future": 1,
        "non_integer_quantity": 1,
    }
    # the ninth row is an exact copy of the first: a duplicate, not a second event
    assert (report.rows_read, report.rows_accepted, report.rows_duplicate) == (12, 1, 1)
    assert report.reconciles()
    con = duckdb.connect(str(warehouse))
    rejected = con.execute(
        "select row_number, reason_code, original_values ->> 'price' from raw.rejected_events order by 1"
    ).fetchall()
    assert rejected[4] == (6, "non_numeric_price", "abc")


def test_duplicates_are_counted_on_their_own_and_a_lost_row_makes_the_load_fail(tmp_path, monkeypatch):
    warehouse = tmp_path / "w.duckdb"
    first = tmp_path / "first.csv"
    pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": "u", "event_ts": "2026-01-01",
                  "event_type": "view"}).to_csv(first, index=False)
    load_file(warehouse, first)
    second = tmp_path / "second.csv"  # b and c were loaded before; d comes twice; e once; one row is bad
    pd.DataFrame({"event_id": ["b", "c", "d", "d", "e", "f"], "user_id": ["u", "u", "u", "u", "u", ""],
                  "event_ts": ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-02", "2026-01-02", "2026-01-02"],
                  "event_type": "view"}).to_csv(second, index=False)
    report = load_file(warehouse, second)
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (6, 2, 1)
    assert (report.rows_duplicate_in_file, report.rows_already_loaded, report.rows_duplicate) == (1, 2, 3)
    assert report.reconciles()
    # a bug that loses an accepted row between validation and the write: the audit refuses to commit the load
    third = tmp_path / "third.csv"
    pd.DataFrame({"event_id": ["g", "h"], "user_id": "u", "event_ts": "2026-01-03",
                  "event_type": "view"}).to_csv(third, index=False)
    monkeypatch.setenv("SHOPCAST_FAILPOINT", "ingest.lose_row")
    with pytest.raises(RuntimeError, match="counts do not reconcile"):
        load_file(warehouse, third)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from raw.events where event_id in ('g', 'h')").fetchone() == (0,)
        assert con.execute("select count(*) from raw.load_audit").fetchone() == (2,)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_non_finite_prices_are_quarantined_with_their_own_reason(tmp_path, fmt):
    warehouse = tmp_path / "w.duckdb"
    prices = ["NaN", "inf", "-inf", "Infinity", "2.5"]
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(5)], "event_ts": "2026-01-01",
                          "event_type": "purchase", "price": prices})
    path = tmp_path / f"prices.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:  # real IEEE NaN and infinities, as a Parquet export carries them (pandas would write NaN as null)
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {c: pa.array(frame[c].tolist()) for c in frame.columns if c != "price"}
        columns["price"] = pa.array([float(p) for p in prices], type=pa.float64(), from_pandas=False)
        pq.write_table(pa.table(columns), path)
    report = load_file(warehouse, path)
    assert report.rejected_by_reason == {"non_finite_price": 4} and report.rows_accepted == 1
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select user_id, price from raw.events").fetchall() == [("u4", 2.5)]


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


def _nothing_written(warehouse) -> bool:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("select (select count(*) from raw.events) + (select count(*) from raw.load_audit) "
                           "+ (select count(*) from raw.rejected_events)").fetchone()[0] == 0


def test_a_wrongly_encoded_file_fails_with_a_hint_and_writes_nothing(tmp_path):
    from dagster_project.warehouse import ensure_raw_schema

    warehouse = tmp_path / "w.duckdb"
    ensure_raw_schema(warehouse)
    path = tmp_path / "latin1.csv"
    path.write_bytes("user_id,event_ts,event_type\nJosé,2026-01-01,view\n".encode("latin-1"))
    with pytest.raises(IngestError, match=r"latin1.csv: .*not UTF-8 encoded.*file.encoding"):
        load_file(warehouse, path)
    assert _nothing_written(warehouse)


def test_a_truncated_last_line_fails_the_file_but_a_short_line_is_quarantined(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    cut = tmp_path / "cut.csv"
    cut.write_text("user_id,event_ts,event_type,price\nu1,2026-01-01 10:00:00,view,1\nu2,2026-01-01 1")
    with pytest.raises(IngestError, match=r"cut.csv: the file looks truncated: its last line has 2 of 4 fields"):
        load_file(warehouse, cut)
    assert _nothing_written(warehouse)
    # the same short line with a proper line end is a bad row: quarantined, the rest loads
    short = tmp_path / "short.csv"
    short.write_text("user_id,event_ts,event_type,price\nu1,2026-01-01 10:00:00,view,1\nu2,2026-01-01\n")
    report = load_file(warehouse, short)
    assert (report.rows_accepted, report.rejected_by_reason) == (1, {"unknown_event_type": 1})
    # a file without a final newline whose last line is complete is fine
    whole = tmp_path / "whole.csv"
    whole.write_text("user_id,event_ts,event_type,price\nu3,2026-01-01 10:00:00,view,1")
    assert load_file(warehouse, whole).rows_accepted == 1


def test_files_in_the_wrong_format_fail_with_the_reason(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    canonical = tmp_path / "canonical.csv"
    _events().to_csv(canonical, index=False)
    with pytest.raises(IngestError, match=r"canonical.csv: not a Taobao UserBehavior file: it has 6 columns"):
        load_file(warehouse, canonical, "taobao")
    with pytest.raises(IngestError, match=r"missing required column\(s\) InvoiceNo, StockCode"):
        load_file(warehouse, canonical, "online-retail")
    # a headerless Taobao file read as canonical: its first line becomes a header, and no row is an event
    taobao = tmp_path / "UserBehavior.csv"
    taobao.write_text("1,2268318,2520377,pv,1511544070\n1,2333346,2520771,pv,1511561733\n")
    with pytest.raises(IngestError, match="missing required column"):
        load_file(warehouse, taobao, "canonical")
    # right columns, wrong content: every row rejected means the wrong file, so nothing is loaded
    names = tmp_path / "names.csv"
    pd.DataFrame({"user_id": ["a", "b"], "event_ts": ["Jan", "Feb"], "event_type": ["x", "y"]}).to_csv(names, index=False)
    with pytest.raises(IngestError, match=r"names.csv: not a canonical file, or a broken one: every one of its 2 rows"):
        load_file(warehouse, names)
    assert _nothing_written(warehouse)


MAPPING = """
file: {header: true, delimiter: ";", encoding: latin-1}
columns: {user_id: Kunde, event_ts: Zeit, event_type: Aktion, item_id: Artikel, price: Preis, quantity: Menge}
event_types: {ansicht: view, warenkorb: cart, kauf: purchase}
timestamp: {format: "%d.%m.%Y %H:%M", timezone: Europe/Berlin}
"""


def test_a_mapped_csv_loads_with_codes_zone_and_encoding_applied(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "export.csv"
    path.write_bytes(("Kunde;Zeit;Aktion;Artikel;Preis;Menge\n"
                      "Jörg;15.01.2026 10:30;Ansicht;A1;9.5;1\n"
                      "Jörg;15.07.2026 10:30;KAUF;A1;9.5;2\n"
                      "Jörg;31.02.2026 10:30;kauf;A1;9.5;2\n"
                      "Ute;15.01.2026 11:00;Retoure;A2;3;1\n").encode("latin-1"))
    (tmp_path / "export.yaml").write_text(MAPPING)  # found beside the file
    report = load_file(warehouse, path, "mapped")
    assert (report.rows_read, report.rows_accepted) == (4, 2)
    assert report.rejected_by_reason == {"bad_timestamp": 1, "unknown_event_type": 1}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select user_id, cast(event_ts as varchar), event_type, price * quantity "
                           "from raw.events order by event_ts").fetchall()
        original = con.execute("select original_values ->> 'Aktion' from raw.rejected_events "
                               "where reason_code = 'unknown_event_type'").fetchone()[0]
    # Berlin is UTC+1 in January and UTC+2 in July
    assert rows == [("Jörg", "2026-01-15 09:30:00", "view", 9.5), ("Jörg", "2026-07-15 08:30:00", "purchase", 19.0)]
    assert original == "Retoure"


def test_a_mapped_parquet_with_epoch_milliseconds_and_a_constant_event_type(tmp_path):
    path = tmp_path / "orders.parquet"
    pd.DataFrame({"customer": ["c1", "c2"], "ms": [1_767_261_600_000, 1_767_265_200_000],
                  "total": [20.0, 5.0]}).to_parquet(path)
    mapping = tmp_path / "orders_mapping.yaml"
    mapping.write_text("columns: {user_id: customer, event_ts: ms, price: total}\n"
                       "constants: {event_type: purchase}\ntimestamp: {format: epoch_milliseconds}\n")
    report = load_file(tmp_path / "w.duckdb", path, "mapped", mapping)
    assert report.rows_accepted == 2
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("select min(cast(event_ts as varchar)), count(*) filter (where event_type = 'purchase') "
                           "from raw.events").fetchone() == ("2026-01-01 10:00:00", 2)


def test_a_mapping_that_names_absent_columns_or_breaks_the_schema_fails_before_loading(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "events.csv"
    _events().to_csv(path, index=False)
    absent = tmp_path / "absent.yaml"
    absent.write_text("columns: {user_id: customer_id, event_ts: event_ts, event_type: action}\n")
    with pytest.raises(IngestError, match=r"events.csv: the mapping absent.yaml names column\(s\) the file does not "
                                          r"have: action, customer_id; the file has user_id, event_ts"):
        load_file(warehouse, path, "mapped", absent)
    zone = tmp_path / "zone.yaml"
    zone.write_text("columns: {user_id: user_id, event_ts: event_ts, event_type: event_type}\n"
                    "timestamp: {timezone: Mars/Olympus}\n")
    with pytest.raises(IngestError, match=r"zone.yaml: invalid mapping: timestamp.timezone: .*'Mars/Olympus' is not"):
        load_file(warehouse, path, "mapped", zone)
    fields = tmp_path / "fields.yaml"
    fields.write_text("columns: {user_id: user_id, event_ts: event_ts, colour: c}\n")
    with pytest.raises(IngestError, match=r"fields.yaml: invalid mapping: .*unknown canonical field\(s\) colour"):
        load_file(warehouse, path, "mapped", fields)
    types = tmp_path / "types.yaml"
    types.write_text("columns: {user_id: user_id, event_ts: event_ts, event_type: event_type}\n"
                     "event_types: {pv: page_view}\n")
    with pytest.raises(IngestError, match=r"types.yaml: invalid mapping: .*event type\(s\) page_view are not canonical"):
        load_file(warehouse, path, "mapped", types)
    with pytest.raises(IngestError, match="no mapping: pass --mapping FILE"):
        load_file(warehouse, path, "mapped")
    assert _nothing_written(warehouse)
