"""The loaders on the real public samples in ../shared/datasets (never copied into the repository)."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from pathlib import Path

import duckdb
import pytest

from dagster_project.ingest import load_file
from dagster_project.settings import load_settings

DATASETS = load_settings().datasets_dir
if os.environ.get("CI") and not DATASETS.is_dir():  # CI has them beside the clone: a missing folder is a failure
    raise FileNotFoundError(f"CI: the shared real samples are not at {DATASETS} (set SHOPCAST_DATASETS)")
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
    # measured on the file (the same counts the end-to-end test pins in EXPECTED_LOADS): 1,920 fee and postage
    # lines (POST, DOT, M ...), 5,222 exact copies of an earlier line of the same file, none loaded before
    assert report.rejected_by_reason["non_product_code"] == 1_920
    assert (report.rows_duplicate, report.rows_duplicate_in_file, report.rows_already_loaded) == (5_222, 5_222, 0)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        returns, negative, customers, first_ts = con.execute(
            "select count(*) filter (where event_type = 'return'), count(*) filter (where quantity < 1), "
            "count(distinct user_id), min(event_ts) from raw.events").fetchone()
        assert con.execute("select count(*) from raw.events where item_id in ('POST', 'DOT', 'M')").fetchone()[0] == 0
        # every product's description reaches raw.items, each text dated by its first line (products are renamed)
        texts = con.execute("select description, described_at from raw.items where item_id = '85123A' order by 2")
        assert [(t, str(d)[:10]) for t, d in texts.fetchall()] == [
            ("WHITE HANGING HEART T-LIGHT HOLDER", "2010-12-01"), ("CREAM HANGING HEART T-LIGHT HOLDER", "2011-12-08")]
        assert report.items_described == con.execute("select count(distinct item_id) from raw.items").fetchone()[0] \
            == con.execute("select count(distinct item_id) from raw.events").fetchone()[0] == 3_676
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
    # SOURCE.md: 67 duplicated (visitor, visit, hit, sku, type) groups; measured: 388 rows repeat an earlier row
    # of those groups (a group can repeat many times), all within the file
    assert (report.rows_duplicate, report.rows_duplicate_in_file, report.rows_already_loaded) == (388, 388, 0)
    types = _types(warehouse)
    assert set(types) == {"view", "cart", "remove_from_cart", "checkout", "purchase"}
    assert types["view"] > 156_798  # product clicks and views together
    # the item is the product name: a purchase follows a view of the same item by the same user in 7,294 of 8,433
    # (user, item) pairs (by SKU, 4,096 of 9,169: views and purchases name different variants); 406 items bought
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("""
            select count(distinct item_id),
                   count(*) filter (where exists (select 1 from raw.events v where v.event_type = 'view'
                                                  and v.user_id = p.user_id and v.item_id = p.item_id)),
                   count(*)
            from (select distinct user_id, item_id from raw.events where event_type = 'purchase') p""").fetchone() \
            == (406, 7_294, 8_433)
        # the item is the product name, so each item's description is its name
        described = con.execute("select count(distinct item_id), count(*) filter (where description <> item_id), "
                                "count(*) from raw.items")
        assert described.fetchone() == (report.items_described, 0, report.items_described) == (446, 0, 446)


# Each sample end to end through `shopcast sample` (a subprocess, as a user runs it): load, features over the
# sample's windows in its business time zone, checks, training, the gate, scoring. Short training budget.
EXPECTED_LOADS = {
    # name: (rows read, accepted, rejected by reason, duplicates)
    "taobao": (84_474, 84_474, {}, 0),
    "ga-merch": (420_737, 420_347, {"non_integer_quantity": 2}, 388),
    "online-retail": (541_909, 399_687, {"missing_customer": 135_080, "non_product_code": 1_920}, 5_222),
}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # GA's 420k hits: about 5 minutes alone, more beside another test worker
@pytest.mark.parametrize("name", list(EXPECTED_LOADS))
def test_each_sample_runs_end_to_end_and_produces_predictions(name, tmp_path):
    import json
    import subprocess
    import sys

    from dagster_project.samples import get

    home = tmp_path / name
    env = {**os.environ, "SHOPCAST_HOME": str(home), "SHOPCAST_TRAINING_BUDGET_SECONDS": "20",
           "SHOPCAST_GATE_MARGIN": "0.0", "SHOPCAST_LOG_LEVEL": "WARNING",
           "SHOPCAST_MODEL_FAMILIES": "logistic_regression,gradient_boosting",
           # BG/NBD fitted on a 5,000-user sample per date (GA has 29,850 users: in a GA run measured beside other
           # work its 13 fits took 4 of the run's 8 minutes); the fit on a sample is what the setting is for
           "SHOPCAST_CLV_FIT_USERS": "5000",
           # the recommenders: two learned ones besides the naive ones (every candidate is compared on these data
           # by benchmarks/recommendations.py)
           "SHOPCAST_RECOMMENDATION_CANDIDATES": "als,ease",
           # the counts set only, as the rest of the suite trains (the choice between sets is measured on these data
           # by benchmarks/features.py): each family searched once, not once per set (GA's run had grown to nine
           # minutes, half of them fitting and logging candidates). Twelve cutoffs, as shipped: with five, GA's
           # purchase missed the floor.
           "SHOPCAST_FEATURE_SETS": "counts"}
    for key in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "SHOPCAST_BUSINESS_TZ",
                "SHOPCAST_TRAINING_CUTOFFS", "SHOPCAST_TRAINING_CADENCE_DAYS", "SHOPCAST_MIN_CLASS_EXAMPLES",
                "SHOPCAST_MIN_ROC_AUC", "SHOPCAST_MIN_PR_AUC_SKILL"):
        env.pop(key, None)
    shopcast = str(Path(sys.executable).parent / "shopcast")
    sample = get(name)
    if name in ("ga-merch", "online-retail"):
        # the logistic regression alone: on GA it is the best family of purchase and churn on the counts set
        # (benchmarks/results/features.md), and gradient boosting's five fits a target (tuning, refit, three
        # cross-fits) on the 105k training rows took 4 of the run's 9 minutes (measured beside other work), the
        # revenue hurdle's 2 of them; on Online Retail about a minute of the run; the family itself is tested on
        # Taobao (every family) and in tests/test_models.py
        env["SHOPCAST_MODEL_FAMILIES"] = "logistic_regression"
    if name == "taobao":
        # a user's own export, not the sample command: ingest, then run, with no window setting; the eligibility
        # floor and zone as `shopcast sample taobao` sets them. The run sizes its windows to the 9 days.
        env |= {"SHOPCAST_MIN_CLASS_EXAMPLES": str(sample.min_class_examples),
                "SHOPCAST_BUSINESS_TZ": sample.business_timezone,
                # two cutoffs a day apart: no purged split fits in 9 days (their figures are optimistic)
                "SHOPCAST_PURGE_OVERLAPPING_LABELS": str(sample.purge_overlapping_labels).lower()}
        # every family, as the sample command trains them: the network ranked best here but missed the ROC-AUC
        # floor, and hid the forest that passed it (issue 22): the floor is now applied before the best is chosen
        env.pop("SHOPCAST_MODEL_FAMILIES")
        env.pop("SHOPCAST_FEATURE_SETS", None)  # and on both feature sets, as shipped (9 days: fast)
        steps = [[shopcast, "ingest", "--format", sample.format, str(sample.path(DATASETS))], [shopcast, "run"]]
    else:
        steps = [[shopcast, "sample", name, "--datasets", str(DATASETS)]]
    for step in steps:
        proc = subprocess.run(step, env=env, capture_output=True, text=True, timeout=3000, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    windows = re.search(r"^training windows: (.*)$", proc.stdout, re.MULTILINE)
    assert windows, proc.stdout[-3000:]
    if name == "taobao":  # events 2017-11-25 .. 12-03 (China time): daily cutoffs 11-26 and 11-27
        assert windows.group(1).startswith("2 training cutoffs every day (9 days of history before 2017-12-04")
    else:
        assert windows.group(1).startswith("12 training cutoffs every 7 days"), windows.group(1)
        assert tomllib.loads((home / "shopcast.toml").read_text())["business_tz"] == sample.business_timezone

    read, accepted, rejected, duplicate = EXPECTED_LOADS[name]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        audit = con.execute("select rows_read, rows_accepted, rows_duplicate, cast(rejected_by_reason as varchar) "
                            "from raw.load_audit").fetchall()
        population, predicted, as_of, in_range, versions = con.execute("""
            select (select count(*) from marts.fct_scoring_population where as_of_date = p.as_of_date),
                   count(*), any_value(p.as_of_date), count(*) filter (where probability between 0 and 1),
                   count(distinct model_version)
            from predictions.purchase_propensity_7d p group by p.as_of_date""").fetchone()
        by_reason = dict(con.execute("select reason_code, count(*) from raw.rejected_events group by 1").fetchall())
    assert len(audit) == 1 and audit[0][:3] == (read, accepted, duplicate)
    assert json.loads(audit[0][3]) == rejected and by_reason == rejected
    # the scores are for the day after the sample ends, one per user active in the 28 days before it
    assert predicted == population == in_range > 0 and versions == 1
    status = json.loads(subprocess.run([shopcast, "status", "--json"], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    targets = {t["target"]: t for t in status["targets"]}
    champion = targets["purchase_propensity_7d"]["champion"]
    assert champion is not None and 0.6 <= champion["validation_metrics"]["roc_auc"] <= 1
    assert targets["purchase_propensity_7d"]["latest_predictions"]["as_of_date"] == as_of.isoformat()
    churn = targets["churn_probability_7d"]
    if name == "taobao":  # every user of the 9 days stays active: no churner to learn from, so nothing is published
        assert churn["champion"] is None and churn["latest_predictions"] is None
    else:
        assert churn["champion"] is not None and churn["latest_predictions"]["as_of_date"] == as_of.isoformat()
        # both recommendation lists, for every user of the scoring population, ten items each
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            for table in ("next_items", "new_items"):
                users, rows, first_rank_items = con.execute(
                    f"select count(distinct user_id), count(*), count(distinct item_id) filter (where rank = 1) "
                    f"from predictions.{table} where as_of_date = ?", [as_of]).fetchone()
                assert users == population and rows == 10 * population and first_rank_items > 1, table
    # the cold-start list: decided on items held out from training, published only where the text won there
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        promoted, reason, content, baseline = con.execute(
            "select promoted, reason, candidate_score, incumbent_score from monitoring.model_decisions "
            "where target = 'cold_start_items'").fetchone()
        listed, described, users = con.execute(
            "select count(*), count(*) filter (where reason like 'described like %'), count(distinct user_id) "
            "from predictions.cold_start_items where as_of_date = ?", [as_of]).fetchone()
    # (no figure where too few test users bought a held-out item: Taobao's 9 days)
    assert promoted == (content is not None and content > baseline)
    assert reason.startswith("published" if promoted else "not published")
    assert (promoted or listed == 0) and described == listed
    if name == "online-retail":  # product descriptions: 0.217 against chance's 0.017 (benchmarks/cold_start.py)
        assert promoted and content > 3 * baseline and listed > 0 and 0 < users <= population, reason


def test_amazon_reviews_load_as_reviews_with_a_purchase_each_and_reload_as_a_duplicate_file(tmp_path):
    """SOURCE.md: 10,261 reviews, 1,429 reviewers, 900 items, 2004-09-18 .. 2014-07-22, no (reviewer, item) pair
    twice: every row is accepted, and each review is also a purchase event at its day (the proxy)."""
    warehouse = tmp_path / "w.duckdb"
    path = DATASETS / "amazon_reviews_5core" / "Musical_Instruments.parquet"
    report = load_file(warehouse, path, "amazon-reviews")
    assert (report.rows_read, report.rows_accepted, report.rows_rejected, report.rows_duplicate) == (10_261, 10_261, 0, 0)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        reviews = con.execute("select count(*), count(distinct user_id), count(distinct item_id), "
                              "cast(min(review_ts) as date), cast(max(review_ts) as date), min(rating), max(rating), "
                              "count(*) filter (where text is null) from raw.reviews").fetchone()
        purchases = con.execute("select count(*) from raw.events e join raw.reviews r on e.event_id = "
                                "'review-' || r.review_id and e.user_id = r.user_id and e.item_id = r.item_id "
                                "and e.event_ts = r.review_ts where e.event_type = 'purchase'").fetchone()[0]
        total_events = con.execute("select count(*) from raw.events").fetchone()[0]
    assert reviews[:5] == (10_261, 1_429, 900, dt.date(2004, 9, 18), dt.date(2014, 7, 22))
    assert reviews[5:7] == (1.0, 5.0) and reviews[7] == 0
    assert purchases == total_events == 10_261
    again = load_file(warehouse, path, "amazon-reviews")
    assert again.duplicate_file and again.rows_duplicate == 10_261 and again.rows_accepted == 0


@pytest.mark.slow
def test_the_amazon_reviews_sample_trains_and_scores_the_90_day_target_with_review_features(tmp_path):
    """`shopcast sample amazon-reviews` as a user runs it: reviews loaded (each also a purchase), the reviewers
    active in the 90 days before each date scored on the 90-day purchase target the sample's settings add, by a
    model that reads review features. Slimmed like the other samples: one family on the reviews set, a short budget
    (what the reviews add on these data: benchmarks/features.py, docs/reviews.md)."""
    import json
    import subprocess
    import sys

    home = tmp_path / "amazon"
    env = {**os.environ, "SHOPCAST_HOME": str(home), "SHOPCAST_LOG_LEVEL": "WARNING",
           "SHOPCAST_MODEL_FAMILIES": "logistic_regression", "SHOPCAST_FEATURE_SETS": "reviews",
           "SHOPCAST_TRAINING_BUDGET_SECONDS": "20", "SHOPCAST_GATE_MARGIN": "0.0", "SHOPCAST_CLV_FIT_USERS": "2000",
           "SHOPCAST_RECOMMENDATION_CANDIDATES": "ease"}
    for key in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "SHOPCAST_BUSINESS_TZ", "SHOPCAST_TRAINING_CUTOFFS",
                "SHOPCAST_TRAINING_CADENCE_DAYS", "SHOPCAST_MIN_CLASS_EXAMPLES", "SHOPCAST_MIN_ROC_AUC",
                "SHOPCAST_MIN_PR_AUC_SKILL", "SHOPCAST_MIN_EXPECTED_OVER_OBSERVED",
                "SHOPCAST_MAX_EXPECTED_OVER_OBSERVED", "SHOPCAST_BACKTEST_CUTOFFS"):
        env.pop(key, None)
    shopcast = str(Path(sys.executable).parent / "shopcast")
    proc = subprocess.run([shopcast, "sample", "amazon-reviews", "--datasets", str(DATASETS)], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = tomllib.loads((home / "shopcast.toml").read_text())
    assert (settings["extra_targets"], settings["active_window_days"]) == ("purchase_propensity_90d", 90)
    # 4 weeks apart: the 90-day label of eight of them closes before the validation cutoff (the purged split)
    assert "12 training cutoffs every 28 days" in proc.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        audit = con.execute("select rows_read, rows_accepted, rows_rejected, rows_duplicate "
                            "from raw.load_audit").fetchall()
        as_of, predicted, population, expected = con.execute("""
            select p.as_of_date, count(*),
                   (select count(*) from marts.fct_scoring_population where as_of_date = p.as_of_date),
                   sum(probability)
            from predictions.purchase_propensity_90d p group by p.as_of_date""").fetchone()
        published = {t: n for t, n in con.execute(
            "select 'churn', count(*) from predictions.churn_probability_7d union all "
            "select 'revenue', count(*) from predictions.predicted_revenue_28d").fetchall()}
    assert audit == [(10_261, 10_261, 0, 0)]
    # ~440 reviewers a quarter; about a third of them review (buy) again within 90 days
    assert predicted == population > 300 and 0.15 * population < expected < 0.6 * population
    # every reviewer active in the last week reviews again later in this 5-core sample (no churner to learn from),
    # and reviews carry no price (no revenue): neither is published, and the status says why
    assert published == {"churn": 0, "revenue": 0}
    status = json.loads(subprocess.run([shopcast, "status", "--json"], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    target = {t["target"]: t for t in status["targets"]}["purchase_propensity_90d"]
    assert target["champion"] is not None and target["latest_predictions"]["as_of_date"] == str(as_of)[:10]
    candidates = target["latest_training"]["candidates"]
    assert set(candidates) == {"logistic_regression (reviews)"}, candidates
