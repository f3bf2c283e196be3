"""The suites read only the columns they check, and a batch of those columns is validated for real."""

from __future__ import annotations

import pandas as pd

from expectations import SuiteValidator, suite_columns


def test_a_suite_names_the_columns_it_reads_and_a_suite_checking_the_table_shape_reads_all():
    assert suite_columns("fct_training_set") == ["user_id", "as_of_date", "cutoff_rank", "purchase_next_7d",
                                                 "churn_next_7d", "revenue_next_28d"]
    assert suite_columns("raw_events") is None  # it checks the exact set of columns
    assert {"days_since_last_event", "view_count_90d"} <= set(suite_columns("feat_user_daily"))


def test_the_training_set_suite_on_its_columns_alone_passes_good_rows_and_fails_a_bad_label(tmp_path):
    rows = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(40)], "as_of_date": pd.Timestamp("2026-10-01"), "cutoff_rank": 1,
        "purchase_next_7d": [1, 0, 0, 0] * 10, "churn_next_7d": [0, 1] * 20, "revenue_next_28d": 12.5,
    })[suite_columns("fct_training_set")]
    validator = SuiteValidator(tmp_path / "gx", "fct_training_set")
    assert validator.run(rows, batch="good").success
    broken = rows.assign(purchase_next_7d=[2] + [0] * 39)
    summary = validator.run(broken, batch="bad-label")
    assert not summary.success
    assert {f["expectation"] for f in summary.failed} >= {"expect_column_values_to_be_in_set"}
    assert summary.evaluated == len(validator.context.suites.get("fct_training_set").expectations)


def test_data_docs_open_over_http_and_render_offline(tmp_path):
    """Issue 26: each summary links its validation page at the address `shopcast ui` serves the site from (never a
    file:// URL a browser refuses from the Dagster UI), and no page loads a script or style from a CDN: each is the
    site's own copy of the npm package, by a path relative to the page (the site moves with the home)."""
    import re
    from urllib.parse import urlparse

    from expectations.data_docs import PACKAGES

    rows = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(40)], "as_of_date": pd.Timestamp("2026-10-01"), "cutoff_rank": 1,
        "purchase_next_7d": [1, 0, 0, 0] * 10, "churn_next_7d": [0, 1] * 20, "revenue_next_28d": 12.5,
    })[suite_columns("fct_training_set")]
    validator = SuiteValidator(tmp_path / "gx", "fct_training_set")
    (summary,) = validator.finish([validator.run(rows, batch="good")], "http://127.0.0.1:3001/")
    site = tmp_path / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site"  # GX keeps its context in gx/
    url = urlparse(summary.data_docs_url)
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:3001") and url.path.startswith("/validations/")
    page = site / url.path.lstrip("/")
    assert page.is_file() and "fct_training_set" in page.read_text()
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 2  # the index and the validation page
    cdn = [u for p in PACKAGES for u, _ in p.urls]
    for html in pages:
        text = html.read_text()
        assert not [u for u in cdn if f'"{u}"' in text], html
        # nothing a page loads comes from another host (GX's logo came from S3 with the context's id)
        loaded_elsewhere = re.findall(r'(?:src=|<link[^>]*href=)"(https?://[^"]*)"', text)  # (links to docs may)
        assert not loaded_elsewhere, (html, loaded_elsewhere)
        for local in re.findall(r'src="([^"]*static/vendor/great_expectations/[^"]*)"', text):
            assert (html.parent / local).is_file(), (html, local)
        for local in re.findall(r'(?:src|href)="([^"]*static/vendor/[^"]*)"', text):
            assert (html.parent / local).is_file(), (html, local)
    styles = re.findall(r'href="([^"]*bootstrap\.min\.css)"', page.read_text())
    assert styles and (page.parent / styles[0]).read_text().startswith("/*!\n * Bootstrap v4.3.1")


def test_a_later_run_renders_its_own_pages_and_the_index_lists_every_run(tmp_path):
    """Data Docs grow by each run's pages: an earlier run's page is not rendered again (a whole rebuild renders
    every validation the home ever stored, on every run), and the index links both runs."""
    rows = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(40)], "as_of_date": pd.Timestamp("2026-10-01"), "cutoff_rank": 1,
        "purchase_next_7d": [1, 0, 0, 0] * 10, "churn_next_7d": [0, 1] * 20, "revenue_next_28d": 12.5,
    })[suite_columns("fct_training_set")]
    site = tmp_path / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site"
    validator = SuiteValidator(tmp_path / "gx", "fct_training_set")
    (first,) = validator.finish([validator.run(rows, batch="first")], "http://127.0.0.1:3001/")
    first_page = site / first.data_docs_url.split("3001/", 1)[1]
    first_page.write_text(first_page.read_text() + "<!-- untouched -->")
    later = SuiteValidator(tmp_path / "gx", "fct_training_set")  # the next run: a new process, the same home
    (second,) = later.finish([later.run(rows, batch="second")], "http://127.0.0.1:3001/")
    second_page = site / second.data_docs_url.split("3001/", 1)[1]
    assert second_page.is_file() and second_page != first_page
    assert first_page.read_text().endswith("<!-- untouched -->")
    index = (site / "index.html").read_text()
    assert "first" in index and "second" in index


def test_the_feature_suite_follows_the_population_window_of_the_settings():
    from expectations.suites import build_suite

    def bounds(suite, column):
        (found,) = [e for e in suite.expectations if getattr(e, "column", None) == column
                    and type(e).__name__ == "ExpectColumnValuesToBeBetween"]
        return found.min_value, found.max_value

    shipped, quarterly = build_suite("feat_user_daily"), build_suite("feat_user_daily", active_window_days=90)
    assert bounds(shipped, "days_since_last_event") == (1, 28) and bounds(quarterly, "days_since_last_event") == (1, 90)
    # a user of a 90-day population may have had no event in the last 28 days
    assert bounds(shipped, "events_28d")[0] == 1 and bounds(quarterly, "events_28d")[0] == 0
    assert bounds(quarterly, "hours_since_last_event") == (0, 90 * 24)


def test_a_run_validates_the_suite_the_code_builds_reusing_the_stored_one_only_when_it_is_the_same(tmp_path):
    """The code is the source of truth: an earlier run's stored suite is reused only when its expectations equal
    what the code builds now (rewriting it each run compared 96 expectations pairwise: 3 s), and replaced when
    the settings changed it or someone edited the stored copy."""
    from expectations.runner import _expectations
    from expectations.suites import build_suite

    def window(validator) -> int:
        (bound,) = [e.max_value for e in validator.checkpoint.validation_definitions[0].suite.expectations
                    if getattr(e, "column", None) == "days_since_last_event" and hasattr(e, "max_value")]
        return bound

    gx_dir = tmp_path / "gx"
    first = SuiteValidator(gx_dir, "feat_user_daily")
    stored_id = first.checkpoint.validation_definitions[0].suite.id
    again = SuiteValidator(gx_dir, "feat_user_daily")
    assert again.checkpoint.validation_definitions[0].suite.id == stored_id and window(again) == 28
    quarterly = SuiteValidator(gx_dir, "feat_user_daily", active_window_days=90)
    assert window(quarterly) == 90
    assert _expectations(quarterly.context.suites.get("feat_user_daily")) == \
        _expectations(build_suite("feat_user_daily", active_window_days=90))
    # an edited stored copy (one expectation dropped by hand) is replaced by the code's suite
    edited = quarterly.context.suites.get("feat_user_daily")
    edited.expectations.pop()
    edited.save()
    assert len(SuiteValidator(gx_dir, "feat_user_daily", active_window_days=90).checkpoint
               .validation_definitions[0].suite.expectations) == len(edited.expectations) + 1
    assert _expectations(quarterly.context.suites.get("feat_user_daily")) == \
        _expectations(build_suite("feat_user_daily", active_window_days=90))
