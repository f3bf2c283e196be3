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
