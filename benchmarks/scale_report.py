"""benchmarks/results/scale.md and scale.png from the figures in scale.json (written by benchmarks/scale.py)."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NOTES = Path(__file__).resolve().parent / "scale_notes.md"
STAGE_ORDER = ["ingest", "features", "checks", "BG/NBD", "train + register", "gate", "score", "audiences",
               "monitoring", "publish", "other", "run overhead"]
TARGET_GRAPH_SECONDS, TARGET_PEAK_GB, TARGET_FLOOR_RATIO, TARGET_USERS_PER_MINUTE = 900, 16, 2.0, 1_000_000


def _stages(results: dict, part: str) -> list[str]:
    seen = {stage for r in results.values() for stage in r[part]["stages"]}
    return [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))


def _feature_seconds(result: dict, part: str) -> float:
    return result[part]["stages"].get("features", {}).get("seconds", 0.0)


def _scoring_rate(result: dict) -> float:
    seconds = result["daily"]["stages"].get("score", {}).get("seconds", 0.0)
    return result["scored_users"] / seconds * 60 if seconds else 0.0


def _fmt_seconds(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def write_report(results: dict) -> Path:
    sizes = sorted(results, key=int)
    rows = [results[s] for s in sizes]
    lines = [
        "# Scale benchmark: the whole graph at growing sizes",
        "",
        (f"Machine: {os.cpu_count()} cores. Regenerate with `make bench-scale` (benchmarks/scale.py; sizes with "
        "`--sizes`). Generated events over 120 days, one Parquet file per day; the graph runs on the first 119 days, "
        "the daily run ingests the last day and scores the next as-of date. Stage times are Dagster's step times; "
        "peak memory is the RSS of the process tree (Python, dbt, DuckDB). Generation is not part of the graph."),
        "",
        "## Summary",
        "",
        ("| events | users | Parquet MB | whole graph s | events/s | µs per event | peak RSS GB | daily run s "
        "| daily peak GB | SHOPCAST_HOME MB | measured |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        graph = r["graph"]
        lines.append(
            f"| {r['events']:,} | {r['users']:,} | {r['parquet_mb']:,} | {_fmt_seconds(graph['seconds'])} "
            f"| {r['events'] / graph['seconds']:,.0f} | {graph['seconds'] / r['events'] * 1e6:.1f} "
            f"| {graph['peak_rss_mb'] / 1024:.1f} | {_fmt_seconds(r['daily']['seconds'])} "
            f"| {r['daily']['peak_rss_mb'] / 1024:.1f} | {r['home_mb']:,} | {r.get('measured_at', '')} "
            f"({r.get('commit', '')}) |")
    for part, title in (("graph", "Whole graph, per stage"), ("daily", "Daily incremental run, per stage")):
        stages = _stages(results, part)
        lines += ["", f"## {title}: seconds (peak RSS MB)", "",
                  "| stage | " + " | ".join(f"{r['events']:,} events" for r in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for stage in stages:
            cells = []
            for r in rows:
                figure = r[part]["stages"].get(stage)
                cells.append(f"{_fmt_seconds(figure['seconds'])} ({figure['peak_rss_mb']:,})" if figure else "–")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines.append("| **total** | " + " | ".join(f"**{_fmt_seconds(r[part]['seconds'])}**" for r in rows) + " |")

    lines += ["", "## The feature step against its yardsticks (one as-of date)", "",
              ("The floor is one hand-written DuckDB query computing the feature mart for the daily run's as-of date "
              "from the raw files; the pandas peer computes the same with read / mask / groupby "
              "(benchmarks/feature_floor.py; tests/test_benchmarks.py checks that both equal the mart). The "
              "pipeline's figure is the daily run's feature step: every dbt model of the day (staging, daily "
              "activity, first-seen, the feature mart, RFM, the labels view and the scoring population), "
              "dbt's start-up and its data tests included."), "",
              ("| events | daily feature step s | of which feat_user_daily s | floor s | ratio to floor "
              "| pandas peer s | pandas peak MB |"),
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        feature = _feature_seconds(r, "daily")
        mart = r["daily"]["dbt_models"].get("marts/feat_user_daily", 0.0)
        pandas = r["pandas"]
        peer = f"{pandas['seconds']:,}" if pandas.get("finished") else f"did not finish ({pandas.get('reason', '')})"
        lines.append(f"| {r['events']:,} | {feature:,.1f} | {mart:,.1f} | {r['floor']['seconds']:,.1f} "
                     f"| {feature / r['floor']['seconds']:.1f}× | {peer} | {pandas.get('peak_rss_mb', '–')} |")

    lines += ["", "## Targets (issue 9), at the largest size measured", ""]
    top = rows[-1]
    checks = [
        ("whole graph ≤ 15 min", f"{top['graph']['seconds'] / 60:.1f} min", top["graph"]["seconds"] <= TARGET_GRAPH_SECONDS),
        ("peak memory ≤ 16 GB", f"{top['graph']['peak_rss_mb'] / 1024:.1f} GB",
         top["graph"]["peak_rss_mb"] / 1024 <= TARGET_PEAK_GB),
        ("daily feature step ≤ 2× the floor", f"{_feature_seconds(top, 'daily') / top['floor']['seconds']:.1f}×",
         _feature_seconds(top, "daily") / top["floor"]["seconds"] <= TARGET_FLOOR_RATIO),
        ("scoring ≥ 1M users per minute", f"{_scoring_rate(top):,.0f} users/min",
         _scoring_rate(top) >= TARGET_USERS_PER_MINUTE),
    ]
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        per_event = [r["graph"]["seconds"] / r["events"] * 1e6 for r in (a, b)]
        checks.append((f"cost per event flat or falling ({a['events']:,} → {b['events']:,})",
                       f"{per_event[0]:.1f} → {per_event[1]:.1f} µs", per_event[1] <= per_event[0] * 1.05))
    lines += [f"At {top['events']:,} events:", "", "| target | measured | met |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks]
    speed_note = ("Sizes measured on different days are compared by their ratios, not their seconds: this machine's "
                  "speed varies between days, and the floor query (the same query on the same kind of files) shows "
                  "by how much.")
    lines += ["", "## The machine on the day of each row", "", speed_note, "",
              "| events | measured | commit | floor s per million events | whole graph in floor runs |",
              "|---:|---|---|---:|---:|"]
    lines += [f"| {r['events']:,} | {r.get('measured_at', '')} | {r.get('commit', '')} "
              f"| {r['floor']['seconds'] / r['events'] * 1e6:.2f} | {r['graph']['seconds'] / r['floor']['seconds']:,.0f} |"
              for r in rows]
    lines += recommendations_section()
    lines += sequences_section()
    lines += ["", "![seconds per stage against events, log-log](scale.png)", ""]
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    path = RESULTS / "scale.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    plot(results, RESULTS / "scale.png")
    return path


def recommendations_section() -> list[str]:
    """The recommendations target at the same sizes (benchmarks/recommendations_scale.py), where it was measured."""
    path = RESULTS / "recommendations_scale.json"
    if not path.exists():
        return []
    import json

    results = json.loads(path.read_text())
    rows = [results[s] for s in sorted(results, key=int)]
    lines = ["", "## Recommendations (issue 23): training and top-10 lists", "",
             ("`make bench-recommendations-scale` (benchmarks/recommendations_scale.py): the same generated events; "
              "the training run is the recommendations' assets for the as-of date after the 119 days (the dbt "
              "models of the interactions, every candidate within the training budget on a hash sample of users, "
              "registration, the gate); scoring is both lists (next_items and new_items, 10 items each) for up to "
              "1M users by the champion loaded from the registry, through the predictions asset's code."), "",
             ("| events | users | interaction rows at the as-of date | fitted on users | training s "
              "(of which candidates) | candidates left out for the budget | champion | users scored | top-10 s, "
              "both lists | users per minute | peak RSS GB | measured |"),
             "|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        training, scoring = r["training"], r["scoring"]
        candidates = training["stages"].get("candidates + register", {}).get("seconds", 0.0)
        left_out = ", ".join(sorted(training.get("left_out") or {})) or "none"
        peak = max(training["peak_rss_mb"], scoring.get("peak_rss_mb", 0)) / 1024
        rate = scoring["users"] / scoring["top10_seconds"] * 60 if scoring.get("top10_seconds") else 0.0
        lines.append(
            f"| {r['events']:,} | {r['users']:,} | {r['interaction_rows'].get(r['as_of_date'], 0):,} "
            f"| {training.get('training_users') or 0:,} | {_fmt_seconds(training['seconds'])} "
            f"({_fmt_seconds(candidates)}) | {left_out} | {training.get('champion_candidate') or '–'} "
            f"| {scoring.get('users', 0):,} | {_fmt_seconds(scoring.get('top10_seconds', 0.0))} | {rate:,.0f} "
            f"| {peak:.1f} | {r.get('measured_at', '')} ({r.get('commit', '')})"
            + (f"; lists scored {scoring['measured_at']} ({scoring['commit']})" if "commit" in scoring else "")
            + ("; retrained on the home of the run before (its folds' interactions already built)"
               if r["training"].get("retrained_on_the_last_runs_home") else "")
            + " |")
    order = ["interactions (dbt)", "folds' interactions (dbt)", "candidates + register", "gate"]
    seen = {stage for r in rows for stage in r["training"]["stages"]}
    stages = [s for s in order if s in seen] + sorted(seen - set(order))
    lines += ["", "Training, per stage: seconds (peak RSS MB)", "",
              "| stage | " + " | ".join(f"{r['events']:,} events" for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for stage in stages:
        cells = [f"{_fmt_seconds(f['seconds'])} ({f['peak_rss_mb']:,})" if (f := r["training"]["stages"].get(stage))
                 else "–" for r in rows]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return lines


def sequences_section() -> list[str]:
    """The sequence family at 10M events (benchmarks/sequences_scale.py), where it was measured."""
    path = RESULTS / "sequences_scale.json"
    if not path.exists():
        return []
    import json

    results = json.loads(path.read_text())
    rows = [results[s] for s in sorted(results, key=int)]
    lines = ["", "## Sequence models (issue 24): the GRU's training and 1M users' sequences scored", "",
             ("`make bench-sequences-scale` (benchmarks/sequences_scale.py): the same generated events; the training "
              "run is the purchase target's assets for the as-of date after the 119 days with the sequence family "
              "alone (the training set, the sample's event sequences built by dbt, the search within the target's "
              "budget, registration, the gate); the daily run scores that date's purchase population with the GRU "
              "(its features, BG/NBD, the date's sequences built by dbt, probabilities and reasons); then the scoring "
              "step's own code (ml.predict.score) scores 1M users' sequences: the date's population with its tokens, "
              "repeated under new user ids, since one date of this shop holds far fewer users."), "",
             ("| events | users | training s (of which candidates; budget) | training rows | champion | daily run s "
              "(users scored) | 1M sequences scored s | users per minute | peak RSS GB | measured |"),
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        training, daily, million = r["training"], r["daily_scoring"], r.get("scoring_1m", {})
        candidates = training["stages"].get("candidates + register", {}).get("seconds", 0.0)
        peak = max(training["peak_rss_mb"], daily["peak_rss_mb"], million.get("peak_rss_mb", 0)) / 1024
        champion = training.get("champion", {})
        lines.append(
            f"| {r['events']:,} | {r['users']:,} | {_fmt_seconds(training['seconds'])} ({_fmt_seconds(candidates)}; "
            f"{r['training_budget_seconds']}) | {training['candidates'].get('training_rows') or 0:,} "
            f"| {'promoted' if champion.get('promoted') else champion.get('decision', '–')} "
            f"| {_fmt_seconds(daily['seconds'])} ({daily.get('users_scored') or 0:,}) "
            f"| {_fmt_seconds(million.get('score_seconds', 0.0))} | {million.get('users_per_minute', 0):,} "
            f"| {peak:.1f} | {r.get('measured_at', '')} ({r.get('commit', '')})"
            + (f"; training {training['measured_at']} ({training['commit']})" if "commit" in training else "")
            + " |")
    for part, title in (("training", "Training"), ("daily_scoring", "Daily scoring")):
        seen = [stage for r in rows for stage in r[part]["stages"]]
        lines += ["", f"{title}, per stage: seconds (peak RSS MB)", "",
                  "| stage | " + " | ".join(f"{r['events']:,} events" for r in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for stage in dict.fromkeys(seen):
            cells = [f"{_fmt_seconds(f['seconds'])} ({f['peak_rss_mb']:,})" if (f := r[part]["stages"].get(stage))
                     else "–" for r in rows]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results, key=int)
    events = [results[s]["events"] for s in sizes]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for stage in _stages(results, "graph"):
        values = [results[s]["graph"]["stages"].get(stage, {}).get("seconds") for s in sizes]
        points = [(e, v) for e, v in zip(events, values) if v]
        if points:
            ax.plot(*zip(*points), marker="o", label=stage)
    ax.plot(events, [results[s]["graph"]["seconds"] for s in sizes], marker="s", color="black", linewidth=2,
            label="whole graph")
    ax.plot(events, [results[s]["floor"]["seconds"] for s in sizes], linestyle="--", marker="^", color="grey",
            label="floor (one as-of date)")
    peer = [(results[s]["events"], results[s]["pandas"]["seconds"]) for s in sizes if results[s]["pandas"].get("finished")]
    if peer:
        ax.plot(*zip(*peer), linestyle=":", marker="v", color="brown", label="pandas peer (one as-of date)")
    ax.axhline(TARGET_GRAPH_SECONDS, color="red", linewidth=0.8, linestyle="-.", label="15-minute target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events")
    ax.set_ylabel("seconds")
    ax.set_title("Seconds per stage against events (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
