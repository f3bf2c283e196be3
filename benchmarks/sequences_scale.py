"""Sequence models at scale (issue 24): the GRU's training within the purchase target's budget and its batch
scoring of 1M users' sequences, at 10M generated events, on this machine.

    make bench-sequences-scale                                   # 10M events: a section of results/scale.md
    python benchmarks/sequences_scale.py --events 1000000        # a smaller shop (fewer users scored)
    python benchmarks/sequences_scale.py --score-only             # score again on the last run's home

In its own process and a fresh SHOPCAST_HOME:
1. the scale benchmark's generated events (benchmarks/scale.py's, shared through --workdir: generated once), the
   first 119 days ingested by the loaders;
2. the purchase target's training for the as-of date after them, as one Dagster run of the product's assets with
   the sequence family alone (model_families=gru): the training set's features, the sample's event sequences
   (dbt), the search within the target's budget, registration and the gate;
3. the daily scoring run for that date, as one Dagster run of the daily job's assets: the date's features,
   BG/NBD, the sequence mart of the date (dbt), the predictions by the GRU with their reasons;
4. 1M users' sequences through the scoring step's own code (ml.predict.score: probabilities, deciles, reasons by
   occlusion and counterfactuals): the date's population with its tokens, repeated under new user ids up to 1M
   rows, since one date of a 10M-event shop holds some tens of thousands of users.

Stage figures are Dagster's step times; peak memory is the RSS of the process tree (Python, dbt) sampled every
0.2 s. Writes results/sequences_scale.json; benchmarks/scale_report.py renders it in results/scale.md.
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

from benchmarks.recommendations_scale import stages_of as run_stages
from benchmarks.scale import RssSampler, _commit, fresh_home, land_events

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS = 10_000_000
SCORED_USERS = 1_000_000
TARGET = "purchase_propensity_7d"
TARGETS = {"scoring_seconds_for_1m_users": 300, "peak_rss_gb": 16}
# the sequence family alone: its training is what is measured, and its model is the one scored
SETTINGS = {"SHOPCAST_MODEL_FAMILIES": "gru", "SHOPCAST_FEATURE_SETS": "sequence"}


def stage_of(step_key: str) -> str:
    if step_key.startswith(("dbt_", "marts__", "training__training_cut")):
        return "features (dbt)"
    if "training_sequences" in step_key:
        return "training sequences (dbt)"
    if step_key.endswith("_candidates"):
        return "candidates + register"
    if step_key.endswith("_champion"):
        return "gate"
    if step_key.startswith("predictions__clv"):  # the run's date and the training cutoffs
        return "BG/NBD"
    if step_key.startswith("predictions__"):
        return "score (the date's sequences by dbt, tokens, reasons)"
    return "other"


def selections():
    """(training, scoring): the purchase target's assets of the weekly training and of the daily scoring job."""
    import dagster as dg

    from dagster_project import runs
    from dagster_project.asset_keys import champion_key, predictions_key

    defs = runs.definitions()
    graph = defs.resolve_asset_graph()

    def keys(job_name: str, selection) -> list:
        in_job = set(defs.resolve_job_def(job_name).asset_layer.executable_asset_keys)
        return sorted(set(selection.resolve(graph)) & in_job, key=lambda k: k.to_user_string())

    ingest = dg.AssetSelection.groups("ingest")
    training = keys("weekly_training", dg.AssetSelection.assets(champion_key(TARGET)).upstream() - ingest)
    scoring = keys("daily_scoring", dg.AssetSelection.assets(predictions_key(TARGET)).upstream() - ingest)
    return training, scoring


def step_metadata(run, key) -> dict:
    for event in run.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def score_a_million(as_of: dt.date, users: int) -> dict:
    """The scoring step's own work (ml.predict.score: the GRU's scores, deciles and reasons) on ``users``
    sequences: the date's purchase population with its tokens, read as the predictions asset reads them, repeated
    under new user ids until it holds ``users`` rows (one date of a shop this size holds far fewer)."""
    import pandas as pd

    from dagster_project.defs.resources import MlflowStore, WarehouseResource
    from dagster_project.defs.scoring import POPULATION_SQL
    from dagster_project.defs.sequences import SEQUENCE_COLUMNS, SEQUENCE_MART, with_tokens
    from dagster_project.settings import load_settings
    from ml.predict import score
    from ml.registry import CHAMPION, load_by_alias
    from ml.sequences import sequence_length
    from ml.targets import TARGETS

    paths = load_settings().paths
    store = MlflowStore(tracking_uri=paths.mlflow_tracking_uri, artifact_root=str(paths.mlflow_artifacts)).store()
    warehouse = WarehouseResource(path=str(paths.warehouse))
    started = time.perf_counter()
    model, entry = load_by_alias(store, TARGET, CHAMPION)
    length = sequence_length(model.feature_names_in_)
    population = warehouse.query_df(POPULATION_SQL.format(population=TARGETS[TARGET].population_sql), [as_of, as_of])
    events = warehouse.query_df(f"select {', '.join(SEQUENCE_COLUMNS)} from {SEQUENCE_MART} "
                                "where as_of_date = ? and position <= ?", [as_of, length])
    date_rows = with_tokens(population, events, length)
    read = time.perf_counter()
    copies = -(-users // len(date_rows))
    frame = pd.concat([date_rows.assign(user_id=date_rows.user_id.astype(str) + f"~{copy}")
                       for copy in range(copies)], ignore_index=True).head(users)
    del date_rows
    began = time.perf_counter()
    scored = score(frame, model, TARGET, entry.version)
    ended = time.perf_counter()
    return {"users": len(scored), "date_population": len(population), "copies": copies,
            "sequence_length": length, "model_version": entry.version,
            "read_seconds": round(read - started, 1), "score_seconds": round(ended - began, 1),
            "users_per_minute": round(len(scored) / (ended - began) * 60),
            "reasons_filled": round(float(scored["reason_1"].notna().mean()), 3),
            "mean_probability": round(float(scored["probability"].mean()), 4)}


def run_home(n_events: int, workdir: Path, score_only: bool) -> dict:
    events = land_events(n_events, workdir)
    home = workdir / f"sequences_home_{n_events}"
    os.environ.update(SETTINGS)
    if score_only:
        os.environ["SHOPCAST_HOME"] = str(home)
        os.environ.setdefault("SHOPCAST_LOG_LEVEL", "WARNING")
        previous = json.loads((workdir / f"sequences_result_{n_events}.json").read_text())
        held_back = previous["as_of_date"]
    else:
        _, landing, _, held_back = fresh_home(events, home)
    from dagster_project import runs
    from dagster_project.asset_keys import candidates_key, champion_key, predictions_key
    from dagster_project.settings import load_settings

    as_of = dt.date.fromisoformat(held_back)
    settings = load_settings()
    result = {"events": events["events"], "users": events["users"], "as_of_date": as_of.isoformat(),
              "training_budget_seconds": settings.training_budget_seconds, **SETTINGS}
    training_keys, scoring_keys = selections()
    with RssSampler() as sampler:
        if score_only:  # the date's sequences built again, as a daily run builds them
            result["ingest"], result["training"] = previous["ingest"], previous["training"]
            from dagster_project.defs.sequences import SEQUENCE_MART
            from dagster_project.warehouse import connect

            with connect(settings.paths.warehouse) as con:
                con.execute(f"delete from {SEQUENCE_MART} where as_of_date = ?", [as_of])
        else:
            started = time.time()
            runs.ingest("canonical", [str(landing)])
            result["ingest"] = {"seconds": round(time.time() - started, 1),
                                "peak_rss_mb": sampler.peak_mb(started, time.time())}
            started = time.time()
            run = runs._execute("weekly_training", partition_key=as_of.isoformat(), asset_selection=training_keys)
            wall = (started, time.time())
            candidates = step_metadata(run, candidates_key(TARGET))
            result["training"] = {
                "seconds": round(wall[1] - wall[0], 1), "peak_rss_mb": sampler.peak_mb(*wall),
                "stages": run_stages(run.run_id, sampler, stage_of),
                "candidates": {k: candidates.get(k) for k in ("candidates", "best_family", "training_rows",
                                                              "registered_version", "calibration") if k in candidates},
                "champion": {k: v for k, v in step_metadata(run, champion_key(TARGET)).items()
                             if k in ("decision", "promoted", "reason", "candidate_score", "quality_problems")}}
        started = time.time()
        run = runs._execute("daily_scoring", partition_key=as_of.isoformat(), asset_selection=scoring_keys)
        wall = (started, time.time())
        predictions = step_metadata(run, predictions_key(TARGET))
        result["daily_scoring"] = {"seconds": round(wall[1] - wall[0], 1), "peak_rss_mb": sampler.peak_mb(*wall),
                                   "stages": run_stages(run.run_id, sampler, stage_of),
                                   "users_scored": predictions.get("dagster/row_count"),
                                   "published": predictions.get("published"), "reason": predictions.get("reason"),
                                   "model_version": predictions.get("model_version")}
        if predictions.get("published"):
            started = time.time()
            result["scoring_1m"] = score_a_million(as_of, SCORED_USERS)
            result["scoring_1m"]["peak_rss_mb"] = sampler.peak_mb(started, time.time())
    result["home_mb"] = round(sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 2**20)
    return result


def load_results() -> dict:
    path = RESULTS / "sequences_scale.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.environ.get("SHOPCAST_BENCH_DIR", "/tmp/shopcast-bench")))
    parser.add_argument("--score-only", action="store_true", help="score again on the last run's home")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / f"sequences_result_{args.events}.json"
    if args.child:
        out.write_text(json.dumps(run_home(args.events, args.workdir, args.score_only), indent=1))
        return
    # its own process, so that the memory figures are the run's own
    subprocess.run([sys.executable, __file__, "--child", "--events", str(args.events), "--workdir", str(args.workdir),
                    *(["--score-only"] if args.score_only else [])], check=True)
    result = json.loads(out.read_text()) | {"measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                            "commit": _commit()}
    results = load_results()
    if args.score_only and str(args.events) in results:  # the training figures are the earlier run's
        earlier = results[str(args.events)]
        result["training"] |= {"measured_at": earlier["training"].get("measured_at", earlier["measured_at"]),
                               "commit": earlier["training"].get("commit", earlier["commit"])}
    results[str(args.events)] = result
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sequences_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)
    from benchmarks.scale import load_results as load_scale
    from benchmarks.scale_report import write_report

    write_report(load_scale())


if __name__ == "__main__":
    main()
