"""`make ui` as a user starts it after `make demo`: the Dagster webserver on the home's own instance, queried over
its GraphQL endpoint for the runs that built the home."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from dagster_project import runs
from dagster_project.settings import REPO_ROOT
from tests.support import BIN

pytestmark = pytest.mark.slow

RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status jobName } } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.timeout(600)
def test_make_ui_shows_the_runs_and_materializations_of_the_home(pipeline):
    with runs.instance() as instance:
        built = {r.dagster_run.run_id for r in instance.get_run_records()}
    assert built, "the built home has runs"
    # the link a check's metadata gives to its Data Docs page (issue 26: an http address, never file://)
    import dagster as dg

    with runs.instance() as instance:
        evaluation = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(["marts", "feat_user_daily"]), "feat_user_daily_suite"))
    link = urllib.parse.urlparse(evaluation.event.dagster_event.event_specific_data.metadata["data_docs"].url)
    assert (link.scheme, link.netloc) == ("http", "127.0.0.1:3001") and link.path.startswith("/validations/"), link
    port, docs_port = _free_port(), _free_port()
    # what `make ui` runs (Makefile: $(BIN)/shopcast ui), on free ports; DAGSTER_HOME unset, as in a fresh shell
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {
        "SHOPCAST_DATA_DOCS_URL": f"http://127.0.0.1:{docs_port}"}
    ui = subprocess.Popen([str(BIN / "shopcast"), "ui", "--port", str(port)], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 300, None
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                answer = _graphql(port, RUNS_QUERY)
                if answer.get("data", {}).get("runsOrError", {}).get("results") is not None:
                    break
            except OSError:
                pass
            time.sleep(2)
        assert ui.poll() is None, ui.stdout.read().decode()[-3000:]
        shown = {r["runId"] for r in answer["data"]["runsOrError"]["results"]}
        assert built <= shown, (built, shown)
        materialized = _graphql(port, '{ assetOrError(assetKey: {path: ["marts", "feat_user_daily"]}) { ... on Asset '
                                      '{ assetMaterializations(limit: 1) { runId partition } } } }')
        (latest,) = materialized["data"]["assetOrError"]["assetMaterializations"]
        assert latest["runId"] in built and latest["partition"] == "2026-11-01"
        # the check's Data Docs page, served by `shopcast ui` beside Dagster, with its styles from the site itself
        with urllib.request.urlopen(f"http://127.0.0.1:{docs_port}{link.path}", timeout=10) as response:
            page = response.read().decode()
        assert "feat_user_daily" in page and "cdnjs" not in page and "maxcdn" not in page
        (style,) = re.findall(r'href="([^"]*bootstrap\.min\.css)"', page)
        style_url = urllib.parse.urljoin(f"http://127.0.0.1:{docs_port}{link.path}", style)
        with urllib.request.urlopen(style_url, timeout=10) as response:
            assert response.read().startswith(b"/*!\n * Bootstrap v4.3.1")
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
