"""Cold-start recommendations (issue 25): items nobody has interacted with, offered by their text, measured on items
held out from training.

At each cutoff T a stable share of the items with interactions before T (a hash of the item id) is held out: their
interactions are removed from what every method is fitted on, as if they had just entered the catalogue with their
name or description (raw.items) and, where the shop has reviews, the reviews written before T. Test users: users
with other interactions before T who bought a held-out item in [T, T + horizon); truth: the held-out items they
bought. Every method ranks the held-out items alone (the cold-start list) and is scored by Recall@10 = hits /
min(10, |truth|) and HitRate@10, means over the test users, then over the cutoffs.

Methods: `content` (ml/content.py: TF-IDF of the item text; `content_lsa` reduced to 64 dimensions), and what a
shop has without text: `category_popularity` (buyers of the item's category before T; the category is catalogue
metadata), `user_categories` (the user's own weight on the item's category, then its popularity) and `random`
(the expected recall of a random order, computed exactly). The served popularity list cannot name a held-out item
at all (its recall on this truth is 0 by construction).

    python benchmarks/cold_start.py --home /path/to/online-retail-home --label online-retail \\
        --cutoffs 2011-09-01,2011-10-01,2011-11-01 --horizon 28
    python benchmarks/cold_start.py --report   # benchmarks/results/cold_start.md from every results file

The home must hold the events (`shopcast ingest` or `shopcast sample`) loaded with item descriptions, or reviews.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measure as measured
from benchmarks.recommendations import build_interactions, protocol_arguments

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "cold_start"
K = 10
HELD_OUT_SHARE = 0.2


def held_out(items: pd.Series, share: float = HELD_OUT_SHARE) -> pd.Series:
    """A stable share of the items (a hash of the id, the same at every cutoff and run)."""
    hashed = pd.util.hash_pandas_object(items.astype(str), index=False).to_numpy()
    return pd.Series((hashed % 1000) < share * 1000, index=items.index)


def recall_and_hits(ranked: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """Mean Recall@K and HitRate@K over the truth's users (a user without a list scores 0)."""
    hits = ranked[ranked["rank"] <= K].merge(truth, on=["user_id", "item_id"]).groupby("user_id").size()
    sizes = truth.groupby("user_id").size()
    found = hits.reindex(sizes.index, fill_value=0)
    return float((found / np.minimum(K, sizes)).mean()), float((found > 0).mean())


def ranked_by(scores: pd.DataFrame) -> pd.DataFrame:
    """user_id, item_id, score -> the same with rank (1 = best; ties by item id: reproducible)."""
    ordered = scores.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    ordered["rank"] = ordered.groupby("user_id").cumcount() + 1
    return ordered[ordered["rank"] <= K]


def category_scores(users: pd.Index, candidates: pd.DataFrame, training: pd.DataFrame, personal: bool) -> pd.DataFrame:
    """The candidates (item_id, category_id) scored by their category's buyers in ``training``; ``personal``: first
    by the user's own weight on the category."""
    buyers = training[training.purchases > 0].groupby("category_id").user_id.nunique()
    popularity = candidates.category_id.map(buyers).fillna(0.0).to_numpy()
    grid = pd.DataFrame({"user_id": np.repeat(users.to_numpy(), len(candidates)),
                         "item_id": np.tile(candidates.item_id.to_numpy(), len(users)),
                         "category_id": np.tile(candidates.category_id.to_numpy(), len(users)),
                         "score": np.tile(popularity / (popularity.max() + 1.0), len(users))})
    if personal:
        own = training[training.user_id.isin(users)].groupby(["user_id", "category_id"]).weight.sum().rename("own")
        grid = grid.join(own, on=["user_id", "category_id"])
        grid["score"] += grid["own"].fillna(0.0)
    return ranked_by(grid[["user_id", "item_id", "score"]])


def measure_cutoff(cutoff: dt.date, horizon: int, interactions: pd.DataFrame, item_days: pd.DataFrame,
                   descriptions: pd.DataFrame, reviews: pd.DataFrame | None) -> dict:
    from ml.content import ContentBased, item_texts
    from ml.recommend import item_categories
    from ml.recommendations import truth_after

    items = pd.Series(interactions.item_id.unique())
    out = set(items[held_out(items)].astype(str))
    training = interactions[~interactions.item_id.astype(str).isin(out)]
    truth = truth_after(item_days, cutoff, horizon, training)
    truth = truth[truth.item_id.astype(str).isin(out)]
    known = descriptions[pd.to_datetime(descriptions.described_at) < pd.Timestamp(cutoff)]
    known = known.sort_values("described_at").drop_duplicates("item_id", keep="last").set_index("item_id")
    categories = item_categories(interactions)  # catalogue metadata: held-out items keep theirs
    texts = item_texts(known.description if len(known) else None,
                       categories if len(categories) else None, reviews, before=cutoff)
    candidates = pd.Index(sorted(out & set(texts.index)))
    truth = truth[truth.item_id.astype(str).isin(candidates)]
    users = pd.Index(truth.user_id.unique())
    row = {"cutoff": cutoff.isoformat(), "items": len(items), "held_out_items": len(out),
           "held_out_with_text": len(candidates), "test_users": len(users), "truth_pairs": len(truth)}
    if users.empty:
        return row
    # a random order of the n held-out items: expected hits K/n of each truth item; hit rate 1 - P(none drawn)
    sizes, n = truth.groupby("user_id").size(), len(candidates)
    row["random"] = {"recall_at_10": float((min(K, n) / n * sizes / np.minimum(K, sizes)).mean()),
                     "hit_rate_at_10": float(np.mean([1 - _none_drawn(n, int(s), min(K, n)) for s in sizes]))}
    methods = {"content": ContentBased(), "content_lsa": ContentBased(dimensions=64)}
    for name, model in methods.items():
        with measured(name) as stage:
            model.fit(training, texts)
            ranked = model.recommend(users, k=K, candidates=candidates)
        recall, hit = recall_and_hits(ranked, truth)
        row[name] = {"recall_at_10": recall, "hit_rate_at_10": hit, "seconds": round(stage.seconds, 2)}
    if len(categories):
        frame = pd.DataFrame({"item_id": candidates, "category_id": categories.reindex(candidates).to_numpy()})
        for name, personal in (("category_popularity", False), ("user_categories", True)):
            recall, hit = recall_and_hits(category_scores(users, frame, training.assign(
                category_id=training.item_id.map(categories)), personal), truth)
            row[name] = {"recall_at_10": recall, "hit_rate_at_10": hit}
    return row


def _none_drawn(n: int, good: int, draws: int) -> float:
    """P(no one of ``good`` items among ``draws`` drawn without replacement from ``n``)."""
    p = 1.0
    for i in range(draws):
        p *= max(0.0, (n - good - i) / (n - i))
    return p


def run(home: Path, label: str, cutoffs: list[dt.date], horizon: int) -> dict:
    import duckdb

    from dagster_project.warehouse import ensure_raw_schema
    from ml.recommend import INTERACTION_COLUMNS

    ensure_raw_schema(home / "warehouse.duckdb")  # a home made before raw.items had descriptions gains the columns
    build_seconds = build_interactions(home, cutoffs, max(cutoffs) + dt.timedelta(days=horizon))
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        interactions = {d: con.execute(f"select {', '.join(INTERACTION_COLUMNS)} from marts.fct_user_item_interactions "
                                       "where as_of_date = ?", [d]).df() for d in cutoffs}
        item_days = con.execute("select user_id, item_id, activity_date, n_purchase from intermediate.int_user_item_daily "
                                "where n_purchase > 0").df()
        descriptions = con.execute("select item_id, description, described_at from raw.items "
                                   "where description is not null").df()
        reviews = con.execute("select item_id, review_ts, title, text from raw.reviews").df() \
            if con.execute("select count(*) from raw.reviews").fetchone()[0] else None
    if descriptions.empty and reviews is None:
        raise SystemExit(f"{home}: no item text (raw.items.description or raw.reviews): reload the events with "
                         "this version's loaders")
    rows = []
    for cutoff in cutoffs:
        row = measure_cutoff(cutoff, horizon, interactions[cutoff], item_days, descriptions, reviews)
        print(json.dumps(row), flush=True)
        rows.append(row)
    methods = [m for m in ("content", "content_lsa", "user_categories", "category_popularity", "random")
               if any(m in r for r in rows)]
    summary = [{"method": m, **{metric: float(np.nanmean([r[m][metric] for r in rows if m in r]))
                                for metric in ("recall_at_10", "hit_rate_at_10")}} for m in methods]
    result = {"label": label, "home": str(home), "cutoffs": [c.isoformat() for c in cutoffs], "horizon_days": horizon,
              "held_out_share": HELD_OUT_SHARE, "build_seconds": round(build_seconds, 1),
              "text": ", ".join(part for part, present in (
                  ("names or descriptions", not descriptions.empty),
                  ("categories", bool(interactions[cutoffs[0]].category_id.notna().any())),
                  ("reviews before the cutoff", reviews is not None)) if present),
              "per_cutoff": rows, "summary": summary}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{label}.json").write_text(json.dumps(result, indent=2))
    print(pd.DataFrame(summary).to_string(index=False))
    return result


def report() -> str:
    lines = ["# Cold-start recommendations: items held out from training, offered by their text", "",
             ("Generated by `benchmarks/cold_start.py` from `results/cold_start/*.json` (protocol in its docstring). "
              f"{HELD_OUT_SHARE:.0%} of the items held out at each cutoff; every method ranks the held-out items "
              "alone; means over the cutoffs. The served popularity list scores 0 on this truth by construction: "
              "it cannot name an item without interactions. Where the text is reviews (Amazon: no item has a "
              "description), a held-out item keeps the reviews written before the cutoff as its text, as if they came "
              "with it from another marketplace, while its interactions (the same reviews as purchases) are "
              "removed."), ""]
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        per = r["per_cutoff"]
        lines += [f"## {r['label']}", "",
                  (f"Cutoffs {', '.join(r['cutoffs'])}, horizon {r['horizon_days']} days, item text: {r['text']}. "
                   "Per cutoff: held-out items with text "
                   f"{', '.join(str(p['held_out_with_text']) for p in per)}; test users "
                   f"{', '.join(str(p['test_users']) for p in per)}."), "",
                  "| method | Recall@10 | HitRate@10 |", "|---|---|---|"]
        lines += [f"| {s['method']} | {s['recall_at_10']:.3f} | {s['hit_rate_at_10']:.3f} |" for s in r["summary"]]
        lines.append("")
    text = "\n".join(lines)
    (RESULTS / "cold_start.md").write_text(text)
    return text


def main() -> None:
    parsed = protocol_arguments(__doc__, report_of=report)
    if parsed is not None:
        args, cutoffs = parsed
        run(args.home.resolve(), args.label, cutoffs, args.horizon)


if __name__ == "__main__":
    main()
