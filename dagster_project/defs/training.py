"""Per target: candidates (search, MLflow runs, registration) → champion (the promotion gate).

The assets are thin: the work is in ml/ (train.py, gate.py). One asset group per target. A target whose training
data are not eligible (too few examples of a class) is not trained: the candidates asset says why, and the champion
(if any) keeps scoring.
"""

import hashlib
import json

import dagster as dg
import pandas as pd

from dagster_project import decisions
from dagster_project.asset_keys import CLV, candidates_key, champion_key
from dagster_project.dbt_project import dbt_project
from dagster_project.defs.clv import CUTOFFS_KEY
from dagster_project.defs.dbt_assets import STAGED_REVIEWS, TRAINING_SET
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import (
    MlflowStore,
    PipelineSettings,
    TrainingPolicy,
    WarehouseResource,
    as_of_dates,
)
from dagster_project.defs.reviews import training_review_features, with_version_review_features
from dagster_project.faults import failpoint
from dagster_project.markdown import frame_to_markdown
from dagster_project.targets import TARGETS
from dagster_project.warehouse import hash_sample_sql
from ml.gate import apply, backtest_candidate, decide, register
from ml.registry import version_for_date
from ml.targets import Target
from ml.train import NotEligible, train_candidates


def with_clv(table: str, where: str = "true") -> str:
    """Rows of a mart with the BG/NBD outputs of the same user and as-of date as extra columns (NULL where no fit)."""
    return (f"select t.*, c.* exclude (user_id, as_of_date, model_name, model_version, scored_at) from {table} t "
            f"left join predictions.clv c on c.user_id = t.user_id and c.as_of_date = t.as_of_date where {where}")


def training_sample_sql(rows_per_cutoff: int) -> str:
    """The training set, at most about ``rows_per_cutoff`` users per cutoff (warehouse.hash_sample_sql: the same
    users at every cutoff and on every run, the label rate kept in expectation, a large panel never loaded whole);
    the training-set suite validates the same rows (what training reads)."""
    return hash_sample_sql("marts.fct_training_set", rows_per_cutoff)


def training_sql(rows_per_cutoff: int) -> str:
    """The training sample (training_sample_sql) with its BG/NBD columns."""
    return with_clv(training_sample_sql(rows_per_cutoff))


TRAINING_SAMPLE = dg.AssetKey(["training", "training_sample"])
TRAINING_SEQUENCES = dg.AssetKey(["training", "training_sequences"])  # defs/sequences.py
TRAINING_SAMPLE_TABLE = "training.training_sample"


@dg.asset(key=TRAINING_SAMPLE, deps=[TRAINING_SET, CLV, CUTOFFS_KEY], group_name="training",
          partitions_def=as_of_daily, backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
          kinds={"duckdb"},
          description="The rows every target trains and is backtested on: the training set's hash sample "
                      "(training_rows_per_cutoff users a cutoff at most) with its BG/NBD columns, drawn "
                      "once per training run in the warehouse, validated by the training-set suite, then read by "
                      "each target's candidates and gate.")
def training_sample(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                    training_policy: TrainingPolicy) -> dg.MaterializeResult:
    # Drawn once, not by each of the six readers: at 100M events the join and sample cost ~50 s a read.
    # Ordered, so that a refit on the same rows sees them in the same order.
    with warehouse.writer() as con:
        con.execute("create schema if not exists training")
        con.execute(f"create or replace table {TRAINING_SAMPLE_TABLE} as "
                    f"select * from ({training_sql(training_policy.rows_per_cutoff)}) order by as_of_date, user_id")
    # per cutoff: users, and the mean of each target's label (a rate, or the mean revenue)
    labels = ", ".join(f"avg({t.label}) as {t.label}" for t in TARGETS.values())
    per_cutoff = warehouse.query_df(f"select as_of_date, count(*) as users, {labels} from {TRAINING_SAMPLE_TABLE} "
                                    "group by 1 order by 1")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": int(per_cutoff.users.sum()), "cutoffs": len(per_cutoff),
        "rows_per_cutoff_at_most": training_policy.rows_per_cutoff,
        "training_set_rows": warehouse.scalar("select count(*) from marts.fct_training_set"),
        "per_cutoff": dg.MetadataValue.md(frame_to_markdown(per_cutoff, float_format="{:.4f}")),
    })


def load_training_sample(warehouse: WarehouseResource) -> pd.DataFrame:
    """The sample the training_sample asset drew; refused when it predates the training set (a run that selected
    the models without it), so that no target trains on an older panel than the one validated."""
    sample_ends, training_set_ends = warehouse.query_df(
        f"select (select max(as_of_date) from {TRAINING_SAMPLE_TABLE}), "
        "(select max(as_of_date) from marts.fct_training_set)").iloc[0]
    if sample_ends != training_set_ends:
        raise RuntimeError(f"{TRAINING_SAMPLE_TABLE} ends at {sample_ends}, marts.fct_training_set at "
                           f"{training_set_ends}: materialize training/training_sample with the models")
    return warehouse.query_df(f"select * from {TRAINING_SAMPLE_TABLE}")


def _training_frame(warehouse: WarehouseResource, target: Target) -> pd.DataFrame:
    """The training sample, with the sequence tokens where they were built (the classification targets: the
    sequence families are classifiers)."""
    from dagster_project.defs.sequences import load_tokens_for_training

    sample = load_training_sample(warehouse)
    return sample if target.is_regression else load_tokens_for_training(warehouse, sample)


def _manifest_checksum() -> str:
    return hashlib.sha256(dbt_project.manifest_path.read_bytes()).hexdigest()[:16]


def _metrics_table(rows: dict[str, dict], regression: bool) -> str:
    shown = (["normalized_gini", "spearman", "predicted_over_realised_total", "mae", "rmse",
              "decile_calibration_error", "capture_top_decile"]
             if regression else ["roc_auc", "pr_auc", "expected_over_observed", "ece", "calibration_slope",
                                 "log_loss", "brier", "precision", "recall", "f1", "lift_top_decile"])
    return frame_to_markdown(pd.DataFrame.from_dict(rows, orient="index")[shown].rename_axis("model").reset_index(),
                             float_format="{:.3f}")


def build_target_assets(target: Target) -> list:
    candidates_asset, champion_asset = candidates_key(target.name), champion_key(target.name)

    @dg.asset(key=candidates_asset, deps=[TRAINING_SAMPLE, TRAINING_SEQUENCES, STAGED_REVIEWS],
              group_name=target.name, partitions_def=as_of_daily,
              backfill_policy=dg.BackfillPolicy.single_run(),
              kinds={"scikit-learn", "mlflow"}, pool="duckdb",
              description=f"Candidate models for {target.name}: {target.description} Best one registered.")
    def candidates(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                   training_policy: TrainingPolicy, settings: PipelineSettings) -> dg.MaterializeResult:
        as_of = as_of_dates(context)[-1].isoformat()
        frame, review_features, reviews_done = training_review_features(
            warehouse, _training_frame(warehouse, target), training_policy.text_model_dir,
            settings.review_features_cache)
        context.log.info(f"{target.name}: {reviews_done}")
        try:
            outcome = train_candidates(frame, target, mlflow.store(), budget_seconds=training_policy.budget_seconds,
                                       families=training_policy.family_list,
                                       feature_set_names=training_policy.feature_set_list,
                                       eligibility=training_policy.eligibility(), progress=context.log.info,
                                       allow_personal_features=training_policy.allow_personal_features,
                                       max_training_rows=training_policy.max_training_rows,
                                       review_features=review_features,
                                       purge=training_policy.purge_overlapping_labels,
                                       tags={"dagster_run_id": context.run.run_id, "as_of_date": as_of,
                                             "dbt_manifest_checksum": _manifest_checksum()})
        except NotEligible as not_eligible:  # an expected outcome on small or young data, not an error
            context.log.warning(f"{target.name} not trained: {not_eligible}")
            return dg.MaterializeResult(metadata={"eligible": False, "reason": str(not_eligible),
                                                  "training_set_rows_loaded": len(frame),
                                                  "review_features": reviews_done})
        version = register(mlflow.store(), target, outcome.best.run_id,
                           {"as_of_date": as_of, "family": outcome.best.family,
                            "feature_set": outcome.best.feature_set, "dagster_run_id": context.run.run_id,
                            "quality_problems": "; ".join(outcome.quality_problems),
                            "fold_scores": json.dumps(outcome.best.fold_scores),
                            "validation_split": "purged" if outcome.split.purged else "overlapping",
                            **{k: round(v, 6) for k, v in outcome.best.metrics.items()}})
        failpoint("training.after_register")
        table = {c.name: c.metrics for c in outcome.candidates} | {f"baseline ({outcome.baseline_name})": outcome.baseline}
        return dg.MaterializeResult(metadata={
            "eligible": True,
            "candidates": dg.MetadataValue.md(_metrics_table(table, target.is_regression)),
            "best_family": outcome.best.family,
            "best_feature_set": outcome.best.feature_set,
            "registered_version": version.version,
            "quality_problems": "; ".join(outcome.quality_problems) or "none",
            **({"calibration": f"{outcome.best.calibration.method} on {outcome.best.calibration.as_of} "
                               f"({outcome.best.calibration.rows} users)",
                "reliability": dg.MetadataValue.md(frame_to_markdown(outcome.reliability, float_format="{:.3f}"))}
               if outcome.best.calibration else {}),
            "validation_as_of_date": outcome.split.valid_as_of,
            "validation_split": outcome.split.describe(target.horizon_days),
            "training_as_of_dates": ", ".join(outcome.split.train_as_of),
            "training_rows": len(outcome.split.train),
            "training_set_rows_loaded": len(frame),
            "review_features": reviews_done,
            "training_set_rows": warehouse.scalar("select count(*) from marts.fct_training_set"),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_link(outcome.parent_run_id)),
            **{f"best_{k}": float(v) for k, v in outcome.best.metrics.items()},
        })

    @dg.asset(key=champion_asset, deps=[candidates_asset], group_name=target.name, partitions_def=as_of_daily,
              backfill_policy=dg.BackfillPolicy.single_run(),
              kinds={"mlflow"}, pool="duckdb",
              description=f"The promotion gate for {target.name}: the candidate is backtested against the champion "
                          "(or the baseline) on the last closed cutoffs; champion or challenger. Every decision is "
                          "appended to monitoring.model_decisions.")
    def champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowStore,
                 training_policy: TrainingPolicy) -> dg.MaterializeResult:
        as_of = as_of_dates(context)[-1].isoformat()
        store, trigger = mlflow.store(), decisions.trigger_of(context.run.tags)
        candidate = version_for_date(store, target.name, as_of)
        if candidate is None:
            reason = f"no candidate for {as_of}: the training data were not eligible (see the candidates asset)"
            context.log.warning(f"{target.name}: {reason}; the champion, if any, stays")
            with warehouse.writer() as con:
                decisions.record(con, as_of_date=as_of, target=target.name, trigger=trigger, promoted=False,
                                 dagster_run_id=context.run.run_id, decision="none", reason=reason)
            return dg.MaterializeResult(metadata={"decision": "none", "promoted": False, "reason": reason})
        frame = _training_frame(warehouse, target)
        tested = backtest_candidate(
            store, target, candidate, frame, folds=training_policy.backtest_cutoffs,
            min_examples_per_class=max(1, training_policy.min_examples_per_class // 10),
            max_training_rows=training_policy.max_training_rows, purge=training_policy.purge_overlapping_labels,
            frame_for=lambda version, model, rows: with_version_review_features(warehouse, store, version, model, rows))
        problems = [p for p in candidate.tags.get("quality_problems", "").split("; ") if p]
        decision = decide(target, candidate.version, tested, training_policy.margin, problems)
        apply(store, decision)
        context.log.info(decision.reason)
        with warehouse.writer() as con:
            decisions.record(con, as_of_date=as_of, target=target.name, trigger=trigger,
                             dagster_run_id=context.run.run_id, decision=decision.alias, promoted=decision.promoted,
                             candidate_version=decision.candidate_version, candidate_family=candidate.tags["family"],
                             incumbent=decision.incumbent, metric=decision.metric,
                             candidate_score=decision.candidate_score, incumbent_score=decision.incumbent_score,
                             margin=decision.margin, backtest_folds=decision.folds, reason=decision.reason)
        return dg.MaterializeResult(metadata={
            "decision": decision.alias, "promoted": decision.promoted, "reason": decision.reason,
            "trigger": trigger, "candidate_version": decision.candidate_version, "incumbent": decision.incumbent,
            "candidate_score": decision.candidate_score, "incumbent_score": decision.incumbent_score,
            "backtest": dg.MetadataValue.md(frame_to_markdown(pd.DataFrame(decision.folds), float_format="{:.4f}")),
        })

    return [candidates, champion]


@dg.definitions
def training_defs() -> dg.Definitions:
    return dg.Definitions(assets=[training_sample, *(a for t in TARGETS.values() for a in build_target_assets(t))])

