"""The statistical baseline: BG/NBD + Gamma-Gamma fitted per as-of date on marts.feat_user_rfm (ml/clv.py).

predictions.clv holds, per user and as-of date, P(alive), expected purchases in 7/28/90 days, expected spend and
28-day revenue. The rows of the run's as-of date are published predictions (the fit is logged and registered in
MLflow as `clv_bgnbd`); the rows of the training cutoffs, each fitted only on data before its own date, are inputs
of the ML models and the baseline they must beat.
"""

import dagster as dg
import pandas as pd

from dagster_project.asset_keys import CLV, CLV_TRAINING_CUTOFFS
from dagster_project.defs.dbt_assets import TRAINING_CUTOFF_FEATURES
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import MlflowStore, PipelineSettings, WarehouseResource, as_of_dates
from dagster_project.markdown import frame_to_markdown
from dagster_project.warehouse import replace_dates
from ml import clv

CLV_TABLE_DDL = """
create schema if not exists predictions;
create table if not exists predictions.clv (
    user_id varchar, as_of_date date, clv_p_alive double, clv_expected_purchases_7d double,
    clv_expected_purchases_28d double, clv_expected_purchases_90d double, clv_p_purchase_7d double,
    clv_expected_spend double, clv_expected_revenue_28d double, model_name varchar, model_version varchar,
    scored_at timestamp
)
"""


CUTOFFS_KEY = CLV_TRAINING_CUTOFFS


def _fit_dates(context, warehouse: WarehouseResource, mlflow: MlflowStore, dates: list, published: set,
               fit_users: int) -> dict:
    """Fit BG/NBD per date on marts.feat_user_rfm (on at most ``fit_users`` of its users: ml.clv.fit_sample) and
    write every user's outputs of those dates into predictions.clv; the fits of ``published`` dates are logged and
    registered (they score users), the others are inputs of training."""
    rfm = warehouse.query_df("select * from marts.feat_user_rfm where as_of_date in (select unnest(?))", [dates]) \
        if dates else pd.DataFrame(columns=["as_of_date"])
    frames, skipped, registered = [], {}, None
    for as_of, users in rfm.groupby("as_of_date"):
        try:
            fitted_on = clv.fit_sample(users, fit_users)
            models = clv.fit(fitted_on)
        except clv.NotEnoughHistory as too_little:  # young or tiny data: no baseline for this date, said in the metadata
            skipped[str(as_of.date())] = str(too_little)
            continue
        version = "refit per cutoff"
        if as_of.date() in published:
            registered = clv.log_and_register(mlflow.store(), models, users, {"as_of_date": str(as_of.date()),
                                                                               "dagster_run_id": context.run.run_id},
                                                  fitted_users=len(fitted_on))
            version = registered.version
        frames.append(pd.concat([users[["user_id", "as_of_date"]].reset_index(drop=True),
                                 clv.predict(models, users).reset_index(drop=True)], axis=1)
                      .assign(model_name=clv.CLV_MODEL_NAME, model_version=version,
                              scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None)))
    with warehouse.writer() as con:
        con.execute(CLV_TABLE_DDL)
        if frames:
            replace_dates(con, "predictions", "clv", pd.concat(frames, ignore_index=True))
    for as_of, reason in skipped.items():
        context.log.warning(f"no BG/NBD fit for {as_of}: {reason}")
    scored = pd.concat(frames) if frames else pd.DataFrame(columns=["as_of_date"])
    return {"scored": scored, "skipped": skipped, "registered": registered}


@dg.asset(key=CLV, deps=[dg.AssetKey(["marts", "feat_user_rfm"])], group_name="clv",
          partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"pymc", "mlflow", "duckdb"},
          description="BG/NBD + Gamma-Gamma per as-of date: P(alive), expected purchases (7/28/90 days), expected "
                      "spend and 28-day revenue; the baseline every ML target must beat, and features of the ML models.")
def clv_predictions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: PipelineSettings,
                    mlflow: MlflowStore) -> dg.MaterializeResult:
    run_dates = as_of_dates(context)
    fitted = _fit_dates(context, warehouse, mlflow, run_dates, set(run_dates), settings.clv_fit_users)
    scored, registered = fitted["scored"], fitted["registered"]
    latest = scored[scored.as_of_date.dt.date == run_dates[-1]] if len(scored) else scored
    return dg.MaterializeResult(metadata={
        "dates_fitted": scored.as_of_date.nunique(), "fit_users_at_most": settings.clv_fit_users, "dates_skipped": dg.MetadataValue.json(fitted["skipped"]),
        "dagster/row_count": len(scored), "registered_version": registered.version if registered else "none",
        "summary": dg.MetadataValue.md(frame_to_markdown(latest[clv.CLV_COLUMNS].describe().T.reset_index()
                                                         .rename(columns={"index": "column"}), float_format="{:.3f}")
                                       if len(latest) else "no fit for the run's as-of date"),
    })


@dg.asset(key=CUTOFFS_KEY, deps=[dg.AssetKey(["marts", "feat_user_rfm"]), TRAINING_CUTOFF_FEATURES], group_name="clv",
          partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
          kinds={"pymc", "duckdb"},
          description="BG/NBD at the training cutoffs of the run's (last) date that have no fit yet, each fitted only on "
                      "data before its own date, written to predictions.clv: inputs and baseline of training. Runs "
                      "with training, not daily: a cutoff scored by an earlier daily run already has its fit.")
def clv_training_cutoffs(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: PipelineSettings,
                         mlflow: MlflowStore) -> dg.MaterializeResult:
    # A cutoff's fit uses only data before its date, so a date fitted before (as a cutoff, or scored by a daily
    # run) is final: fit only the cutoffs missing.
    fitted = set(warehouse.query_df("select distinct as_of_date from predictions.clv").as_of_date.dt.date) \
        if warehouse.has_table("predictions", "clv") else set()
    # the cutoffs of the run's last date: the date training trains for (training.py), and whose cutoffs'
    # features training_cutoff_features computes
    needed = set(settings.training_cutoff_dates(as_of_dates(context)[-1]))
    result = _fit_dates(context, warehouse, mlflow, sorted(needed - fitted), set(), settings.clv_fit_users)
    return dg.MaterializeResult(metadata={
        "cutoffs": len(needed), "already_fitted": len(needed & fitted),
        "dates_fitted": result["scored"].as_of_date.nunique(), "dagster/row_count": len(result["scored"]),
        "dates_skipped": dg.MetadataValue.json(result["skipped"]), "table": "predictions.clv",
    })


@dg.asset_check(asset=CLV, blocking=True, partitions_def=as_of_daily, pool="duckdb",
                description="Every user of feat_user_rfm at the run's date has BG/NBD outputs in range (when the date "
                            "could be fitted): P(alive) and P(purchase) in [0, 1], expectations >= 0.")
def clv_predictions_are_complete(context: dg.AssetCheckExecutionContext,
                                 warehouse: WarehouseResource) -> dg.AssetCheckResult:
    as_of = as_of_dates(context)[-1]
    found = warehouse.query_df("""
        select
            (select count(*) from marts.feat_user_rfm where as_of_date = $1) as rfm_users,
            (select count(*) from predictions.clv where as_of_date = $1) as scored,
            (select count(*) from predictions.clv where as_of_date = $1 and not (
                clv_p_alive between 0 and 1 and clv_p_purchase_7d between 0 and 1
                and clv_expected_purchases_7d >= 0 and clv_expected_purchases_90d >= clv_expected_purchases_28d
                and clv_expected_purchases_28d >= clv_expected_purchases_7d and clv_expected_spend >= 0)) as out_of_range
    """, [as_of]).iloc[0]
    fitted = found.scored > 0
    passed = (not fitted or found.scored == found.rfm_users) and found.out_of_range == 0
    return dg.AssetCheckResult(passed=bool(passed), metadata={"fitted": bool(fitted),
                                                               **{k: int(v) for k, v in found.items()}})
