"""Recommendations at scale (issue 23): the recommendations target's training and its top-10 lists at 1M, 10M and
100M generated events, on this machine.

    make bench-recommendations-scale                            # 1M, 10M, 100M: a section of results/scale.md
    python benchmarks/recommendations_scale.py --sizes 1000000  # one size (the others keep their last figures)
    python benchmarks/recommendations_scale.py --sizes 100000000 --again   # retrain and rescore on the last home

Per size, in its own process and a fresh SHOPCAST_HOME:
1. the scale benchmark's generated events (benchmarks/scale.py's, shared through --workdir: generated once), the
   first 119 days ingested by the loaders;
2. the recommendations' training for the as-of date after them, as one Dagster run of the product's assets: the dbt
   models of the interactions (the run's date), the folds' and snapshots' interactions, every candidate within the
   training budget on a hash sample of users (`recommendation_training_users`), registration and the gate;
3. both lists (next_items and new_items, top 10) for up to 1M users with interactions at the as-of date, by the
   champion loaded from the MLflow registry, through the predictions asset's own code (score_lists, in batches).

Stage figures are Dagster's step times; peak memory is the RSS of the process tree (Python, dbt) sampled every 0.2 s.
Writes results/recommendations_scale.json; benchmarks/scale_report.py renders it in results/scale.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import DEFAULT_SIZES, RssSampler, _commit, fresh_home, land_events, run_steps

RESULTS = Path(__file__).resolve().parent / "results"
SCORED_USERS = 1_000_000
TARGETS = {"top10_seconds_for_1m_users": 300, "peak_rss_gb": 16}


def stage_of(step_key: str) -> str:
    if step_key.startswith("dbt_"):
        return "interactions (dbt)"
    if step_key == "marts__recommendation_cutoff_interactions":
        return "folds' interactions (dbt)"
    if step_key.endswith("_candidates"):
        return "candidates + register"
    if step_key.endswith("_champion"):
        return "gate"
    return "other"


def stages_of(run_id: str, sampler: RssSampler | None = None, stage_of=stage_of) -> dict[str, dict]:
    """The run's step times summed by stage (``stage_of`` a step key), with the peak memory of each when
    ``sampler`` watched it."""
    stages: dict[str, dict] = {}
    for step in run_steps(run_id)[0]:
        stage = stages.setdefault(stage_of(step["step"]), {"seconds": 0.0, "peak_rss_mb": 0})
        stage["seconds"] = round(stage["seconds"] + step["end"] - step["start"], 1)
        if sampler is not None:
            stage["peak_rss_mb"] = max(stage["peak_rss_mb"], sampler.peak_mb(step["start"], step["end"]))
    return stages


def training_selection():
    import dagster as dg

    from dagster_project import runs
    from dagster_project.defs.recommendations import CANDIDATES_KEY, CHAMPION_KEY

    graph = runs.definitions().resolve_asset_graph()
    selection = (dg.AssetSelection.assets(CANDIDATES_KEY).upstream() | dg.AssetSelection.assets(CHAMPION_KEY)) \
        - dg.AssetSelection.groups("ingest")
    return sorted(selection.resolve(graph), key=lambda k: k.to_user_string())


def score(as_of: dt.date, users_at_most: int) -> dict:
    """Both lists for up to ``users_at_most`` users, as the predictions asset makes them (read, then score)."""
    import mlflow.pyfunc

    from dagster_project.defs.recommendations import score_population
    from dagster_project.defs.resources import MlflowStore, WarehouseResource
    from dagster_project.settings import load_settings
    from ml.recommendations import MODEL_NAME
    from ml.registry import CHAMPION, version_by_alias

    settings = load_settings()
    paths = settings.paths
    store = MlflowStore(tracking_uri=paths.mlflow_tracking_uri, artifact_root=str(paths.mlflow_artifacts)).store()
    champion = version_by_alias(store, MODEL_NAME, CHAMPION)
    if champion is None:
        return {"scored": False, "reason": "no champion: the recommenders were not eligible"}
    store.activate()
    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}").unwrap_python_model().recommender
    loaded = time.perf_counter()
    warehouse = WarehouseResource(path=str(paths.warehouse))
    users = warehouse.query_df("select user_id from (select distinct user_id from marts.fct_user_item_interactions "
                               "where as_of_date = ?) order by hash(user_id), user_id limit ?",
                               [as_of, users_at_most]).user_id
    rows, fallback_rows = {False: 0, True: 0}, 0
    for lists in score_population(warehouse, model, champion.version, users, as_of, 10):
        for new_only, frame in lists.items():
            rows[new_only] += len(frame)
        fallback_rows += int((lists[False].model_version == "fallback").sum())
    scored = time.perf_counter()
    return {"scored": True, "champion": champion.tags.get("candidate"), "champion_version": champion.version,
            "users": len(users), "load_model_seconds": round(loaded - started, 1),
            "top10_seconds": round(scored - loaded, 1),
            "rows": {"next_items": rows[False], "new_items": rows[True]},
            "fallback_share": round(fallback_rows / max(rows[False], 1), 4)}


def run_size(n_events: int, workdir: Path, again: bool = False) -> dict:
    """One size from a fresh home (generated events ingested), or ``again`` on the home a last run left: its
    ingest figures kept, training and scoring measured anew (after a change to either)."""
    events = land_events(n_events, workdir)
    home = workdir / f"recommendations_home_{n_events}"
    if again:
        os.environ["SHOPCAST_HOME"] = str(home)
        os.environ.setdefault("SHOPCAST_LOG_LEVEL", "WARNING")
        previous = json.loads((workdir / f"recommendations_result_{n_events}.json").read_text())
        paths, held_back = None, previous["as_of_date"]
    else:
        paths, landing, _, held_back = fresh_home(events, home)
    from dagster_project import runs
    from dagster_project.settings import load_settings

    as_of = dt.date.fromisoformat(held_back)  # the interactions use the events strictly before it
    settings = load_settings()
    paths = settings.paths
    result = {"events": events["events"], "users": events["users"], "as_of_date": as_of.isoformat(),
              "training_users": settings.recommendation_training_users,
              "training_budget_seconds": settings.training_budget_seconds}
    with RssSampler() as sampler:
        if again:
            result["ingest"] = previous["ingest"]
        else:
            started = time.time()
            runs.ingest("canonical", [str(landing)])
            result["ingest"] = {"seconds": round(time.time() - started, 1),
                                "peak_rss_mb": sampler.peak_mb(started, time.time())}
        started = time.time()
        run = runs._execute("weekly_training", partition_key=as_of.isoformat(), asset_selection=training_selection())
        wall = (started, time.time())
        stages = stages_of(run.run_id, sampler)
        result["training"] = {"seconds": round(wall[1] - wall[0], 1), "peak_rss_mb": sampler.peak_mb(*wall),
                              "stages": stages, **training_metadata(run),
                              **({"retrained_on_the_last_runs_home": True} if again else {})}
        started = time.time()
        result["scoring"] = score(as_of, SCORED_USERS)
        result["scoring"]["peak_rss_mb"] = sampler.peak_mb(started, time.time())
    result["interaction_rows"] = interaction_rows(paths.warehouse)
    result["home_mb"] = round(sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 2**20)
    return result


def rescore(sizes: list[int], workdir: Path, training_commit: str | None = None) -> None:
    """The scoring figures again on the homes the last full run left (after a change to scoring alone)."""
    from benchmarks.scale import load_results as load_scale
    from benchmarks.scale_report import write_report

    results = load_results()
    for n in sorted(sizes):
        os.environ["SHOPCAST_HOME"] = str(workdir / f"recommendations_home_{n}")
        if str(n) not in results:  # the full run stopped after training: its figures from the home's Dagster log
            results[str(n)] = training_from_log(n, workdir, training_commit)
        as_of = dt.date.fromisoformat(results[str(n)]["as_of_date"])
        with RssSampler() as sampler:
            started = time.time()
            scoring = score(as_of, SCORED_USERS)
            scoring["peak_rss_mb"] = sampler.peak_mb(started, time.time())
        results[str(n)]["scoring"] = scoring | {"measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                                "commit": _commit()}
        print(json.dumps(scoring, indent=1), flush=True)
    (RESULTS / "recommendations_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(load_scale())


def training_from_log(n_events: int, workdir: Path, training_commit: str | None) -> dict:
    """A size's training figures from its home's last weekly_training run (peak memory was not sampled)."""
    import dagster as dg

    from dagster_project import runs
    from dagster_project.defs.recommendations import CANDIDATES_KEY, CHAMPION_KEY

    events = land_events(n_events, workdir)
    with runs.instance() as instance:
        run = instance.get_runs(filters=dg.RunsFilter(job_name="weekly_training"), limit=1)[0]
        stats = instance.get_run_stats(run.run_id)
        found = {}
        for key in (CANDIDATES_KEY, CHAMPION_KEY):
            record = instance.get_latest_materialization_event(key)
            meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
            found |= {k: meta.get(k) for k in ("best", "users", "training_users", "left_out")} if key == CANDIDATES_KEY \
                else {"champion_candidate": meta.get("champion_candidate")}
    stages = stages_of(run.run_id)
    as_of = dt.date.fromisoformat(run.tags["dagster/partition"])
    return {"events": events["events"], "users": events["users"], "as_of_date": as_of.isoformat(),
            "training": {"seconds": round(stats.end_time - stats.start_time, 1), "peak_rss_mb": 0,
                         "peak_not_sampled": True, "stages": stages, **found},
            "interaction_rows": interaction_rows(Path(os.environ["SHOPCAST_HOME"]) / "warehouse.duckdb"),
            "measured_at": dt.datetime.fromtimestamp(stats.end_time, dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": training_commit or "unrecorded"}


def training_metadata(run) -> dict:
    """What the candidates asset recorded: users, the sample, the candidates measured and left out, the best."""
    from dagster_project.defs.recommendations import CANDIDATES_KEY, CHAMPION_KEY

    found = {}
    for event in run.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        if materialization.asset_key == CANDIDATES_KEY:
            found |= {k: meta.get(k) for k in ("eligible", "reason", "best", "best_naive", "users", "training_users",
                                               "left_out", "test_users_per_fold", "best_recall_at_10")}
            found["candidates_table"] = meta.get("candidates")
        elif materialization.asset_key == CHAMPION_KEY:
            found["champion_candidate"] = meta.get("champion_candidate")
    return found


def interaction_rows(warehouse: Path) -> dict[str, int]:
    from dagster_project.warehouse import connect

    with connect(warehouse, read_only=True) as con:
        rows = con.execute("select as_of_date, count(*) from marts.fct_user_item_interactions group by 1 order by 1"
                           ).fetchall()
    return {str(day): int(n) for day, n in rows}


def load_results() -> dict:
    path = RESULTS / "recommendations_scale.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.environ.get("SHOPCAST_BENCH_DIR", "/tmp/shopcast-bench")))
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)   # the child process of one size
    parser.add_argument("--score-only", action="store_true",
                        help="score again on each size's existing home (its champion), keeping the training figures")
    parser.add_argument("--training-commit", help=argparse.SUPPRESS)  # a stopped run's commit, for its figures
    parser.add_argument("--again", action="store_true",
                        help="train and score again on each size's existing home (its ingest kept)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.score_only:
        rescore(args.sizes, args.workdir, args.training_commit)
        return
    if args.one_size:
        result = run_size(args.one_size, args.workdir, args.again)
        (args.workdir / f"recommendations_result_{args.one_size}.json").write_text(json.dumps(result, indent=1))
        return
    from benchmarks.scale import load_results as load_scale
    from benchmarks.scale_report import write_report

    results = load_results()
    for n in sorted(args.sizes):
        print(f"recommendations at scale: {n:,} events", flush=True)
        subprocess.run([sys.executable, __file__, "--one-size", str(n), "--workdir", str(args.workdir),
                        *(["--again"] if args.again else [])], check=True)
        result = json.loads((args.workdir / f"recommendations_result_{n}.json").read_text())
        results[str(n)] = result | {"measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                    "commit": _commit()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "recommendations_scale.json").write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(result, indent=1), flush=True)
        write_report(load_scale())


if __name__ == "__main__":
    main()
