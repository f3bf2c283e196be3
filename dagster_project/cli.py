"""`shopcast`: generate, ingest, run and inspect the pipeline. Every operation that changes the warehouse runs
as a Dagster run through the asset graph, so it shows in the Dagster UI's run history."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from contextlib import closing
from pathlib import Path

from dagster_project.ingest.formats import FORMATS
from dagster_project.settings import SettingsError, ensure_home, load_settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from exc


def cmd_generate(args) -> int:
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    paths = ensure_home().paths
    cfg = GeneratorConfig(n_events=args.events, seed=args.seed, end_date=args.end_date, days=args.days,
                          drift_from=args.drift_from, order_signal=args.order_signal, reviews=args.reviews)
    out = Path(args.out) if args.out else paths.landing / "canonical"
    started = time.perf_counter()

    def progress(done, total, rows):
        print(f"  generated chunk {done}/{total}: {rows:,} events", flush=True)

    result = generate(cfg, out, progress=progress)
    seconds = time.perf_counter() - started
    print(f"generated {result.n_events:,} events for {result.n_users:,} users, {result.start_date} .. "
          f"{result.end_date - dt.timedelta(days=1)}, in {seconds:.1f}s ({result.n_events / seconds:,.0f} events/s)")
    print(f"files: {out}")
    if result.review_files:
        print(f"{result.n_reviews:,} reviews: {result.review_files[0].parent} (shopcast ingest --format reviews)")
    return 0


def cmd_ingest(args) -> int:
    from dagster_project import runs

    ensure_home()
    if args.mapping and args.format != "mapped":
        print("shopcast ingest: --mapping applies to --format mapped only", file=sys.stderr)
        return 2
    mapping = str(Path(args.mapping).resolve()) if args.mapping else None
    result = runs.ingest(args.format, [str(Path(p).resolve()) for p in args.paths], mapping)
    (materialization,) = result.asset_materializations_for_node("raw__events")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    print(f"ingest run {result.run_id}: files {meta['files']}, rows read {meta['rows_read']:,}, accepted "
          f"{meta['rows_accepted']:,}, rejected {meta['rows_rejected']:,}, duplicate {meta['rows_duplicate']:,}; "
          f"raw.events now holds {meta['dagster/row_count']:,} rows")
    print(meta["loads"])
    return 0


def cmd_run(args) -> int:
    from dagster_project import runs

    ensure_home()
    started = time.perf_counter()
    outcome = runs.run_graph(args.as_of, progress=lambda m: print(f"-> {m}", flush=True))
    print(f"done in {time.perf_counter() - started:.0f}s: as-of date {outcome['as_of_date']}, runs "
          + ", ".join(f"{job} {run_id}" for job, run_id in outcome["runs"].items()))
    print(f"training windows: {outcome['training_windows']}")
    span, settings = runs.event_span(), load_settings()
    print(f"data: events on {span.first_date} .. {span.last_date} ({settings.business_tz} business days); daily "
          f"partitions from {settings.partitions_start} (partitions_start), the Dagster UI's partition bar")
    return 0


def cmd_explore(args) -> int:
    from dagster_project import runs

    ensure_home()
    found = runs.explore(args.as_of)
    print(f"exploration of the events {found['window']} (as-of date {found['as_of_date']}): {found['events']:,} "
          f"events, {found['buyers']:,} buyers, {found['rejected_rows']:,} rows rejected at load")
    print(f"report: {found['report_file']}\n  (with `shopcast ui` running: {found['report']})")
    return 0


def cmd_sample(args) -> int:
    """Load a real public sample into this home with its settings, then run the whole graph."""
    from dagster_project import samples
    from dagster_project.settings import PROJECT_FILE, read_project_file, write_project_file
    from dagster_project.warehouse import connect, table_exists

    sample = samples.get(args.name)
    source = sample.path(Path(args.datasets) if args.datasets else None)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the {sample.name} sample is not there (pass --datasets, or set the "
                                "datasets setting, to the folder holding the shared datasets)")
    paths = load_settings().paths
    if paths.warehouse.exists():
        with connect(paths.warehouse, read_only=True) as con:
            formats = {r[0] for r in con.execute("select distinct source_format from raw.load_audit").fetchall()} \
                if table_exists(con, "raw", "load_audit") else set()
        if formats - {sample.format}:
            print(f"shopcast sample: {paths.home} already holds {', '.join(sorted(formats))} data; load the "
                  f"{sample.name} sample into its own home (make demo DATA={sample.name} uses "
                  f"data/{sample.name})", file=sys.stderr)
            return 2
    # the preset joins what the home's file already holds (a user's own settings stay); the environment still wins
    values = {**read_project_file(paths.home), **sample.settings()}
    file = write_project_file(paths.home, values, f"shopcast sample {sample.name}: {sample.why}")
    settings = ensure_home()
    print(f"sample {sample.name}: {source} ({sample.format}); settings in {file}: business time zone "
          f"{settings.business_tz}, eligibility floor {settings.min_class_examples} examples a class "
          f"({PROJECT_FILE} in the home; the environment overrides it)")
    cmd_ingest(argparse.Namespace(format=sample.format, paths=[str(source)], mapping=None))
    return cmd_run(argparse.Namespace(as_of=args.as_of))


def cmd_backfill(args) -> int:
    from dagster_project import runs

    ensure_home()
    started = time.perf_counter()
    run_ids = runs.backfill(args.job, args.first, args.last, per_day=args.per_day,
                            progress=lambda m: print(f"-> {m}", flush=True))
    print(f"done in {time.perf_counter() - started:.0f}s: {len(run_ids)} run(s) of {args.job}: {', '.join(run_ids)}")
    return 0


def cmd_simulate(args) -> int:
    from dagster_project.simulate import SimulationConfig, simulate
    from dagster_project.status import collect, render

    ensure_home()
    cfg = SimulationConfig(weeks=args.weeks, start=args.start, events=args.events, seed=args.seed,
                           drift_from=args.drift_from, days_per_run=args.days_per_run)
    started = time.perf_counter()
    print(f"simulating {cfg.weeks} weeks of daily runs, as-of dates {cfg.start} .. {cfg.end}"
          + (f", behaviour drifting from {cfg.drift_from}" if cfg.drift_from else ""), flush=True)
    simulate(cfg, progress=lambda m: print(f"-> {m}", flush=True))
    print(f"simulation done in {time.perf_counter() - started:.0f}s")
    print(render(collect()))
    return 0


def cmd_status(args) -> int:
    from dagster_project.status import collect, render

    ensure_home()
    report = collect()
    print(json.dumps(report, indent=2, default=str) if args.json else render(report, verbose=args.verbose))
    return 0


def cmd_config(args) -> int:
    """The effective settings, where each came from, and (with --dbt-vars / --env) what dbt and the UIs get."""
    from dagster_project.settings import PROJECT_FILE, describe

    settings = load_settings()
    if args.dbt_vars:
        print(json.dumps(settings.dbt_vars()))
        return 0
    if args.env:
        print("\n".join(f"export {k}={json.dumps(v)}" for k, v in settings.subprocess_env().items()))
        return 0
    rows = describe(settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"settings of the home {settings.home} (project file: {settings.home / PROJECT_FILE}; the environment "
          "overrides it)")
    width = max(len(r["setting"]) for r in rows)
    for r in rows:
        print(f"  {r['setting']:<{width}}  {r['value']:<24} {r['source']:<11} {r['variable']}")
    return 0


def _serve(command: list[str], what: str, beside: list[list[str]] = ()) -> int:
    """Run a UI in the foreground with the home's instance and stores (the environment the settings derive), and
    the ``beside`` processes for as long as it runs."""
    import subprocess

    settings = ensure_home()
    # the venv's executables first: `dagster dev` parses the dbt project with the `dbt` it finds on PATH, and a user
    # may start .venv/bin/shopcast without activating the venv (the code location then failed to load)
    env = {**os.environ, **settings.subprocess_env(),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    print(f"{what} for the home {settings.home} (Ctrl-C stops it)", flush=True)
    helpers = [subprocess.Popen(helper, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for helper in beside]
    time.sleep(1 if helpers else 0)
    for helper, command_line in zip(helpers, beside):
        if helper.poll() is not None:  # e.g. its port is taken: say so, the UI itself still starts
            print(f"could not start {' '.join(command_line[1:4])} (exit code {helper.returncode}): is its port in "
                  "use? (the setting data_docs_url names it)", file=sys.stderr, flush=True)
    try:
        return subprocess.call(command, env=env)
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait(timeout=10)


def cmd_ui(args) -> int:
    from urllib.parse import urlparse

    from dagster_project.settings import REPO_ROOT

    settings = load_settings()
    bin_dir = Path(sys.executable).parent
    # the checks' Data Docs links point at data_docs_url: a static server of the home's site there (a browser
    # refuses file:// links from the Dagster UI's http page)
    site = settings.paths.data_docs_site
    site.mkdir(parents=True, exist_ok=True)
    docs = urlparse(settings.data_docs_url)
    docs_server = [sys.executable, "-m", "http.server", str(docs.port or 80), "--bind", docs.hostname,
                   "--directory", str(site)]
    return _serve([str(bin_dir / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", args.host,
                   "-p", str(args.port)],
                  f"Dagster on http://{args.host}:{args.port}, its checks' Data Docs on {settings.data_docs_url}",
                  beside=[docs_server])


def cmd_mlflow_ui(args) -> int:
    from urllib.parse import urlparse

    from ml.registry import ui_link

    settings = load_settings()
    paths, address = settings.paths, urlparse(settings.mlflow_ui_url)
    host, port = args.host or address.hostname, args.port or address.port or 80
    url = f"{address.scheme}://{host}:{port}"
    bin_dir = Path(sys.executable).parent
    # MLflow 3.17's UI opens experiments in its GenAI view unless the address asks for the model-training one
    print("experiments (model-training view):", ui_link(url, "experiments"))
    for name, experiment_id in _experiments(paths):
        print(f"  {name}: {ui_link(url, f'experiments/{experiment_id}')}")
    return _serve([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", paths.mlflow_tracking_uri,
                   "--default-artifact-root", paths.mlflow_artifacts.as_uri(), "--host", host,
                   "--port", str(port)], f"MLflow on {url}")


def _experiments(paths) -> list[tuple[str, str]]:
    """The home's experiments (name, id), none before its first run: read from the tracking store's SQLite file."""
    import sqlite3

    store = paths.mlflow_dir / "mlflow.db"
    if not store.is_file():
        return []
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as con:
        return [(name, str(eid)) for eid, name in con.execute(
            "select experiment_id, name from experiments where lifecycle_stage = 'active' and name <> 'Default' "
            "order by name")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic behaviour events (canonical Parquet) to the landing folder")
    gen.add_argument("--events", type=int, default=500_000, help="about this many events (default 500,000)")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--days", type=int, default=120, help="days of history (default 120)")
    gen.add_argument("--end-date", type=_date, default=dt.date(2026, 11, 1),
                     help="first day after the data (default 2026-11-01)")
    gen.add_argument("--drift-from", type=_date, default=None,
                     help="from this day on, behaviour shifts (3x views per session, half the carts): a drift for "
                          "the monitoring to catch")
    gen.add_argument("--order-signal", action="store_true",
                     help="add a behaviour whose signal lies in the order of events, not their counts: a swap "
                          "(cart, remove, cart another item) is followed by a purchase, a drop (cart, cart, remove) "
                          "is not; what the sequence models can learn and window counts cannot")
    gen.add_argument("--reviews", action="store_true",
                     help="also write reviews of some purchases (the canonical reviews layout, in the reviews "
                          "folder beside the events): complainers mostly leave, and their words say so more than "
                          "their rating")
    gen.add_argument("--out", help="output folder (default <home>/landing/canonical)")
    gen.set_defaults(func=cmd_generate)

    ing = sub.add_parser("ingest", help="load files into raw.events (or raw.reviews) (a Dagster run)")
    ing.add_argument("--format", default="canonical", choices=sorted(FORMATS),
                     help="the export layout (docs/raw_schema.md); mapped reads a YAML mapping; reviews and "
                          "amazon-reviews load raw.reviews (amazon-reviews: each also a purchase event)")
    ing.add_argument("--mapping", help="the YAML mapping of --format mapped (default: <file>.yaml or mapping.yaml "
                                       "beside the file)")
    ing.add_argument("paths", nargs="+", help="files or folders")
    ing.set_defaults(func=cmd_ingest)

    run = sub.add_parser("run", help="materialize the whole graph for an as-of date (Dagster runs)")
    run.add_argument("--as-of", type=_date, default=None,
                     help="as-of date YYYY-MM-DD (default: the day after the latest event, or the latest event's day when "
                          "the export cut that day short)")
    run.set_defaults(func=cmd_run)

    smp = sub.add_parser("sample", help="load a real public sample (../shared/datasets) with its settings and run "
                                        "the whole graph on it")
    from dagster_project.samples import SAMPLES

    smp.add_argument("name", choices=list(SAMPLES))
    smp.add_argument("--datasets", help="the folder holding the samples (default datasets or "
                                        "../shared/datasets)")
    smp.add_argument("--as-of", type=_date, default=None, help="as-of date (default: the day after the data)")
    smp.set_defaults(func=cmd_sample)

    bf = sub.add_parser("backfill", help="a job over a range of as-of dates: one run (default) or one per date")
    bf.add_argument("first", type=_date, help="first as-of date YYYY-MM-DD")
    bf.add_argument("last", type=_date, help="last as-of date YYYY-MM-DD (inclusive)")
    bf.add_argument("--job", default="daily_scoring",
                    choices=["daily_scoring", "feature_backfill", "shopcast_graph", "weekly_training"],
                    help="daily_scoring (default): features, checks, scores with the current champions, outcomes, "
                         "drift")
    bf.add_argument("--per-day", action="store_true", help="one run per date, in date order, instead of one run")
    bf.set_defaults(func=cmd_backfill)

    sim = sub.add_parser("simulate", help="weeks of daily runs on generated data (in an empty home): "
                                          "scores, realised performance, drift, retrains and gate decisions")
    sim.add_argument("--weeks", type=int, default=8)
    sim.add_argument("--start", type=_date, default=dt.date(2026, 9, 7), help="first simulated as-of date")
    sim.add_argument("--events", type=int, default=300_000, help="events over history and simulation")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--drift-from", type=_date, default=None,
                     help="inject a behaviour drift from this day (the drift checks should fail, a retrain follow)")
    sim.add_argument("--days-per-run", type=int, default=1,
                     help="score the days between Mondays as ranges of up to this many dates, one run each (the "
                          "same tables as daily runs, less overhead); default 1: a run per day")
    sim.set_defaults(func=cmd_simulate)

    exp = sub.add_parser("explore", help="the data exploration report (events, funnel, cohorts, features by label, "
                                         "missing values, top items, rejections) of the 90 days before an as-of date")
    exp.add_argument("--as-of", type=_date, default=None, help="default: the date `shopcast run` would take")
    exp.set_defaults(func=cmd_explore)

    st = sub.add_parser("status", help="the summary: failed checks, targets and champions, lists, audiences, "
                                       "decisions (--verbose: every table and check too)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--verbose", action="store_true", help="every table's row count and every check's latest result")
    st.set_defaults(func=cmd_status)

    cfg = sub.add_parser("config", help="the effective settings and where each came from (default, file, "
                                        "environment)")
    cfg.add_argument("--json", action="store_true")
    cfg.add_argument("--dbt-vars", action="store_true", help="the vars dbt gets from the settings, as JSON (dbt "
                                                             "build --vars \"$(shopcast config --dbt-vars)\")")
    cfg.add_argument("--env", action="store_true", help="the environment the UIs and dbt get, as export lines")
    cfg.set_defaults(func=cmd_config)

    ui = sub.add_parser("ui", help="the Dagster UI (webserver and daemon) on this home's instance")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    mui = sub.add_parser("mlflow-ui", help="the MLflow UI on this home's tracking store and registry")
    mui.add_argument("--host", help="bind address (default: the setting mlflow_ui_url's host, loopback)")
    mui.add_argument("--port", type=int, help="(default: the setting mlflow_ui_url's port, 5000)")
    mui.set_defaults(func=cmd_mlflow_ui)
    return parser


# the commands that start Dagster runs: one line per step on the console, the whole log in a file (console.py)
RUNNING_COMMANDS = {"ingest", "run", "sample", "backfill", "simulate", "explore"}


def _follow_runs(command: str) -> None:
    from dagster_project import runs
    from dagster_project.console import keep_libraries_quiet, log_file_for

    log_file = log_file_for(ensure_home().paths.logs, command)
    keep_libraries_quiet(log_file)
    print(f"shopcast {command}: the whole log (every run's events, the libraries' warnings) in {log_file}",
          flush=True)
    console = sys.stdout  # the terminal's: while a run executes, its own stdout goes to the log file

    def say(line: str) -> None:
        console.write(line + "\n")
        console.flush()

    runs.follow_runs_on_console(log_file, say=say)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dagster_project.ingest import IngestError
    from dagster_project.locking import RunLocked
    from dagster_project.runs import RunFailed
    from dagster_project.warehouse import WarehouseBusy

    try:
        if args.command in RUNNING_COMMANDS:
            _follow_runs(args.command)
        return args.func(args)
    except (RunFailed, RunLocked, WarehouseBusy, IngestError, FileNotFoundError, SettingsError) as exc:
        print(f"shopcast {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
