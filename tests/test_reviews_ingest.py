"""Reviews as a source (issue 25): raw.reviews with the loaders' validation, quarantine by reason, duplicate
skipping and reconciled audit, and a purchase event per accepted review."""

import duckdb
import pandas as pd
import pytest

from dagster_project.ingest import IngestError, load_file


def _reviews(**overrides) -> pd.DataFrame:
    rows = {
        "reviewer_id": ["u1", "u2", "u3"],
        "asin": ["i1", "i2", "i1"],
        "rating": ["5", "2", "4"],
        "review_ts": ["2014-01-01", "2014-01-02", "2014-01-03"],
        "review_text": ["great strings", "broke after a week", "fine"],
        "summary": ["great", "broke", "ok"],
        "helpful_yes": ["1", "4", "0"],
        "helpful_total": ["2", "5", "0"],
    }
    rows.update(overrides)
    return pd.DataFrame(rows)


def _counts(warehouse) -> tuple[int, int, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return (con.execute("select count(*) from raw.reviews").fetchone()[0],
                con.execute("select count(*) from raw.events").fetchone()[0],
                con.execute("select count(*) from raw.rejected_reviews").fetchone()[0])


def test_bad_reviews_are_quarantined_with_their_reasons_and_the_counts_reconcile(tmp_path):
    warehouse, path = tmp_path / "w.duckdb", tmp_path / "reviews.csv"
    bad = pd.DataFrame({
        "reviewer_id": ["", "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u12"],
        "asin": ["i1", "", "i1", "i1", "i1", "i1", "i1", "i1", "i1"],
        "rating": ["5", "5", "5", "", "five", "nan", "6", "3", "3"],
        "review_ts": ["2014-01-01", "2014-01-01", "yesterday", "2014-01-01", "2014-01-01", "2014-01-01",
                      "2014-01-01", "2014-01-01", "2014-01-01"],
        "review_text": ["x"] * 9, "summary": ["x"] * 9,
        "helpful_yes": ["0", "0", "0", "0", "0", "0", "0", "3", "1.5"],
        "helpful_total": ["0", "0", "0", "0", "0", "0", "0", "2", "2"],
    })
    # a good review twice in the file: its second copy is a duplicate, not a rejection
    pd.concat([_reviews(), _reviews().head(1), bad]).to_csv(path, index=False)
    report = load_file(warehouse, path, "amazon-reviews")
    assert report.rejected_by_reason == {
        "missing_user_id": 1, "missing_item_id": 1, "bad_timestamp": 1, "missing_rating": 1,
        "non_numeric_rating": 1, "non_finite_rating": 1, "rating_out_of_range": 1, "inconsistent_votes": 1,
        "non_integer_votes": 1}
    assert (report.rows_read, report.rows_accepted, report.rows_duplicate_in_file) == (13, 3, 1)
    assert report.reconciles() and _counts(warehouse) == (3, 3, 9)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        kept = con.execute("select user_id, item_id, rating, title, text, helpful_votes, total_votes "
                           "from raw.reviews order by user_id").fetchall()
        original = con.execute("select original_values ->> 'rating' from raw.rejected_reviews "
                               "where reason_code = 'non_numeric_rating'").fetchone()[0]
    assert kept[1] == ("u2", "i2", 2.0, "broke", "broke after a week", 4, 5)
    assert original == "five"  # the quarantined row as the file gave it


def test_a_review_loaded_before_is_a_duplicate_in_a_new_file_and_nothing_of_a_broken_file_is_written(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    _reviews().to_csv(tmp_path / "first.csv", index=False)
    load_file(warehouse, tmp_path / "first.csv", "amazon-reviews")
    later = pd.concat([_reviews().tail(1), _reviews(reviewer_id=["u4"], asin=["i9"], rating=["1"],
                                                       review_ts=["2014-02-01"], review_text=["awful"],
                                                       summary=["no"], helpful_yes=["0"],
                                                       helpful_total=["0"]).head(1)])
    later.to_csv(tmp_path / "later.csv", index=False)
    report = load_file(warehouse, tmp_path / "later.csv", "amazon-reviews")
    assert (report.rows_accepted, report.rows_already_loaded) == (1, 1) and _counts(warehouse)[:2] == (4, 4)
    _reviews().drop(columns=["rating"]).to_csv(tmp_path / "norating.csv", index=False)
    with pytest.raises(IngestError, match="missing required column.*rating"):
        load_file(warehouse, tmp_path / "norating.csv", "amazon-reviews")
    _reviews(rating=["0", "9", "x"]).to_csv(tmp_path / "allbad.csv", index=False)
    with pytest.raises(IngestError, match="every one of its 3 rows was rejected"):
        load_file(warehouse, tmp_path / "allbad.csv", "amazon-reviews")
    assert _counts(warehouse) == (4, 4, 0)


def test_a_shops_own_reviews_load_in_the_canonical_layout_without_purchase_events(tmp_path):
    """The canonical layout (a shop's reviews beside its orders): no proxy purchases, the source's review id kept."""
    warehouse, path = tmp_path / "w.duckdb", tmp_path / "reviews.parquet"
    pd.DataFrame({"review_id": ["r1", "r2", "r2"], "user_id": ["u1", "u2", "u2"], "item_id": ["i1", "i2", "i2"],
                  "review_ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-02 11:00", "2026-01-02 11:00"]),
                  "rating": [5, 1, 1], "text": ["lovely", "arrived broken", "arrived broken"]}).to_parquet(path)
    report = load_file(warehouse, path, "reviews")
    assert (report.rows_read, report.rows_accepted, report.rows_duplicate_in_file) == (3, 2, 1) and report.reconciles()
    assert _counts(warehouse) == (2, 0, 0)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select review_id, rating, title from raw.reviews order by 1").fetchall() == [
            ("r1", 5.0, None), ("r2", 1.0, None)]


def test_a_mapped_reviews_export_loads_into_raw_reviews_and_a_mapping_of_the_wrong_kind_is_refused(tmp_path):
    """`mapped` with `table: reviews`: the review fields from any layout, the timestamp options applied."""
    warehouse, path = tmp_path / "w.duckdb", tmp_path / "bewertungen.csv"
    path.write_text("Kunde;Artikel;Datum;Sterne;Text\n"
                    "k1;a1;15.01.2026;5;sehr gut\n"
                    "k2;a1;31.02.2026;1;kaputt\n"
                    "k3;a2;16.01.2026;zehn;na ja\n", encoding="utf-8")
    (tmp_path / "bewertungen.yaml").write_text(
        "table: reviews\nfile: {delimiter: ';'}\n"
        "columns: {user_id: Kunde, item_id: Artikel, review_ts: Datum, rating: Sterne, text: Text}\n"
        "timestamp: {format: '%d.%m.%Y', timezone: Europe/Berlin}\n")
    report = load_file(warehouse, path, "mapped")
    assert (report.rows_read, report.rows_accepted) == (3, 1) and report.reconciles()
    assert report.rejected_by_reason == {"bad_timestamp": 1, "non_numeric_rating": 1}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select user_id, cast(review_ts as varchar), rating, text from raw.reviews").fetchall() == [
            ("k1", "2026-01-14 23:00:00", 5.0, "sehr gut")]  # midnight in Berlin, in UTC
    assert _counts(warehouse) == (1, 0, 2)  # a shop's own reviews: no purchase events
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("table: reviews\ncolumns: {user_id: Kunde, item_id: Artikel, review_ts: Datum, rating: Sterne, "
                     "event_type: Text}\n")
    with pytest.raises(IngestError, match=r"invalid mapping: .*unknown review field\(s\) event_type"):
        load_file(warehouse, path, "mapped", wrong)
