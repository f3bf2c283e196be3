"""The UIs as a user opens them (issue 26): `make ui` and `make mlflow-ui` started on a built home exactly as the
README says, and Debian's Chromium, driven by Playwright, looking at what a user looks at: the runs that built the
home, an asset's metadata, a check's Data Docs page (reached by clicking its link in Dagster) with its styles, a
target's candidate runs in MLflow, the exploration report. A failed test leaves a screenshot in its temporary folder.

The browser is the system's (`.ci/run` installs Debian's chromium; Playwright downloads none)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from dagster_project.settings import REPO_ROOT, ShopcastPaths

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]  # one worker: the UIs start once

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if os.environ.get("CI") and not CHROMIUM:  # .ci/run installs it: missing there is a failure, not a skip
    raise FileNotFoundError("CI: no chromium on PATH (.ci/run installs Debian's chromium package)")
if not CHROMIUM:
    pytestmark.append(pytest.mark.skip(reason="no chromium on PATH (apt-get install chromium; .ci/run does)"))
# What a headless Chromium needs on a machine without internet: no background calls to Google's services
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
# the settings' defaults (data_docs_url, mlflow_ui_url): the links the built home's metadata holds point there
DATA_DOCS_PORT, MLFLOW_PORT = 3001, 5000
STARTUP_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(target: str, port: int, home: Path, log: Path) -> subprocess.Popen:
    """`make ui` / `make mlflow-ui` as the README has a user run them, for this home, DAGSTER_HOME unset (a fresh
    shell's environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI")}
    env["SHOPCAST_HOME"] = str(home)
    return subprocess.Popen(["make", target, f"PORT={port}", f"VENV={Path(sys.executable).parent.parent}"],
                            cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(servers: list[subprocess.Popen], grace_seconds: float = 20) -> None:
    """SIGINT to every server's process group at once, SIGKILL to those still up after ``grace_seconds``
    (`dagster dev` sometimes waits a minute for its webserver after its daemon has stopped: 60 s of CI's teardown)."""
    running = [proc for proc in servers if proc.poll() is None]
    for proc in running:
        os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def uis(built_home, tmp_path_factory):
    """The built demo home (a copy: the UIs' daemon writes to its instance) with both UIs serving it, and the
    seconds from `make ui` to the first page that shows the home's runs."""
    from playwright.sync_api import Error as BrowserError
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    shutil.copytree(built_home, home, symlinks=True)
    dagster_port, mlflow_port = _free_port(), MLFLOW_PORT
    started = time.monotonic()
    servers = {"dagster": _make("ui", dagster_port, home, root / "ui.log"),
               "mlflow": _make("mlflow-ui", mlflow_port, home, root / "mlflow-ui.log")}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                _wait_for(page, f"http://127.0.0.1:{dagster_port}/runs", servers["dagster"], root / "ui.log")
                try:
                    page.get_by_text("shopcast_graph").first.wait_for(timeout=STARTUP_SECONDS * 1000)
                except BrowserError as nothing:
                    page.screenshot(path=str(root / "runs.png"))
                    raise AssertionError(f"make ui shows none of the home's runs (is the UI on the home's instance, "
                                         f"DAGSTER_HOME?): {page.locator('body').inner_text()[:600]!r}; "
                                         f"screenshot {root / 'runs.png'}") from nothing
                usable = time.monotonic() - started
                page.close()
                print(f"make ui to a page showing the home's runs: {usable:.0f} s")
                yield {"home": ShopcastPaths(home), "browser": browser, "usable_seconds": usable,
                       "dagster": f"http://127.0.0.1:{dagster_port}", "mlflow": f"http://127.0.0.1:{mlflow_port}",
                       "mlflow_log": root / "mlflow-ui.log", "mlflow_server": servers["mlflow"]}
            finally:
                browser.close()
    finally:
        _stop(list(servers.values()))


def _wait_for(page, url: str, server: subprocess.Popen, log: Path) -> None:
    from playwright.sync_api import Error as BrowserError

    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert server.poll() is None, f"{url}: the server stopped:\n{log.read_text()[-3000:]}"
        try:
            page.goto(url, timeout=10_000)
            return
        except BrowserError as not_yet:  # connection refused until the server listens
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}") from not_yet
            time.sleep(1)


@pytest.fixture
def page(uis, request, tmp_path):
    """A new tab; on failure, a screenshot of every tab it opened lands in the test's temporary folder."""
    context = uis["browser"].new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    tab = context.new_page()
    # Dagster's first-visit dialog (join the community, newsletter) covers the page in a new browser profile
    tab.add_locator_handler(tab.get_by_text("Join the Dagster community"),
                            lambda _: tab.get_by_role("button", name="Skip").click())
    failed_requests: list[str] = []
    context.on("requestfailed", lambda r: failed_requests.append(f"{r.url} ({r.failure})"))
    tab.failed_requests = failed_requests
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for number, opened in enumerate(context.pages):
            shot = tmp_path / f"screenshot-{number}.png"
            opened.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of {opened.url}: {shot}")
    context.close()


def test_the_runs_list_shows_the_runs_that_built_the_home(uis, page):
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(uis["home"].dagster_home)) as instance:
        built = {r.dagster_run.run_id: r.dagster_run.job_name for r in instance.get_run_records()}
    assert "shopcast_graph" in built.values()
    page.goto(f"{uis['dagster']}/runs")
    for run_id, job in built.items():
        row = page.locator("[class*='RunsFeedRow_rowGrid']", has_text=run_id[:8])  # a row of the runs table
        row.wait_for()
        assert job in row.inner_text() and "Success" in row.inner_text(), row.inner_text()
    assert uis["usable_seconds"] < STARTUP_SECONDS


def test_an_asset_shows_its_latest_partition_and_metadata_and_links_to_its_report(uis, page):
    """The exploration report's asset: its partition, the figures of its metadata, and its report link, which
    opens the report (served beside the UI) with its charts."""
    page.goto(f"{uis['dagster']}/assets/reports/exploration")
    page.get_by_text("Latest materialization").wait_for()
    body = page.locator("body")
    for shown in ("2026-11-01", "view_to_purchase", "buyers", "report"):
        page.get_by_text(shown, exact=True).first.wait_for()
    assert re.search(r"events\s+\S.*\s+\d{4,}", body.inner_text()), "the events count is shown"
    link = page.get_by_role("link", name=re.compile(r"exploration.2026-11-01\.html$")).first
    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state()
    assert report.url == f"http://127.0.0.1:{DATA_DOCS_PORT}/exploration/2026-11-01.html"
    report.get_by_role("heading", name="Data exploration: as-of 2026-11-01").wait_for()
    report.get_by_role("heading", name="funnel", exact=True).first.wait_for()  # (a chart and a table)
    images = report.locator("img")
    assert images.count() >= 3
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 100 for w in widths), widths  # each chart decoded, none broken


def test_a_checks_data_docs_link_opens_its_validation_page_with_its_styles_offline(uis, page):
    """Clicked in the Dagster UI as a user does: the check's Data Docs link opens the validation page over http,
    every script and style from the site itself (none from a CDN), Bootstrap's styles applied."""
    page.goto(f"{uis['dagster']}/assets/marts/feat_user_daily?view=checks")
    page.get_by_text("feat_user_daily_suite", exact=True).first.click()
    page.get_by_text("data_docs", exact=True).wait_for()
    link = page.get_by_role("link", name=re.compile(r"validations.feat_user_daily.")).first
    with page.context.expect_page() as opened:
        link.click()
    docs = opened.value
    docs.wait_for_load_state("load")
    address = urllib.parse.urlparse(docs.url)
    assert (address.scheme, address.netloc) == ("http", f"127.0.0.1:{DATA_DOCS_PORT}"), docs.url
    docs.get_by_text("feat_user_daily", exact=False).first.wait_for()
    loaded = docs.evaluate("""() => performance.getEntriesByType('resource').map(r => r.name)""")
    assert loaded and all(urllib.parse.urlparse(u).netloc == f"127.0.0.1:{DATA_DOCS_PORT}" for u in loaded), loaded
    assert any(u.endswith("bootstrap.min.css") for u in loaded), loaded
    # Bootstrap 4's own rule for .navbar, computed by the browser: the stylesheet is applied, not just fetched
    assert docs.evaluate("() => getComputedStyle(document.querySelector('.navbar')).display") == "flex"
    assert docs.evaluate("() => typeof window.jQuery") == "function"
    assert page.failed_requests == []


def test_mlflow_opens_a_targets_experiment_on_its_candidate_runs(uis, page):
    """The link `make mlflow-ui` prints for a target opens its runs (MLflow's model-training view), the run of the
    newest training with a candidate per family; the registered model shows its description."""
    log, url = uis["mlflow_log"], None
    deadline = time.monotonic() + STARTUP_SECONDS
    while url is None and time.monotonic() < deadline:
        found = re.search(r"purchase_propensity_7d: (http\S+)", log.read_text())
        url = found.group(1) if found else time.sleep(1)
    assert url and "workflowType=machine_learning" in url, log.read_text()[-3000:]
    _wait_for(page, url, uis["mlflow_server"], log)
    page.get_by_text("purchase_propensity_7d train 2026-10-25").first.wait_for()
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url  # not the GenAI traces
    # the candidates are the training run's children: expand it (its + button in the run name's cell)
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for candidate in ("logistic_regression (counts)", "gradient_boosting (counts)"):
        page.get_by_text(candidate, exact=True).first.wait_for()
    page.goto(url.replace(re.search(r"experiments/\d+", url).group(0), "models/purchase_propensity_7d"))
    page.get_by_text("Probability that the user buys in the 7 days").wait_for()
    page.get_by_text("Gate: a new version becomes @champion").wait_for()
    # from Dagster: the candidates asset's mlflow_run link opens that training run, in the model-training view
    page.goto(f"{uis['dagster']}/assets/models/purchase_propensity_7d_candidates")
    link = page.get_by_role("link", name=re.compile(r"experiments.\d+.runs.")).first
    with page.context.expect_page() as opened:
        link.click()
    run = opened.value
    run.get_by_text("purchase_propensity_7d train 2026-10-25").first.wait_for()
    assert run.url.startswith(f"http://127.0.0.1:{MLFLOW_PORT}/#/experiments/") and \
        "workflowType=machine_learning" in run.url, run.url
    run.get_by_text("logistic_regression (counts)").first.wait_for()  # its child runs, the candidates
