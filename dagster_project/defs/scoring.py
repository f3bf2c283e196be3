"""Per target: score the population of the as-of date(s) with the champion, written back to the warehouse.

A target without a champion (never eligible, or never good enough) publishes nothing: the asset says why."""

import dagster as dg
from dagster_dbt import DbtCliResource

from dagster_project.asset_keys import CLV, champion_key, predictions_key
from dagster_project.defs.dbt_assets import STAGED_REVIEWS
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import MlflowStore, PipelineSettings, WarehouseResource, as_of_dates
from dagster_project.defs.reviews import with_version_review_features
from dagster_project.defs.sequences import add_scoring_tokens
from dagster_project.defs.training import with_clv
from dagster_project.markdown import frame_to_markdown
from dagster_project.targets import TARGETS
from dagster_project.warehouse import replace_dates
from ml.predict import REASON_COLUMNS, score
from ml.registry import CHAMPION, load_by_alias, version_by_alias
from ml.targets import Target

SCORING_POPULATION = dg.AssetKey(["marts", "fct_scoring_population"])
POPULATION_SQL = with_clv("marts.fct_scoring_population", "t.as_of_date between ? and ? and ({population})")


def _ensure_table(warehouse: WarehouseResource, target: Target) -> None:
    """The predictions table exists with its columns even before the target is first published, so that BI and
    the audience models can always query it."""
    reasons = ", ".join(f"{c} {'varchar' if c.count('_') == 1 else 'double'}" for c in REASON_COLUMNS)
    with warehouse.writer() as con:
        con.execute("create schema if not exists predictions")
        con.execute(f"create table if not exists predictions.{target.name} (user_id varchar, as_of_date date, "
                    f"{target.score_column} double, decile integer, {reasons}, model_name varchar, "
                    "model_version varchar, scored_at timestamp)")


def build_scoring_assets(target: Target) -> list:
    key = predictions_key(target.name)

    @dg.asset(key=key, deps=[SCORING_POPULATION, CLV, champion_key(target.name), STAGED_REVIEWS],
              group_name=target.name, partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(),
              pool="duckdb", kinds={"duckdb", "mlflow"},
              description=f"predictions.{target.name}: {target.description} Scored by models:/{target.name}@champion.")
    def predictions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                    dbt: DbtCliResource, settings: PipelineSettings) -> dg.MaterializeResult:
        dates = as_of_dates(context)
        _ensure_table(warehouse, target)
        if version_by_alias(mlflow.store(), target.name, CHAMPION) is None:
            reason = "no champion: no candidate has been eligible and good enough yet (see the champion asset)"
            context.log.warning(f"{target.name} not published: {reason}")
            return dg.MaterializeResult(metadata={"published": False, "reason": reason, "dagster/row_count": 0})
        population = warehouse.query_df(POPULATION_SQL.format(population=target.population_sql), [dates[0], dates[-1]])
        model, entry = load_by_alias(mlflow.store(), target.name, CHAMPION)
        # a sequence model (issue 24) reads each user's last events too: built for the dates, joined as tokens
        population = add_scoring_tokens(context, model, population, dbt, settings, warehouse, dates)
        # a model that reads review features (issue 25): computed by the encoder logged with its version
        population = with_version_review_features(warehouse, mlflow.store(), entry, model, population)
        scored = score(population, model, target.name, entry.version, score_column=target.score_column,
                       regression=target.is_regression, rows_scorer=settings.rows_scorer())
        with warehouse.writer() as con:
            replace_dates(con, "predictions", target.name, scored)
        top = scored.sort_values(target.score_column, ascending=False).head(10)
        return dg.MaterializeResult(metadata={
            "published": True, "dagster/row_count": len(scored), "model_version": entry.version,
            f"mean_{target.score_column}": float(scored[target.score_column].mean()),
            "preview": dg.MetadataValue.md(frame_to_markdown(top)),
        })

    @dg.asset_check(asset=key, blocking=True, partitions_def=as_of_daily, pool="duckdb",
                    description="Scores within bounds (probabilities in [0, 1], amounts >= 0), one row per user of the "
                                "target's population, model version set.")
    def predictions_are_complete(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                                 mlflow: MlflowStore) -> dg.AssetCheckResult:
        dates = as_of_dates(context)
        _ensure_table(warehouse, target)
        if version_by_alias(mlflow.store(), target.name, CHAMPION) is None:
            return dg.AssetCheckResult(passed=True, metadata={"published": False})
        found = warehouse.query_df(f"""
            select
                (select count(*) from predictions.{target.name} where as_of_date between $1 and $2) as predicted,
                (select count(*) from marts.fct_scoring_population where as_of_date between $1 and $2
                   and ({target.population_sql})) as population,
                (select count(*) from predictions.{target.name} where as_of_date between $1 and $2
                   and not coalesce({target.score_bounds_sql}, false)) as out_of_range,
                (select count(*) from predictions.{target.name} where as_of_date between $1 and $2
                   and (model_version is null or model_version = '')) as missing_version
        """, [dates[0], dates[-1]]).iloc[0]
        passed = found.predicted == found.population and found.out_of_range == 0 and found.missing_version == 0
        return dg.AssetCheckResult(passed=bool(passed), metadata={k: int(v) for k, v in found.items()})

    return [predictions, predictions_are_complete]


@dg.definitions
def scoring_defs() -> dg.Definitions:
    built = [d for t in TARGETS.values() for d in build_scoring_assets(t)]
    return dg.Definitions(assets=built[0::2], asset_checks=built[1::2])
