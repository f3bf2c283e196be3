import datetime as dt

import duckdb
import pyarrow.parquet as pq

from dagster_project.generate.synthetic import GeneratorConfig, generate


def _read(files):
    return pq.ParquetDataset(files).read().sort_by("event_id")


def test_same_seed_gives_identical_events_and_another_seed_differs(tmp_path):
    cfg = GeneratorConfig(n_events=20_000, seed=3, days=30)
    a = _read(generate(cfg, tmp_path / "a").files)
    b = _read(generate(cfg, tmp_path / "b").files)
    c = _read(generate(GeneratorConfig(n_events=20_000, seed=4, days=30), tmp_path / "c").files)
    assert a.equals(b)
    assert not a.column("user_id").equals(c.column("user_id"))


def test_volume_span_and_funnel_are_realistic(tmp_path):
    cfg = GeneratorConfig(n_events=50_000, seed=1, days=60, end_date=dt.date(2026, 3, 1))
    result = generate(cfg, tmp_path)
    assert 0.9 * cfg.n_events <= result.n_events <= 1.1 * cfg.n_events
    con = duckdb.connect()
    stats = con.execute(f"""
        select min(event_ts), max(event_ts), count(distinct event_id) = count(*),
               count(*) filter (where event_type = 'view'), count(*) filter (where event_type = 'cart'),
               count(*) filter (where event_type = 'purchase'),
               count(distinct user_id) filter (where event_type = 'purchase'),
               count(*) filter (where price <= 0 or quantity < 1)
        from read_parquet({[str(f) for f in result.files]})
    """).fetchone()
    first, last, ids_unique, views, carts, purchases, buyers, invalid = stats
    assert first.date() >= dt.date(2025, 12, 31) and last.date() == dt.date(2026, 2, 28)
    assert ids_unique and invalid == 0
    assert views > carts > purchases > 0  # a funnel
    assert buyers > 20  # repeat buyers exist but not everyone buys
    # weekly seasonality: weekends busier than mid-week
    by_dow = dict(con.execute(
        f"select isodow(event_ts), count(*) from read_parquet({[str(f) for f in result.files]}) group by 1"
    ).fetchall())
    assert by_dow[6] + by_dow[7] > by_dow[2] + by_dow[3]


def test_the_order_signal_lies_in_the_order_of_events_not_in_their_counts(tmp_path):
    """A swap (cart x, remove x, cart y) is followed by a purchase within days far more often than a drop (cart y,
    cart x, remove x), though both sessions have the same counts and leave the same item in the cart."""
    cfg = GeneratorConfig(n_events=60_000, seed=5, days=60, end_date=dt.date(2026, 3, 1), order_signal=True)
    files = [str(f) for f in generate(cfg, tmp_path).files]
    sessions = duckdb.connect().execute(f"""
        with events as (select * from read_parquet({files})),
        shaped as (
            select session_id, any_value(user_id) as user_id, max(event_ts) as ended,
                   count(*) filter (where event_type = 'cart') as carts,
                   count(*) filter (where event_type = 'remove_from_cart') as removes,
                   count(*) filter (where event_type = 'purchase') as purchases,
                   string_agg(event_type, ',' order by event_ts, event_id)
                       filter (where event_type in ('cart', 'remove_from_cart')) as cart_order
            from events group by session_id
        )
        select s.cart_order, count(*) as sessions,
               avg(case when exists (select 1 from events e where e.user_id = s.user_id and e.event_type = 'purchase'
                                     and e.event_ts > s.ended and e.event_ts < s.ended + interval 7 day)
                        then 1.0 else 0.0 end) as bought_within_7_days
        from shaped s
        where s.carts = 2 and s.removes = 1 and s.purchases = 0
        group by 1
    """).df().set_index("cart_order")
    swap, drop = sessions.loc["cart,remove_from_cart,cart"], sessions.loc["cart,cart,remove_from_cart"]
    assert swap.sessions > 100 and drop.sessions > 100
    # the drop rate is these users' own buying (carters buy often); the swap adds the return
    assert swap.bought_within_7_days > 0.8 and swap.bought_within_7_days - drop.bought_within_7_days > 0.3
    plain = GeneratorConfig(n_events=60_000, seed=5, days=60, end_date=dt.date(2026, 3, 1))
    assert plain.tag != cfg.tag  # never the same event ids as the data without the behaviour


def test_reviews_follow_purchases_load_as_the_canonical_layout_and_their_words_say_who_leaves(tmp_path):
    """A share of purchases is reviewed days later; complainers mostly leave, whatever their rating: among
    reviewers who rated 3 or more, the complainers are active a week after their review far less often than the
    others, and a low rating without a complaint says little (what text features have to find, issue 25)."""
    from dagster_project.generate.synthetic import COMPLAINTS
    from dagster_project.ingest import load_file

    cfg = GeneratorConfig(n_events=200_000, seed=3, days=90, end_date=dt.date(2026, 3, 2), reviews=True)
    result = generate(cfg, tmp_path / "canonical")
    assert result.review_files and result.n_reviews > 500
    plain = generate(GeneratorConfig(n_events=200_000, seed=3, days=90, end_date=dt.date(2026, 3, 2)),
                     tmp_path / "plain")
    assert plain.n_reviews == 0 and plain.review_files == ()
    # the reviews draw their randomness after the events: without the complainers who leave, the same shop
    assert plain.n_events > result.n_events
    events = f"read_parquet('{tmp_path / 'canonical'}/*.parquet')"
    reviews = f"read_parquet('{tmp_path / 'reviews'}/*.parquet')"
    complaint = " or ".join(f"contains(r.text, '{c}')" for c in COMPLAINTS)
    with duckdb.connect() as con:
        # every review follows a purchase of its item by its user, 1 to 7 days before
        unmatched = con.execute(f"""
            select count(*) from {reviews} r where not exists (select 1 from {events} e where e.user_id = r.user_id
              and e.item_id = r.item_id and e.event_type = 'purchase'
              and r.review_ts between e.event_ts + interval 1 day and e.event_ts + interval 7 day)""").fetchone()[0]
        active = {(c, low): share for c, low, share in con.execute(f"""
            with last as (select user_id, max(event_ts) as last_ts from {events} group by 1)
            select ({complaint}) as complains, r.rating <= 2 as low,
                   avg(case when l.last_ts > r.review_ts + interval 7 day then 1.0 else 0.0 end)
            from {reviews} r join last l using (user_id) group by 1, 2""").fetchall()}
    assert unmatched == 0
    assert active[(True, False)] < 0.3 and active[(False, False)] > 0.55
    assert active[(False, True)] > 0.5  # a low rating without a complaint: most stay
    report = load_file(tmp_path / "w.duckdb", result.review_files[0], "reviews")
    assert report.rows_accepted == report.rows_read == result.n_reviews and report.reconciles()
