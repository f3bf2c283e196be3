"""The statistical baseline: BG/NBD (how often a customer buys, and whether they are still "alive") with Gamma-Gamma
(how much they spend per purchase), from pymc-marketing.

Why pymc-marketing: it is the maintained home of these models (lifetimes, their former home, has been archived
since 2020 and its successor btyd is a 2022 beta); 0.18.2 is the last release for Python 3.11 and installs with
the pinned stack. Fitted by MAP (a point estimate, deterministic, seconds), not MCMC.

Inputs are per user and as-of date, in days, from marts.feat_user_rfm: ``frequency`` (repeat purchase days after
the first), ``recency`` (first to last purchase day), ``t_days`` (first purchase, or first visit for users who never
bought, to the as-of date) and ``monetary_value`` (mean revenue per purchase day). Nothing after the as-of date.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

RFM_COLUMNS = ["frequency", "recency", "t_days", "monetary_value"]
CLV_COLUMNS = ["clv_p_alive", "clv_expected_purchases_7d", "clv_expected_purchases_28d", "clv_expected_purchases_90d",
               "clv_p_purchase_7d", "clv_expected_spend", "clv_expected_revenue_28d"]
MIN_REPEAT_BUYERS = 20  # BG/NBD and Gamma-Gamma need repeat buyers; fewer and there is nothing to fit


class NotEnoughHistory(ValueError):
    """Too few repeat buyers before this date to fit BG/NBD (young or tiny data)."""


@dataclass
class ClvModels:
    bgnbd: object                   # pymc_marketing.clv.BetaGeoModel
    gamma_gamma: object | None      # pymc_marketing.clv.GammaGammaModel, or None (too few repeat buyers)
    mean_spend: float               # the fallback spend per purchase day

    def save(self, folder: Path) -> dict[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"bgnbd": str(folder / "bgnbd.nc")}
        self.bgnbd.save(paths["bgnbd"])
        if self.gamma_gamma is not None:
            paths["gamma_gamma"] = str(folder / "gamma_gamma.nc")
            self.gamma_gamma.save(paths["gamma_gamma"])
        (folder / "mean_spend.txt").write_text(repr(self.mean_spend))
        paths["mean_spend"] = str(folder / "mean_spend.txt")
        return paths

    @classmethod
    def load(cls, paths: dict[str, str]) -> ClvModels:
        from pymc_marketing import clv

        bgnbd = clv.BetaGeoModel.load(paths["bgnbd"])
        bgnbd.build_model()  # a loaded model has its fitted values but not its graph
        gamma_gamma = None
        if "gamma_gamma" in paths:
            gamma_gamma = clv.GammaGammaModel.load(paths["gamma_gamma"])
            gamma_gamma.build_model()
        return cls(bgnbd, gamma_gamma, float(Path(paths["mean_spend"]).read_text()))


def _quiet():
    """pymc and pytensor warn about BLAS and experimental APIs on every call; they say nothing about the fit."""
    warnings.filterwarnings("ignore", module=r"(pymc|pytensor|pymc_marketing|arviz|preliz).*")
    for name in ("pymc", "pytensor", "pymc_marketing", "arviz"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _inputs(rfm: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ["user_id", *RFM_COLUMNS] if c not in rfm.columns]
    if missing:
        raise KeyError(f"RFM columns missing: {', '.join(missing)}")
    data = pd.DataFrame({
        "customer_id": np.arange(len(rfm)),  # positions: user ids are text, pymc-marketing wants one coordinate
        "frequency": rfm["frequency"].to_numpy(dtype=float),
        "recency": rfm["recency"].to_numpy(dtype=float),
        "T": rfm["t_days"].to_numpy(dtype=float),
        "monetary_value": rfm["monetary_value"].fillna(0).to_numpy(dtype=float),
    })
    bad = data[(data["T"] <= 0) | (data.recency > data["T"]) | (data.frequency < 0)]
    if not bad.empty:
        raise ValueError(f"{len(bad)} RFM rows break 0 <= recency <= T, T > 0, frequency >= 0 "
                         f"(first: {rfm.iloc[bad.index[0]].to_dict()})")
    return data


def fit(rfm: pd.DataFrame) -> ClvModels:
    """Fit BG/NBD on every user, and Gamma-Gamma on the repeat buyers with a positive spend."""
    _quiet()
    from pymc_marketing import clv

    data = _inputs(rfm)
    if (data.frequency > 0).sum() < MIN_REPEAT_BUYERS:
        raise NotEnoughHistory(f"BG/NBD needs repeat buyers: {(data.frequency > 0).sum()} of {len(data)} users have "
                         f"bought on more than one day (at least {MIN_REPEAT_BUYERS} needed)")
    repeat = data[(data.frequency > 0) & (data.monetary_value > 0)]
    mean_spend = float(data.loc[data.monetary_value > 0, "monetary_value"].mean()) if (data.monetary_value > 0).any() else 0.0
    bgnbd = _BGNBD.fit(clv.BetaGeoModel(data=data[["customer_id", "frequency", "recency", "T"]]),
                       {"T": data["T"].to_numpy(), "obs": data[["recency", "frequency"]].to_numpy()})
    gamma_gamma = None
    if len(repeat) >= MIN_REPEAT_BUYERS:
        gamma_gamma = _GAMMA_GAMMA.fit(clv.GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]]),
                                       {"x": repeat["frequency"].to_numpy(), "z_mean": repeat["monetary_value"].to_numpy()})
    return ClvModels(bgnbd, gamma_gamma, mean_spend)


class _CompiledMap:
    """pymc-marketing's MAP fit (``model.fit(fit_method="map")``: ``pm.find_MAP``, L-BFGS-B from the initial point),
    with the log-density and its gradient compiled once per process instead of once per fit.

    Why: pymc-marketing's models embed their data in the graph, so every as-of date recompiled it: 3-5 s a fit, and a
    run fits every training cutoff (Online Retail: 136 s of a 404 s run). Here the same priors (read from the
    pymc-marketing model's own ``model_config``) and likelihood are built once over ``pm.Data``; a fit swaps the data
    in, optimises, and hands the optimum to the pymc-marketing model as its one-draw posterior, so everything
    downstream (predictions, save and load, MLflow) is pymc-marketing's own. tests/test_clv.py holds both fits equal.
    """

    def __init__(self, build):
        self._build = build  # (model_config) -> pm.Model whose pm.Data are named as the fit's data
        self._compiled = None

    def _compile(self, model_config):
        import pytensor
        from pymc.blocking import DictToArrayBijection

        # FAST_COMPILE: no C compile of the graph (16-21 s once, for fits of under a second)
        with pytensor.config.change_flags(mode="FAST_COMPILE"):
            model = self._build(model_config)
            start = model.initial_point()
            names = {v.name for v in model.value_vars}
            x0 = DictToArrayBijection.map({k: v for k, v in start.items() if k in names})
            by_name = {v.name: v for v in model.value_vars}
            rvs = [model.values_to_rvs[by_name[name]] for name, _, _, _ in x0.point_map_info]
            logp = DictToArrayBijection.mapf(model.compile_logp(jacobian=False), start)
            dlogp = DictToArrayBijection.mapf(model.compile_dlogp(rvs, jacobian=False), start)
        return {"model": model, "start": start, "x0": x0, "logp": logp, "dlogp": dlogp,
                "config": repr(model_config)}

    def fit(self, target, data: dict[str, np.ndarray]):
        """Fit ``target`` (an unfitted pymc-marketing model) on ``data`` (values of the pm.Data) and return it."""
        import pymc as pm
        import pytensor
        from pymc.backends.base import MultiTrace
        from pymc.backends.ndarray import NDArray
        from pymc.blocking import DictToArrayBijection, RaveledVars
        from pymc.tuning.starting import CostFuncWrapper
        from scipy.optimize import minimize

        if self._compiled is None or self._compiled["config"] != repr(target.model_config):
            self._compiled = self._compile(target.model_config)
        compiled = self._compiled
        pm.set_data({k: np.asarray(v, dtype=float) for k, v in data.items()}, model=compiled["model"])
        info = compiled["x0"].point_map_info
        cost = CostFuncWrapper(5000, False, logp_func=lambda x: compiled["logp"](RaveledVars(x, info)),
                               dlogp_func=lambda x: compiled["dlogp"](RaveledVars(x, info)))
        try:
            optimum = minimize(cost, compiled["x0"].data, method="L-BFGS-B", jac=True)["x"]
        except StopIteration:  # find_MAP's evaluation budget (5,000) spent: its last finite point, as find_MAP does
            optimum = cost.previous_x
        point = DictToArrayBijection.rmap(RaveledVars(optimum, info), compiled["start"])
        with pytensor.config.change_flags(mode="FAST_COMPILE"):
            target.build_model()
            if {v.name for v in target.model.value_vars} != set(point):
                raise RuntimeError(f"{type(target).__name__}'s parameters {sorted(v.name for v in target.model.value_vars)}"
                                   f" differ from the compiled copy's {sorted(point)}: pymc-marketing changed the model")
            trace = NDArray(model=target.model)
            trace.setup(draws=1, chain=0)
            trace.record({v.name: point[v.name] for v in target.model.value_vars})  # in the model's own order
            trace.close()
            target.idata = pm.to_inference_data(MultiTrace([trace]), model=target.model)
        target.set_idata_attrs(target.idata)
        target._add_fit_data_group(target.data)  # what pymc-marketing's fit() does after its own MAP
        return target


def _bgnbd_graph(config):
    """pymc-marketing's BetaGeoModel.build_model (no covariates, pooled dropout) over pm.Data."""
    import pymc as pm
    from pymc_marketing.clv.distributions import BetaGeoNBD

    with pm.Model() as model:
        T = pm.Data("T", np.ones(2))
        observed = pm.Data("obs", np.zeros((2, 2)))
        alpha = config["alpha"].create_variable("alpha")
        phi_dropout = config["phi_dropout"].create_variable("phi_dropout")
        kappa_dropout = config["kappa_dropout"].create_variable("kappa_dropout")
        a = pm.Deterministic("a", phi_dropout * kappa_dropout)
        b = pm.Deterministic("b", (1.0 - phi_dropout) * kappa_dropout)
        r = config["r"].create_variable("r")
        BetaGeoNBD(name="recency_frequency", a=a, b=b, r=r, alpha=alpha, T=T, observed=observed)
    return model


def _gamma_gamma_graph(config):
    """pymc-marketing's GammaGammaModel.build_model (eq. 1a of Fader, Hardie and Lee's note) over pm.Data."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as model:
        x = pm.Data("x", np.ones(2))
        z_mean = pm.Data("z_mean", np.ones(2))
        p = config["p"].create_variable("p")
        q = config["q"].create_variable("q")
        v = config["v"].create_variable("v")
        pm.Potential("likelihood", pt.gammaln(p * x + q) - pt.gammaln(p * x) - pt.gammaln(q) + q * pt.log(v)
                     + (p * x - 1) * pt.log(z_mean) + (p * x) * pt.log(x) - (p * x + q) * pt.log(x * z_mean + v))
    return model


_BGNBD = _CompiledMap(_bgnbd_graph)
_GAMMA_GAMMA = _CompiledMap(_gamma_gamma_graph)


def fit_sample(rfm: pd.DataFrame, max_users: int) -> pd.DataFrame:
    """The users BG/NBD is fitted on: every user, or the ``max_users`` with the smallest hash of their id, so that
    the sample is the same on every run and mostly the same users from one date to the next. The fit has four
    population parameters (three for Gamma-Gamma): a hundred thousand customers pin them down, and predicting
    for every user stays vectorised."""
    if len(rfm) <= max_users:
        return rfm
    hashed = pd.util.hash_pandas_object(rfm["user_id"].astype(str), index=False).to_numpy()
    return rfm.iloc[np.sort(np.argsort(hashed, kind="stable")[:max_users])]


def _point(values) -> np.ndarray:
    """A MAP fit gives one chain of one draw: the per-customer values."""
    array = values.mean(dim=[d for d in ("chain", "draw") if d in values.dims]) if hasattr(values, "dims") else values
    return np.asarray(array, dtype=float).ravel()


def predict(models: ClvModels, rfm: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``rfm``: P(alive), expected purchase days in 7/28/90 days, P(any purchase in 7 days), expected
    spend per purchase day and expected revenue in 28 days (purchases x spend)."""
    _quiet()
    data = _inputs(rfm)
    bg = models.bgnbd
    frame = data[["customer_id", "frequency", "recency", "T"]]
    out = pd.DataFrame(index=rfm.index)
    out["clv_p_alive"] = _point(bg.expected_probability_alive(data=frame))
    for days in (7, 28, 90):
        out[f"clv_expected_purchases_{days}d"] = _point(bg.expected_purchases(data=frame, future_t=days))
    out["clv_p_purchase_7d"] = 1.0 - _point(bg.expected_probability_no_purchase(data=frame, t=7))
    if models.gamma_gamma is not None:
        spend = _point(models.gamma_gamma.expected_customer_spend(
            data=data[["customer_id", "frequency", "monetary_value"]]))
    else:
        spend = np.full(len(data), models.mean_spend)
    out["clv_expected_spend"] = spend
    out["clv_expected_revenue_28d"] = out["clv_expected_purchases_28d"] * spend
    return out[CLV_COLUMNS]


class ClvPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow model: loads both fitted models and predicts the CLV columns from RFM inputs."""

    def load_context(self, context):
        self.models = ClvModels.load(context.artifacts)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict(self.models, model_input)


CLV_MODEL_NAME = "clv_bgnbd"


def fitted_parameters(models: ClvModels) -> dict[str, float]:
    """The MAP estimates (BG/NBD: r, alpha, a, b; Gamma-Gamma: p, q, v), for the MLflow run."""
    params = {}
    for prefix, model in (("bgnbd", models.bgnbd), ("gamma_gamma", models.gamma_gamma)):
        if model is None:
            continue
        posterior = model.idata.posterior
        for name in posterior.data_vars:
            values = posterior[name].values
            if values.size == 1:
                params[f"{prefix}_{name}"] = float(values.ravel()[0])
    return params


DESCRIPTION = ("BG/NBD (purchase frequency and dropout) with Gamma-Gamma (spend per order), fitted by maximum a "
               "posteriori on each user's purchase history: the statistical baseline every purchase, churn and "
               "revenue candidate must beat on the backtest, and its predictions in predictions.clv.")


def log_and_register(store, models: ClvModels, rfm: pd.DataFrame, tags: dict, fitted_users: int | None = None):
    """Log the fitted pair as one MLflow pyfunc model, register it as `clv_bgnbd` and point `champion` at it: the
    statistical baseline is refit on every run, it is not gated."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from ml.registry import CHAMPION, RegisteredModel, set_alias
    from ml.train import model_requirements

    store.activate()
    example = rfm[["user_id", *RFM_COLUMNS]].head(5)
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run(
            experiment_id=store.experiment_id(CLV_MODEL_NAME), run_name=f"clv fit {tags.get('as_of_date')}",
            tags={k: str(v) for k, v in tags.items()}) as run:
        artifacts = models.save(Path(folder))
        mlflow.log_params({"fit_method": "map", "users": len(rfm), "fitted_users": fitted_users or len(rfm),
                           "repeat_buyers": int((rfm.frequency > 0).sum()),
                           "gamma_gamma": models.gamma_gamma is not None})
        mlflow.log_metrics(fitted_parameters(models))
        mlflow.pyfunc.log_model(name="model", python_model=ClvPyfunc(), artifacts=artifacts,
                                signature=infer_signature(example, predict(models, example)),
                                pip_requirements=[*model_requirements(), _requirement("pymc-marketing")])
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", CLV_MODEL_NAME,
                                    tags={k: str(v) for k, v in tags.items()})
    set_alias(store, CLV_MODEL_NAME, CHAMPION, str(version.version))
    entry = RegisteredModel(CLV_MODEL_NAME, str(version.version), run.info.run_id, dict(tags))
    store.describe(entry, DESCRIPTION, f"{CHAMPION}: refit on {len(rfm):,} users' purchases before "
                                       f"{tags.get('as_of_date')} (the baseline is refit every run, not gated)")
    return entry


def _requirement(name: str) -> str:
    from importlib.metadata import version

    return f"{name}=={version(name)}"
