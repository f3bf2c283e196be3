"""The loaders on the real public samples in ../shared/datasets (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from dagster_project.ingest import load_file
from dagster_project.settings import REPO_ROOT

DATASETS = Path(os.environ.get("SHOPCAST_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real samples not found at {DATASETS}")


def _types(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute("select event_type, count(*) from raw.events group by 1").fetchall())


def test_taobao_sample_loads_every_row_with_mapped_types(tmp_path):
    report = load_file(tmp_path / "w.duckdb", DATASETS / "taobao_userbehavior" / "UserBehavior_head.csv", "taobao")
    # SOURCE.md: 84,474 rows, no exact duplicates; pv 75,871, cart 4,497, fav 2,356, buy 1,750
    assert (report.rows_read, report.rows_accepted, report.rows_rejected, report.rows_duplicate) == (84_474, 84_474, 0, 0)
    assert _types(tmp_path / "w.duckdb") == {"view": 75_871, "cart": 4_497, "fav": 2_356, "purchase": 1_750}


def test_online_retail_quarantines_guests_and_non_products_and_keeps_returns(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    report = load_file(warehouse, DATASETS / "uci_online_retail" / "online_retail_2010_2011.parquet", "online-retail")
    assert report.rows_read == 541_909 and report.reconciles()
    assert report.rejected_by_reason["missing_customer"] == 135_080  # SOURCE.md: NULL customer 135,080 rows
    assert report.rejected_by_reason["non_product_code"] > 0 and report.rows_duplicate > 5_000
    with duckdb.connect(str(warehouse), read_only=True) as con:
        returns, negative, customers, first_ts = con.execute(
            "select count(*) filter (where event_type = 'return'), count(*) filter (where quantity < 1), "
            "count(distinct user_id), min(event_ts) from raw.events").fetchone()
        assert con.execute("select count(*) from raw.events where item_id in ('POST', 'DOT', 'M')").fetchone()[0] == 0
    # every customer with at least one product line (SOURCE.md: 4,372 customers in all, some with only fees)
    expected = duckdb.sql(f"""
        select count(distinct CustomerID) from read_parquet('{DATASETS / "uci_online_retail" / "online_retail_2010_2011.parquet"}')
        where CustomerID is not null and regexp_matches(StockCode, '^[0-9]{{5}}') and InvoiceNo not like 'A%'
    """).fetchone()[0]
    assert returns > 8_000 and negative == 0 and customers == expected and 4_300 < customers <= 4_372
    assert str(first_ts) == "2010-12-01 08:26:00"  # UK winter time equals UTC


def test_ga_merch_maps_product_clicks_to_views_and_skips_duplicated_hits(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    report = load_file(warehouse, DATASETS / "ga_merch_store" / "product_events.parquet", "ga-merch")
    assert report.rows_read == 420_737 and report.reconciles()
    assert report.rows_duplicate >= 67  # SOURCE.md: 67 duplicated (visitor, visit, hit, sku, type) groups
    types = _types(warehouse)
    assert set(types) == {"view", "cart", "remove_from_cart", "checkout", "purchase"}
    assert types["view"] > 156_798  # product clicks and views together
