"""The BG/NBD + Gamma-Gamma baseline (pymc-marketing), fitted for real on simulated purchase histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import clv


def _histories(n=2000, seed=3) -> pd.DataFrame:
    """Buy-till-you-die histories: each user buys at a Poisson rate until dropping out after some purchase."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rate, dropout, age = rng.gamma(1.5, 1 / 20), rng.beta(1, 4), rng.uniform(60, 200)
        days, t = [], rng.exponential(1 / rate)
        while t < age:
            days.append(t)
            if rng.random() < dropout:
                break
            t += rng.exponential(1 / rate)
        first = days[0] if days else rng.uniform(0, age - 1)
        rows.append({"user_id": f"u{i}", "frequency": max(len(days) - 1, 0),
                     "recency": (days[-1] - days[0]) if len(days) > 1 else 0.0,
                     "t_days": age - first, "monetary_value": rng.gamma(3, 20) if days else 0.0})
    return pd.DataFrame(rows)


def test_p_alive_and_expected_purchases_follow_recency_and_frequency():
    models = clv.fit(_histories())
    probes = pd.DataFrame({
        "user_id": ["loyal_recent", "loyal_lapsed", "one_off", "never"],
        "frequency": [8, 8, 1, 0], "recency": [118, 20, 5, 0], "t_days": [120, 120, 120, 120],
        "monetary_value": [50.0, 50.0, 50.0, 0.0],
    })
    out = clv.predict(models, probes).set_index(probes.user_id)
    assert out.loc["loyal_recent", "clv_p_alive"] > 0.8 > out.loc["loyal_lapsed", "clv_p_alive"]
    assert out.loc["loyal_recent", "clv_expected_purchases_90d"] > out.loc["one_off", "clv_expected_purchases_90d"]
    assert out.loc["never", "clv_p_alive"] == pytest.approx(1.0)  # BG/NBD: no repeat purchase, no evidence of death
    assert (out.clv_expected_purchases_7d < out.clv_expected_purchases_28d).all()
    assert (out.clv_p_purchase_7d.between(0, 1)).all()
    np.testing.assert_allclose(out.clv_expected_revenue_28d, out.clv_expected_purchases_28d * out.clv_expected_spend)


def test_the_fit_is_logged_registered_and_reloads_through_mlflow(tmp_path):
    import mlflow.pyfunc

    from ml.registry import CHAMPION, Store, version_by_alias

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    rfm = _histories(800)
    models = clv.fit(rfm)
    entry = clv.log_and_register(store, models, rfm, {"as_of_date": "2026-11-01"})
    assert version_by_alias(store, clv.CLV_MODEL_NAME, CHAMPION).version == entry.version == "1"
    loaded = mlflow.pyfunc.load_model(f"models:/{clv.CLV_MODEL_NAME}@{CHAMPION}")
    pd.testing.assert_frame_equal(loaded.predict(rfm[["user_id", *clv.RFM_COLUMNS]]).reset_index(drop=True),
                                  clv.predict(models, rfm).reset_index(drop=True))
    run = store.activate().get_run(entry.run_id)
    assert {"bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b"} <= set(run.data.metrics)


def test_too_few_repeat_buyers_or_impossible_histories_are_refused():
    rfm = _histories(300).assign(frequency=0, recency=0.0)
    with pytest.raises(clv.NotEnoughHistory, match="0 of 300 users have bought on more than one day"):
        clv.fit(rfm)
    broken = _histories(300)
    broken.loc[0, "recency"] = broken.loc[0, "t_days"] + 1
    with pytest.raises(ValueError, match="1 RFM rows break 0 <= recency <= T"):
        clv.fit(broken)


def test_the_fit_sample_is_bounded_deterministic_and_independent_of_row_order():
    users = _histories(n=500)
    sample = clv.fit_sample(users, 120)
    assert len(sample) == 120 and sample.user_id.is_unique
    shuffled = clv.fit_sample(users.sample(frac=1.0, random_state=7), 120)
    assert set(shuffled.user_id) == set(sample.user_id)          # chosen by user id, not by position
    assert clv.fit_sample(users, 500) is users                   # small enough: every user
    # a later date with more users keeps the users it shares with the earlier one (hash order, not a fresh draw)
    grown = pd.concat([users, _histories(n=100, seed=9).assign(user_id=lambda f: "new" + f.user_id)])
    assert len(set(clv.fit_sample(grown, 120).user_id) & set(sample.user_id)) >= 90


def test_the_compiled_once_fit_equals_pymc_marketings_own_map_fit_on_each_of_several_data_sets():
    """ml.clv compiles the log-density once and swaps each date's data in; pymc-marketing's fit() recompiles per call.
    Same priors, likelihood and optimiser: the same parameters and predictions, data set after data set (the second
    fit reuses the first one's compiled graph with another size; each reference fit compiles its own, ~10 s)."""
    from pymc_marketing import clv as pmc

    for n, seed in ((1500, 5), (700, 6)):
        rfm = _histories(n, seed)
        ours = clv.fit(rfm)
        data = clv._inputs(rfm)
        bgnbd = pmc.BetaGeoModel(data=data[["customer_id", "frequency", "recency", "T"]])
        bgnbd.fit(fit_method="map", progressbar=False)
        repeat = data[(data.frequency > 0) & (data.monetary_value > 0)]
        gamma_gamma = pmc.GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]])
        gamma_gamma.fit(fit_method="map", progressbar=False)
        reference = clv.ClvModels(bgnbd, gamma_gamma, ours.mean_spend)
        theirs_params, our_params = clv.fitted_parameters(reference), clv.fitted_parameters(ours)
        assert set(our_params) == set(theirs_params) >= {"bgnbd_alpha", "bgnbd_r", "gamma_gamma_p"}
        for name, value in theirs_params.items():
            assert our_params[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
        pd.testing.assert_frame_equal(clv.predict(ours, rfm), clv.predict(reference, rfm), rtol=1e-6)
