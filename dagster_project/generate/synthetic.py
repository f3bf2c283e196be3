"""Synthetic shop behaviour in the canonical raw schema, vectorised with NumPy and written as Parquet.

The world it simulates, so that the signal is learnable but not trivial:
- users arrive over the period (40 % already exist on day 0) and churn after an exponential lifetime;
- each user has a latent session rate, a cart propensity and a purchase propensity (heterogeneous intent);
- sessions follow weekly seasonality and an evening peak; inside a session, views lead to carts, some carts are
  removed, and some carts convert to a purchase of one to three units;
- users prefer one category; items have category-specific log-normal prices.
Nothing here is a label: the pipeline has to discover that recent, frequent carters who have not churned buy.

Deterministic for a seed: users are generated in fixed-size chunks, each from its own seeded stream.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVENTS_PER_SESSION = 4.55  # mean of the session model below; used to size the population
EVENTS_PER_USER = 60
USERS_PER_CHUNK = 8_000  # about 480k events a file: small enough for every core to get a share
N_CATEGORIES = 40
DOW_WEIGHTS = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25])  # Monday .. Sunday
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 6, 5, 5, 6, 7, 9, 11, 12, 11, 8, 4], dtype=float)


@dataclass(frozen=True)
class GeneratorConfig:
    n_events: int = 1_000_000
    seed: int = 42
    end_date: date = date(2026, 11, 1)  # exclusive: the last day of events is end_date - 1
    days: int = 120
    # from this day on, behaviour shifts (three times the views per session, half the carts, more favourites),
    # as after a redesign or a new traffic source: the drift the monitoring must notice
    drift_from: date | None = None
    # a behaviour whose signal lies in the order of events, not in their counts (issue 24): see _order_signal
    order_signal: bool = False
    # reviews of some purchases, whose words say more than their rating about who leaves (issue 25): see _reviews
    reviews: bool = False

    @property
    def start_date(self) -> date:
        return self.end_date - timedelta(days=self.days)

    @property
    def n_users(self) -> int:
        return max(50, self.n_events // EVENTS_PER_USER)

    @property
    def tag(self) -> str:
        """Prefix of event ids: different data sets never share an id, the same config always does."""
        drift = f"drift{self.drift_from:%Y%m%d}" if self.drift_from else ""
        order = "order" if self.order_signal else ""
        reviews = "reviews" if self.reviews else ""
        return f"syn{self.seed}n{self.n_events}d{self.end_date:%Y%m%d}x{self.days}{drift}{order}{reviews}"

    @property
    def n_items(self) -> int:
        return max(200, min(200_000, self.n_events // 100))


@dataclass(frozen=True)
class GeneratorResult:
    files: list[Path]
    n_events: int
    n_users: int
    start_date: date
    end_date: date
    review_files: tuple[Path, ...] = ()  # the canonical reviews layout (--format reviews), with cfg.reviews
    n_reviews: int = 0


def _item_catalogue(cfg: GeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, 0])
    item_category = rng.integers(0, N_CATEGORIES, cfg.n_items)
    category_log_price = rng.normal(3.0, 0.8, N_CATEGORIES)
    item_price = np.round(np.exp(category_log_price[item_category] + rng.normal(0, 0.35, cfg.n_items)), 2)
    return item_category, item_price


def _chunk_events(cfg: GeneratorConfig, chunk: int, first_user: int, n_users: int,
                  catalogue) -> tuple[pa.Table, pa.Table | None]:
    """(all events of users [first_user, first_user + n_users), their reviews or None), from the chunk's own
    random stream."""
    item_category, item_price = catalogue
    rng = np.random.default_rng([cfg.seed, 1, chunk])
    days = cfg.days

    # Users: arrival, lifetime (churn), latent rates.
    arrival = np.where(rng.random(n_users) < 0.4, 0.0, rng.uniform(0, days, n_users))
    engagement = rng.gamma(2.0, 0.5, n_users)
    lifetime = rng.exponential(45.0 * engagement + 5.0)
    departure = np.minimum(arrival + lifetime, days)
    active_days = np.maximum(departure - arrival, 0.0)
    session_rate = rng.gamma(1.2, 1.0, n_users) * engagement
    cart_prob = rng.beta(2.0, 5.0, n_users)
    buy_prob = rng.beta(1.5, 4.0, n_users) * np.clip(engagement, 0.2, 1.5)
    favourite_category = rng.integers(0, N_CATEGORIES, n_users)

    # Sessions: Poisson counts scaled so that the whole population yields about n_events.
    target_sessions = cfg.n_events / EVENTS_PER_SESSION * n_users / cfg.n_users
    expected = session_rate * active_days
    scale = target_sessions / max(expected.sum(), 1e-9)
    n_sessions = rng.poisson(expected * scale * DOW_WEIGHTS.max() / DOW_WEIGHTS.mean())  # thinned below
    s_user = np.repeat(np.arange(n_users), n_sessions)
    s_time = arrival[s_user] + rng.random(s_user.size) * active_days[s_user]
    s_day = np.floor(s_time).astype(np.int64)
    start_dow = cfg.start_date.weekday()
    keep = rng.random(s_user.size) < DOW_WEIGHTS[(s_day + start_dow) % 7] / DOW_WEIGHTS.max()
    s_user, s_day = s_user[keep], s_day[keep]
    s_hour = rng.choice(24, s_user.size, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    s_start = s_day * 86_400 + s_hour * 3_600 + rng.integers(0, 3_600, s_user.size)
    n_s = s_user.size

    # Events per session: views, favourites, carts, removals, purchases.
    drifted = (s_day >= (cfg.drift_from - cfg.start_date).days) if cfg.drift_from else np.zeros(n_s, dtype=bool)
    n_view = 1 + rng.poisson(np.where(drifted, 9.0, 3.0))
    n_fav = rng.binomial(1, np.where(drifted, 0.3, 0.08))
    carted = rng.random(n_s) < cart_prob[s_user] * np.where(drifted, 0.5, 1.0)
    n_cart = carted * (1 + rng.binomial(1, 0.3, n_s))
    n_remove = rng.binomial(n_cart, 0.15)
    n_purchase = (carted & (rng.random(n_s) < buy_prob[s_user])).astype(np.int64)
    # sessions whose cart events come from _order_signal instead (carted, not bought)
    two_items = (carted & (n_purchase == 0) & (rng.random(n_s) < ORDER_SIGNAL_SESSIONS)) if cfg.order_signal \
        else np.zeros(n_s, dtype=bool)
    n_cart, n_remove = np.where(two_items, 0, n_cart), np.where(two_items, 0, n_remove)
    kinds = np.stack([n_view, n_fav, n_cart, n_remove, n_purchase], axis=1)
    per_session = kinds.sum(axis=1)

    e_session = np.repeat(np.arange(n_s), per_session)
    # event type codes in funnel order within a session: view(0) fav(1) cart(2) remove(3) purchase(4)
    e_kind = np.repeat(np.tile(np.arange(5), n_s), kinds.ravel())
    e_user = s_user[e_session]
    offsets = np.cumsum(rng.exponential(40.0, e_session.size)).astype(np.int64)
    session_first = np.repeat(np.cumsum(per_session) - per_session, per_session)
    e_ts = s_start[e_session] + offsets - offsets[session_first]

    in_favourite = rng.random(e_session.size) < 0.7
    random_item = rng.integers(0, cfg.n_items, e_session.size)
    # an item of the favourite category: pick among items whose index maps to that category cheaply
    fav_item = (favourite_category[e_user] + N_CATEGORIES * rng.integers(0, cfg.n_items // N_CATEGORIES,
                                                                         e_session.size)) % cfg.n_items
    e_item = np.where(in_favourite, fav_item, random_item)
    # carts, removals and the purchase in a session concern the item the session started with
    e_item = np.where(e_kind >= 2, e_item[session_first], e_item)
    e_quantity = np.where(e_kind == 4, 1 + rng.binomial(2, 0.2, e_session.size), 1)
    if cfg.order_signal:
        extra = _order_signal(rng, cfg, np.flatnonzero(two_items), s_user, s_start, e_session, e_ts, n_s,
                              favourite_category)
        e_session, e_kind, e_user, e_ts, e_item, e_quantity = (
            np.concatenate([a, b]) for a, b in zip((e_session, e_kind, e_user, e_ts, e_item, e_quantity), extra))

    reviews = None
    if cfg.reviews:
        reviews, kept = _reviews(rng, e_kind, e_user, e_ts, e_item, days)
        e_session, e_kind, e_user, e_ts, e_item, e_quantity = (
            a[kept] for a in (e_session, e_kind, e_user, e_ts, e_item, e_quantity))

    type_names = pa.array(["view", "fav", "cart", "remove_from_cart", "purchase"])
    start_ts = datetime.combine(cfg.start_date, datetime.min.time())
    ts = pa.array(
        (np.datetime64(start_ts, "s") + e_ts.astype("timedelta64[s]")).astype("datetime64[us]"),
        type=pa.timestamp("us"),
    )
    in_window = pc.less(e_ts, days * 86_400)
    user_global = first_user + e_user
    user_ids = _prefixed("u", user_global)
    table = pa.table(
        {
            "event_id": _prefixed(f"{cfg.tag}-{chunk:04d}-", np.arange(e_ts.size)),
            "user_id": user_ids,
            "event_ts": ts,
            "event_type": pc.take(type_names, pa.array(e_kind)),
            "item_id": _prefixed("i", e_item),
            "category_id": _prefixed("c", item_category[e_item]),
            "price": pa.array(item_price[e_item]),
            "quantity": pa.array(e_quantity.astype(np.int32)),
            "session_id": pc.binary_join_element_wise(user_ids, pc.cast(pa.array(e_session), pa.string()), "-s"),
        }
    )
    events = table.filter(in_window)
    if reviews is None:
        return events, None
    when, user, item, rating, text = reviews
    review_ts = (np.datetime64(start_ts, "s") + when.astype("timedelta64[s]")).astype("datetime64[us]")
    review_users = _prefixed("u", first_user + user)
    return events, pa.table({
        "review_id": _prefixed(f"{cfg.tag}-{chunk:04d}-r", np.arange(when.size)),
        "user_id": review_users,
        "item_id": _prefixed("i", item),
        "review_ts": pa.array(review_ts, type=pa.timestamp("us")),
        "rating": pa.array(rating.astype(np.int8)),
        "text": pa.array(text),
    })


# Reviews (issue 25): a share of purchases is reviewed a few days later. Each review has a latent satisfaction; the
# rating reads it with noise, the words read it closely (a complaint, praise, or neither); dissatisfied reviewers
# mostly leave: their events after the review are dropped. So the words say more than the rating about who churns.
REVIEWED_SHARE = 0.3
DISSATISFIED_BELOW = -0.8      # satisfaction (standard normal) under which the words complain
DISSATISFIED_LEAVE = 0.8       # the share of complainers who leave after the review
COMPLAINTS = ("stopped working after a week", "returned it", "waste of money", "cheaply made and broke",
              "never buying from this shop again", "arrived damaged")
PRAISE = ("works great", "love it", "excellent quality", "exactly as described", "would buy again")
NEUTRAL = ("does the job", "it is okay", "as expected", "fine for the price")


def _reviews(rng, e_kind, e_user, e_ts, e_item, days: int):
    """((time, user, item, rating, text) of the reviews, a mask of the events kept: the complainers who leave
    lose every event after their review)."""
    bought = np.flatnonzero((e_kind == 4) & (rng.random(e_kind.size) < REVIEWED_SHARE))
    when = e_ts[bought] + rng.integers(86_400, 7 * 86_400, bought.size)
    bought, when = bought[when < days * 86_400], when[when < days * 86_400]
    satisfaction = rng.standard_normal(bought.size)
    rating = np.clip(np.round(3.9 + 1.0 * satisfaction + rng.normal(0, 1.0, bought.size)), 1, 5)
    phrases = np.where(satisfaction < DISSATISFIED_BELOW, 0, np.where(satisfaction > 0.5, 2, 1))
    pools = (COMPLAINTS, NEUTRAL, PRAISE)
    text = np.array([f"{pools[p][rng.integers(len(pools[p]))]}. {NEUTRAL[rng.integers(len(NEUTRAL))]}, item {i}"
                     for p, i in zip(phrases, e_item[bought])], dtype=object)
    user = e_user[bought]
    # a user leaves after their first complaint (with DISSATISFIED_LEAVE): no event after it
    leaves = (phrases == 0) & (rng.random(bought.size) < DISSATISFIED_LEAVE)
    left_at = np.full(int(e_user.max()) + 1 if e_user.size else 0, np.iinfo(np.int64).max)
    np.minimum.at(left_at, user[leaves], when[leaves])
    kept = e_ts <= left_at[e_user]
    review_kept = when <= left_at[user]
    return (when[review_kept], user[review_kept], e_item[bought][review_kept], rating[review_kept],
            text[review_kept]), kept


# the order-dependent behaviour (_order_signal): the share of carted, unbought sessions that become a swap or a drop,
# the share of swappers who come back to buy, and within how many days. Strong enough to be learnt from a few
# thousand users: at 300k events about 3 % of a cutoff's users have a swap as their last events, and 85-89 % of them
# buy in the week after it, against about 21 % of the others (at 0.35 / 0.6 / 3 days a perfect reading of the order
# added 0.008 PR-AUC to a logistic regression: too little for any backtest to tell).
ORDER_SIGNAL_SESSIONS = 0.7
SWAP_RETURNS = 0.9
SWAP_RETURN_DAYS = 6


def _order_signal(rng, cfg: GeneratorConfig, sessions: np.ndarray, s_user, s_start, e_session, e_ts, n_s: int,
                  favourite_category) -> tuple[np.ndarray, ...]:
    """Two items carted and one removed, in one of two orders with the same counts and the same open cart:
    - a swap, cart(x) remove(x) cart(y): the user replaced an item; most (SWAP_RETURNS) come back within days and buy y;
    - a drop, cart(y) cart(x) remove(x): the session ends on a removal; nothing follows.
    Window counts (and the open cart: y in both) cannot tell them apart; the order of the last events can.
    Returns the added events: session, kind, user, ts, item, quantity."""
    session_end = np.full(n_s, -1, dtype=np.int64)
    np.maximum.at(session_end, e_session, e_ts)
    n = len(sessions)
    swap = rng.random(n) < 0.5
    x = (favourite_category[s_user[sessions]] + N_CATEGORIES * rng.integers(0, cfg.n_items // N_CATEGORIES, n)
         ) % cfg.n_items
    y = (x + N_CATEGORIES * (1 + rng.integers(0, 5, n))) % cfg.n_items  # another item of the category
    kinds = np.where(swap[:, None], [[2, 3, 2]], [[2, 2, 3]])          # cart remove cart | cart cart remove
    items = np.where(swap[:, None], np.stack([x, x, y], 1), np.stack([y, x, x], 1))
    start = np.maximum(session_end[sessions], s_start[sessions])
    ts = start[:, None] + np.cumsum(rng.exponential(40.0, (n, 3)).astype(np.int64) + 1, axis=1)
    parts = [(np.repeat(sessions, 3), kinds.ravel(), np.repeat(s_user[sessions], 3), ts.ravel(), items.ravel())]
    # the swappers' return: view, cart and purchase of y, in a session of its own
    back = swap & (rng.random(n) < SWAP_RETURNS)
    m = int(back.sum())
    later = ts[back, -1] + rng.integers(86_400, SWAP_RETURN_DAYS * 86_400, m)
    return_ts = later[:, None] + np.cumsum(rng.exponential(40.0, (m, 3)).astype(np.int64) + 1, axis=1)
    parts.append((np.repeat(n_s + np.arange(m), 3), np.tile([0, 2, 4], m), np.repeat(s_user[sessions[back]], 3),
                  return_ts.ravel(), np.repeat(y[back], 3)))
    session, kind, user, when, item = (np.concatenate(column) for column in zip(*parts))
    return session, kind, user, when, item, np.ones(len(session), dtype=np.int64)


def _prefixed(prefix: str, values: np.ndarray) -> pa.Array:
    as_text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), as_text, "")


def generate(cfg: GeneratorConfig, out_dir: Path, progress=None, reviews_dir: Path | None = None) -> GeneratorResult:
    """Write the events as Parquet files (one per user chunk) under out_dir, and with ``cfg.reviews`` the reviews
    under ``reviews_dir`` (default: the ``reviews`` folder beside out_dir, the landing folder of --format reviews);
    return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews_dir = reviews_dir or out_dir.parent / "reviews"
    if cfg.reviews:
        reviews_dir.mkdir(parents=True, exist_ok=True)
    catalogue = _item_catalogue(cfg)
    n_chunks = (cfg.n_users + USERS_PER_CHUNK - 1) // USERS_PER_CHUNK
    stem = f"synthetic_seed{cfg.seed}_{cfg.start_date:%Y%m%d}_{cfg.end_date:%Y%m%d}"

    def write_chunk(chunk: int) -> tuple[Path, int, Path | None, int]:
        first = chunk * USERS_PER_CHUNK
        table, reviews = _chunk_events(cfg, chunk, first, min(USERS_PER_CHUNK, cfg.n_users - first), catalogue)
        path = out_dir / f"{stem}_part{chunk:04d}.parquet"
        pq.write_table(table, path, compression="snappy")
        if reviews is None:
            return path, table.num_rows, None, 0
        review_path = reviews_dir / f"{stem}_reviews_part{chunk:04d}.parquet"
        pq.write_table(reviews, review_path, compression="snappy")
        return path, table.num_rows, review_path, reviews.num_rows

    # Chunks are independent (own seed, own file): NumPy and Arrow release the GIL, so threads use every core.
    files, review_files, total, total_reviews = [], [], 0, 0
    with ThreadPoolExecutor(max_workers=min(n_chunks, os.cpu_count() or 1)) as pool:
        for done, (path, rows, review_path, n_reviews) in enumerate(pool.map(write_chunk, range(n_chunks)), start=1):
            files.append(path)
            total += rows
            if review_path is not None:
                review_files.append(review_path)
                total_reviews += n_reviews
            if progress:
                progress(done, n_chunks, total)
    return GeneratorResult(files, total, cfg.n_users, cfg.start_date, cfg.end_date, tuple(review_files),
                           total_reviews)
