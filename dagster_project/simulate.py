"""`shopcast simulate`: weeks of daily operation on generated data, to watch the feedback loop work.

The generator writes the whole period; the events are then split by day and landed one day at a time, as an export
would arrive. Day 0 runs the whole graph (feature history, training, a first champion). Every later day runs the
daily scoring job for its as-of date (ingest the landed day, features, checks, BG/NBD, scores, audiences, realised
performance, drift); Mondays also run the weekly training (candidates, backtest, gate); and after every day the
retraining sensor is evaluated and its requests carried out, as the Dagster daemon would.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from dagster_project import runs
from dagster_project.decisions import SCHEDULE_TAG
from dagster_project.settings import get_paths
from dagster_project.warehouse import connect, table_exists

WEEKLY_TRAINING_WEEKDAY = 0  # Monday, as the shopcast_weekly_training schedule


@dataclass
class SimulationConfig:
    weeks: int = 8
    start: dt.date = dt.date(2026, 9, 7)   # the first simulated as-of date (a Monday)
    history_days: int = 120                # generated days before the start
    events: int = 300_000                  # over history and simulation together
    seed: int = 7
    drift_from: dt.date | None = None
    days_per_run: int = 1                  # >1: the days between Mondays scored as ranges of this many dates, one
                                           # run each (equal to daily runs: tests/test_feedback_loop.py), faster

    @property
    def end(self) -> dt.date:              # the last simulated as-of date
        return self.start + dt.timedelta(days=7 * self.weeks - 1)


@dataclass
class SimulationLog:
    days: list[dict] = field(default_factory=list)


def split_by_day(files: list[Path], out: Path) -> dict[dt.date, Path]:
    """One Parquet file per event day (UTC), so days can land one at a time."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    sources = [str(f) for f in files]
    days = [r[0] for r in con.execute("select distinct cast(event_ts as date) from read_parquet(?) order by 1",
                                      [sources]).fetchall()]
    con.execute("create temp table events as select * from read_parquet(?)", [sources])
    result = {}
    for day in days:
        path = out / f"events_{day:%Y-%m-%d}.parquet"
        con.execute(f"copy (select * from events where cast(event_ts as date) = ? order by event_ts) "
                    f"to '{path}' (format parquet)", [day])
        result[day] = path
    return result


def simulate(cfg: SimulationConfig, progress=print) -> SimulationLog:
    from dagster_project.generate.synthetic import GeneratorConfig, generate

    paths = get_paths()
    if paths.warehouse.exists():
        with connect(paths.warehouse, read_only=True) as con:
            if table_exists(con, "raw", "events") and con.execute("select count(*) from raw.events").fetchone()[0]:
                raise runs.RunFailed(f"{paths.home} already holds events: simulate in an empty home")
    work = paths.home / "simulation"
    generated = generate(GeneratorConfig(n_events=cfg.events, seed=cfg.seed, days=cfg.history_days + 7 * cfg.weeks,
                                         end_date=cfg.end + dt.timedelta(days=1), drift_from=cfg.drift_from),
                         work / "generated")
    by_day = split_by_day(generated.files, work / "days")
    shutil.rmtree(work / "generated")
    landing = paths.landing / "canonical"
    landing.mkdir(parents=True, exist_ok=True)

    def land_before(as_of: dt.date) -> None:
        for day, path in by_day.items():
            if day < as_of and not (landing / path.name).exists():
                shutil.copy2(path, landing / path.name)

    log, cursor = SimulationLog(), None
    land_before(cfg.start)
    runs.ingest("canonical", [str(landing)])
    for first, last in _batches(cfg):
        started, done = time.perf_counter(), []
        land_before(last)
        if first == cfg.start:
            runs.run_graph(first, progress=lambda m: None)
            done.append("shopcast_graph")
        elif first == last:
            runs.run_job("daily_scoring", first)
            done.append("daily_scoring")
        else:
            runs.backfill("daily_scoring", first, last, progress=lambda m: None)
            done.append(f"daily_scoring x{(last - first).days + 1} (one run)")
        if first != cfg.start and first.weekday() == WEEKLY_TRAINING_WEEKDAY:
            # tagged as the schedule's run would be, so that its decisions say "schedule:..." and not "manual"
            runs.run_job("weekly_training", first, tags={SCHEDULE_TAG: "shopcast_weekly_training"})
            done.append("weekly_training")
        requests, cursor = runs.evaluate_retraining_sensor(cursor)
        for request in requests:
            runs.launch(request)
            done.append(f"retrain {request.asset_selection[0].path[-1].removesuffix('_candidates')} "
                        f"({request.tags.get('shopcast/trigger')})")
        seconds = time.perf_counter() - started
        log.days.append({"as_of_date": first, "last_as_of_date": last, "runs": done, "seconds": round(seconds, 1)})
        span = f"{first} ({first:%a})" + (f" .. {last} ({last:%a})" if last != first else "")
        progress(f"{span}: {', '.join(done)} in {seconds:.0f}s")
    return log


def _batches(cfg: SimulationConfig) -> list[tuple[dt.date, dt.date]]:
    """(first, last) as-of dates per step: the start and every Monday alone (they train), the days between in
    ranges of at most days_per_run."""
    days = [cfg.start + dt.timedelta(days=i) for i in range(7 * cfg.weeks)]
    batches: list[list[dt.date]] = []
    for day in days:
        alone = day == cfg.start or day.weekday() == WEEKLY_TRAINING_WEEKDAY
        if alone or not batches or len(batches[-1]) >= cfg.days_per_run or batches[-1][0] == cfg.start \
                or batches[-1][0].weekday() == WEEKLY_TRAINING_WEEKDAY:
            batches.append([day])
        else:
            batches[-1].append(day)
    return [(b[0], b[-1]) for b in batches]
