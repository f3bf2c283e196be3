"""Scale benchmark (issue 9): the whole graph at 1M, 10M and 100M generated events on this machine, per stage,
against the DuckDB floor and the pandas peer of the feature step.

    make bench-scale                                  # 1M, 10M, 100M: writes benchmarks/results/scale.md
    python benchmarks/scale.py --sizes 1000000        # one size (the report keeps the other sizes' last figures)

Per size, in a fresh SHOPCAST_HOME (each size in its own process, so that memory figures are its own):
1. generate (not timed as part of the graph): 120 days of events, landed as one Parquet file per day, as a shop's
   daily export would arrive; the last day is held back;
2. the whole graph on the first 119 days: ingest → features (the training history included) → checks → train →
   register → gate → BG/NBD → score → audiences → monitoring → publish (`runs.ingest` + `runs.run_graph`, the code
   `shopcast run` runs);
3. the daily incremental run: the held-back day lands, is ingested, and the daily job scores the next as-of date;
4. the floor: one hand-written DuckDB query computing the feature mart for that as-of date from the same files;
5. the pandas peer of the same, in a child process, given 10 minutes (skipped at larger sizes once it fails).

Stage figures come from Dagster's own event log (step start and end), so they are the steps the UI shows; peak
memory is the RSS of the whole process tree (Python, dbt, the pandas child) sampled every 0.2 s, attributed to
the step running at the time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = [1_000_000, 10_000_000, 100_000_000]
DAYS = 120
END = dt.date(2026, 11, 1)            # generated events end the day before; the daily run scores END
PANDAS_BUDGET_SECONDS = 600
TARGETS = {"graph_seconds": 15 * 60, "peak_rss_gb": 16, "feature_floor_ratio": 2.0, "scoring_users_per_minute": 1e6}


class RssSampler:
    """(time, RSS of this process tree) every ``interval`` seconds, in a thread."""

    def __init__(self, interval: float = 0.2):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.time(), total))
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_mb(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(inside, default=0) / 2**20)


# --- events ----------------------------------------------------------------------------------------------------

def land_events(n_events: int, workdir: Path) -> dict:
    """Generate once per size and seed, then split into one Parquet file per day (kept for later runs)."""
    import duckdb

    from dagster_project.generate.synthetic import GeneratorConfig, generate
    from dagster_project.settings import load_settings

    folder = workdir / f"events_{n_events}"
    marker = folder / "events.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    cfg = GeneratorConfig(n_events=n_events, seed=1, days=DAYS, end_date=END)
    started = time.perf_counter()
    generated = generate(cfg, folder / "generated")
    seconds = time.perf_counter() - started
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'; set preserve_insertion_order = false")
    con.execute(f"set memory_limit = '{load_settings().duckdb_memory_limit}'")
    con.execute(f"set temp_directory = '{folder / 'spill'}'")
    by_day = folder / "by_day"
    con.execute(f"copy (select *, cast(event_ts as date) as day from read_parquet(?)) to '{by_day}' "
                f"(format parquet, partition_by (day))", [[str(f) for f in generated.files]])
    days = {}
    for part in sorted(by_day.glob("day=*")):
        day = part.name.removeprefix("day=")
        target = folder / f"events_{day}.parquet"
        files = sorted(part.glob("*.parquet"))
        if len(files) == 1:
            files[0].rename(target)
        else:
            con.execute(f"copy (select * from read_parquet(?)) to '{target}' (format parquet)", [[str(f) for f in files]])
        days[day] = str(target)
    shutil.rmtree(by_day)
    shutil.rmtree(folder / "generated")
    shutil.rmtree(folder / "spill", ignore_errors=True)
    info = {"events": generated.n_events, "users": generated.n_users, "generate_seconds": round(seconds, 1),
            "days": days, "bytes": sum(Path(p).stat().st_size for p in days.values())}
    marker.write_text(json.dumps(info, indent=1))
    return info


# --- stages from Dagster's event log ---------------------------------------------------------------------------

def stage_of(step_key: str, checks: set[str]) -> str:
    if step_key in checks:
        return "checks"
    if step_key.startswith("raw__"):
        return "ingest"
    if step_key == "dbt_audiences":
        return "audiences"
    if step_key.startswith("dbt_") or step_key == "marts__training_cutoff_features":
        return "features"
    if step_key.startswith("predictions__clv"):  # the run's date and the training cutoffs
        return "BG/NBD"
    if step_key.endswith("_candidates") or step_key == "training__training_sample":
        return "train + register"
    if step_key.endswith("_champion"):
        return "gate"
    if step_key.startswith("predictions__"):
        return "score"
    if step_key.startswith("monitoring__"):
        return "monitoring"
    if step_key.startswith("serving__"):
        return "publish"
    return "other"


def run_steps(run_id: str) -> tuple[list[dict], dict[str, float]]:
    """(steps with start, end, stage; dbt models' own execution seconds) of one run."""
    import dagster as dg

    from dagster_project import runs

    with runs.instance() as instance:
        records = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                                                     dg.DagsterEventType.STEP_FAILURE,
                                                     dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                                                     dg.DagsterEventType.ASSET_MATERIALIZATION})
    starts, steps, checks, materializing, models = {}, [], set(), set(), {}
    for record in records:
        event = record.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            steps.append({"step": event.step_key, "start": starts[event.step_key], "end": record.timestamp})
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            checks.add(event.step_key)
        else:
            materializing.add(event.step_key)
            materialization = event.step_materialization_data.materialization
            duration = materialization.metadata.get("Execution Duration")
            if duration is not None:
                models[materialization.asset_key.to_user_string()] = round(float(duration.value), 2)
    for step in steps:  # dbt's steps evaluate checks too (its data tests), but they are steps of assets
        step["stage"] = stage_of(step["step"], checks - materializing)
    return steps, models


def summarise(steps: list[dict], sampler: RssSampler, wall: tuple[float, float]) -> dict[str, dict]:
    stages: dict[str, dict] = {}
    for step in steps:
        stage = stages.setdefault(step["stage"], {"seconds": 0.0, "peak_rss_mb": 0})
        stage["seconds"] += step["end"] - step["start"]
        stage["peak_rss_mb"] = max(stage["peak_rss_mb"], sampler.peak_mb(step["start"], step["end"]))
    in_steps = sum(s["seconds"] for s in stages.values())
    stages["run overhead"] = {"seconds": max(0.0, wall[1] - wall[0] - in_steps), "peak_rss_mb": 0}
    for stage in stages.values():
        stage["seconds"] = round(stage["seconds"], 1)
    return stages


# --- yardsticks --------------------------------------------------------------------------------------------------

def floor_seconds(files: list[str], as_of: dt.date, home: Path) -> dict:
    """The floor query with the warehouse's own memory bound and spill folder."""
    import duckdb

    from benchmarks.feature_floor import floor_features
    from dagster_project.warehouse import duckdb_config

    con = duckdb.connect(config=duckdb_config(home / "floor.duckdb"))
    started = time.perf_counter()
    rows = len(floor_features(con, files, as_of))
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": round(seconds, 2), "rows": rows}


def pandas_seconds(files: list[str], as_of: dt.date, budget: float) -> dict:
    """The pandas peer in a child process; it fails or is stopped at ``budget`` seconds."""
    code = ("import sys, json, datetime as dt; sys.path.insert(0, sys.argv[1]);"
            "from benchmarks.feature_floor import pandas_features;"
            "frame = pandas_features(json.loads(sys.argv[2]), dt.date.fromisoformat(sys.argv[3]));"
            "print(len(frame))")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).resolve().parent.parent),
                              json.dumps(files), as_of.isoformat()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    peak, process = 0, psutil.Process(child.pid)
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.Error:
            pass
        if time.perf_counter() - started > budget:
            child.kill()
            child.wait()
            return {"finished": False, "seconds": round(budget), "peak_rss_mb": round(peak / 2**20),
                    "reason": f"stopped after {budget:.0f} s"}
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    out, err = child.communicate()
    if child.returncode != 0:
        return {"finished": False, "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20),
                "reason": (err.strip().splitlines() or ["failed"])[-1][:200]}
    return {"finished": True, "seconds": round(seconds, 1), "rows": int(out.strip()), "peak_rss_mb": round(peak / 2**20)}


# --- one size ----------------------------------------------------------------------------------------------------

def pandas_fits(results: dict, n_events: int) -> str | None:
    """Why the pandas peer is not run at ``n_events`` (None: run it): it holds every event read in memory, so its
    peak grows with the events; projected from the largest smaller size it finished, it must fit in 80% of RAM
    (past that the kernel kills it, or whatever else it picks, instead of the peer failing cleanly)."""
    finished = [(int(n), r["pandas"]) for n, r in results.items() if int(n) < n_events and r["pandas"].get("finished")]
    if not finished:
        return None
    n, peer = max(finished)
    projected_mb = peer["peak_rss_mb"] * n_events / n
    memory_mb = psutil.virtual_memory().total / 2**20
    if projected_mb > 0.8 * memory_mb:
        return (f"not run: it holds every event in memory ({peer['peak_rss_mb']:,} MB at {n:,} events), about "
                f"{projected_mb / 1024:,.0f} GB at {n_events:,}; this machine has {memory_mb / 1024:,.0f} GB")
    return None


def fresh_home(events: dict, home: Path):
    """A fresh SHOPCAST_HOME for this process with every generated day but the last in its canonical landing
    folder: (the home's paths, the landing folder, the days, the held-back last day)."""
    shutil.rmtree(home, ignore_errors=True)
    os.environ["SHOPCAST_HOME"] = str(home)
    os.environ.setdefault("SHOPCAST_LOG_LEVEL", "WARNING")
    from dagster_project.settings import ensure_home

    paths = ensure_home().paths
    landing = paths.landing / "canonical"
    landing.mkdir(parents=True)
    days = sorted(events["days"])
    for day in days[:-1]:
        os.symlink(events["days"][day], landing / Path(events["days"][day]).name)
    return paths, landing, days, days[-1]


def run_size(n_events: int, workdir: Path, pandas_budget: float | None, pandas_skipped: str | None = None) -> dict:
    events = land_events(n_events, workdir)
    home = workdir / f"home_{n_events}"
    paths, landing, days, new_day = fresh_home(events, home)
    from dagster_project import runs
    graph_as_of = dt.date.fromisoformat(new_day)   # features use the events strictly before it
    daily_as_of = graph_as_of + dt.timedelta(days=1)
    result = {"events": events["events"], "users": events["users"], "generate_seconds": events["generate_seconds"],
              "parquet_mb": round(events["bytes"] / 2**20)}

    with RssSampler() as sampler:
        def timed(*launches) -> dict:
            """Run the launches in order; their wall time, peak memory and per-stage figures."""
            started = time.time()
            run_ids = [run_id for launch in launches for run_id in launch()]
            wall = (started, time.time())
            steps, models = [], {}
            for run_id in run_ids:
                run_step, run_models = run_steps(run_id)
                steps += run_step
                models |= run_models
            return {"seconds": round(wall[1] - wall[0], 1), "peak_rss_mb": sampler.peak_mb(*wall),
                    "stages": summarise(steps, sampler, wall), "dbt_models": models}

        result["graph"] = timed(lambda: [runs.ingest("canonical", [str(landing)]).run_id],
                                lambda: runs.run_graph(graph_as_of, progress=lambda _: None)["runs"].values())
        landed = landing / Path(events["days"][new_day]).name
        os.symlink(events["days"][new_day], landed)
        result["daily"] = timed(lambda: [runs.ingest("canonical", [str(landed)]).run_id],
                                lambda: [runs.run_job("daily_scoring", daily_as_of).run_id])
    result["scored_users"] = scored_users(paths.warehouse, daily_as_of)
    files = [events["days"][d] for d in days]
    result["floor"] = floor_seconds(files, daily_as_of, home)
    result["pandas"] = pandas_seconds(files, daily_as_of, pandas_budget) if pandas_budget else \
        {"finished": False, "reason": pandas_skipped or "not run: it did not finish at a smaller size"}
    result["home_mb"] = round(sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 2**20)
    return result


def scored_users(warehouse: Path, as_of: dt.date) -> int:
    from dagster_project.warehouse import connect

    with connect(warehouse, read_only=True) as con:
        return con.execute("select count(*) from predictions.purchase_propensity_7d where as_of_date = ?",
                           [as_of]).fetchone()[0]


# --- report ------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.environ.get("SHOPCAST_BENCH_DIR", "/tmp/shopcast-bench")))
    parser.add_argument("--pandas-budget", type=float, default=PANDAS_BUDGET_SECONDS)
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)   # the child process of one size
    parser.add_argument("--pandas-skipped", help=argparse.SUPPRESS)     # why the child does not run the peer
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.one_size:
        budget = args.pandas_budget if args.pandas_budget > 0 else None
        result = run_size(args.one_size, args.workdir, budget, args.pandas_skipped)
        (args.workdir / f"result_{args.one_size}.json").write_text(json.dumps(result, indent=1))
        return
    from benchmarks.scale_report import write_report

    results = load_results()
    pandas_budget = args.pandas_budget
    for n in sorted(args.sizes):
        print(f"scale benchmark: {n:,} events", flush=True)
        skipped = pandas_fits(results, n)
        subprocess.run([sys.executable, __file__, "--one-size", str(n), "--workdir", str(args.workdir),
                        "--pandas-budget", str(0 if skipped else pandas_budget),
                        *(["--pandas-skipped", skipped] if skipped else [])], check=True)
        result = json.loads((args.workdir / f"result_{n}.json").read_text())
        results[str(n)] = result | {"measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                    "commit": _commit()}
        if not result["pandas"].get("finished"):
            pandas_budget = 0     # a peer that did not finish at this size will not at a larger one
        save_results(results)
        print(write_report(results).read_text(), flush=True)


def load_results() -> dict:
    path = RESULTS / "scale.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=1) + "\n")


def _commit() -> str:
    """The commit measured (SHOPCAST_BENCH_COMMIT names it when the tree is a copy without git)."""
    if os.environ.get("SHOPCAST_BENCH_COMMIT"):
        return os.environ["SHOPCAST_BENCH_COMMIT"]
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
