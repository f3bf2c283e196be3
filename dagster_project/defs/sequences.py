"""Event sequences for the sequence models (issue 24): the mart built for the dates that need it, and the tokens
joined to the frames that training and scoring read (ml/sequences.py)."""

import datetime as dt

import dagster as dg
import pandas as pd

from dagster_project.defs.dbt_assets import build_selection, dates_per_build
from dagster_project.defs.partitions import as_of_daily
from dagster_project.defs.resources import (
    MlflowStore,
    PipelineSettings,
    ShopcastDbt,
    TrainingPolicy,
    WarehouseResource,
)
from dagster_project.defs.training import TRAINING_SAMPLE, TRAINING_SAMPLE_TABLE, TRAINING_SEQUENCES
from dagster_project.markdown import frame_to_markdown
from ml.gate import champions_reading_tokens
from ml.sequences import SEQUENCE_LENGTH, encode, sequence_length, torch_missing

TRAINING_SEQUENCES_TABLE = "training.training_sequences"
# each date's sequences read the events of the lookback before it: a build covers as many dates as keep it under this
# (dagster_project/defs/dbt_assets.dates_per_build)
EVENTS_PER_BUILD = 20_000_000
SEQUENCE_MART = "marts.fct_user_event_sequences"
SEQUENCE_COLUMNS = ("as_of_date", "user_id", "position", "event_type", "item_id", "category_id", "price_bucket",
                    "seconds_since_previous", "opens_session")


def sequences_off(training_policy: TrainingPolicy, champions_reading_tokens: list[str]) -> str | None:
    """Why neither a candidate nor a champion reads sequence tokens (so none are built), or None."""
    families = training_policy.family_list
    if (families is None or "gru" not in families) and not champions_reading_tokens:
        return "no sequence family among the model families (gru is opt-in: name it in the model_families setting)"
    return torch_missing()


def build_sequences(context, dbt: ShopcastDbt, settings: PipelineSettings, warehouse: WarehouseResource,
                    dates: list[dt.date], kept: list[dt.date]) -> list[dt.date]:
    """Build the sequence mart for those of ``dates`` it lacks, in as few dbt builds as EVENTS_PER_BUILD allows
    (each date holds up to sequence_length rows per user); ``kept``: the older dates the mart keeps. Returns the
    dates built."""
    built = set()
    if warehouse.has_table("marts", "fct_user_event_sequences"):
        built = set(warehouse.query_df(f"select distinct as_of_date from {SEQUENCE_MART} "
                                       "where as_of_date in (select unnest(?))", [dates]).as_of_date.dt.date)
    missing = sorted(set(dates) - built)
    # a date's input is the events of the lookback before it: bounded above by every event before the last date
    events = int(warehouse.scalar("select count(*) from staging.stg_shop__events where event_date < ?",
                                  [missing[-1]])) if missing else 0
    batches = dates_per_build(missing, events, EVENTS_PER_BUILD)
    for number, days in enumerate(batches, start=1):
        context.log.info(f"dbt build of the event sequences of {', '.join(map(str, days))} "
                         f"({number} of {len(batches)} builds)")
        run_vars = {**settings.dbt_run_vars(days), "sequence_dates_kept": sorted({d.isoformat() for d in [*kept, *dates]})}
        build_selection(dbt, "fct_user_event_sequences", run_vars, name="event_sequences")
    return missing


def with_tokens(frame: pd.DataFrame, events: pd.DataFrame, length: int) -> pd.DataFrame:
    """``frame`` (user_id, as_of_date, ...) with its rows' sequence tokens as extra columns."""
    tokens = encode(events, frame[["user_id", "as_of_date"]].reset_index(drop=True), length)
    return pd.concat([frame.reset_index(drop=True), tokens], axis=1)


def load_tokens_for_training(warehouse: WarehouseResource, sample: pd.DataFrame) -> pd.DataFrame:
    """The training sample with its tokens, where the training_sequences asset built them for this sample; the
    sample unchanged where it did not (sequence models off: the sequence family is then left out, with why)."""
    if not warehouse.has_table("training", "training_sequences"):
        return sample
    ends = warehouse.scalar(f"select max(as_of_date) from {TRAINING_SEQUENCES_TABLE}")
    if ends is None or pd.Timestamp(ends) != pd.Timestamp(sample["as_of_date"].max()):
        raise RuntimeError(f"{TRAINING_SEQUENCES_TABLE} ends at {ends}, {TRAINING_SAMPLE_TABLE} at "
                           f"{sample['as_of_date'].max()}: materialize training/training_sequences with the sample")
    events = warehouse.query_df(f"select {', '.join(SEQUENCE_COLUMNS)} from {TRAINING_SEQUENCES_TABLE}")
    return with_tokens(sample, events, SEQUENCE_LENGTH)


def add_scoring_tokens(context, model, population: pd.DataFrame, dbt: ShopcastDbt, settings: PipelineSettings,
                       warehouse: WarehouseResource, dates: list[dt.date]) -> pd.DataFrame:
    """The scoring population with the tokens the model reads, the mart built for the dates first; unchanged for a
    model without tokens."""
    length = sequence_length(getattr(model, "feature_names_in_", []))
    if not length:
        return population
    build_sequences(context, dbt, settings, warehouse, dates, kept=[])
    events = warehouse.query_df(
        f"select {', '.join(SEQUENCE_COLUMNS)} from {SEQUENCE_MART} where as_of_date in (select unnest(?)) "
        "and position <= ?", [dates, length])
    return with_tokens(population, events, length)


@dg.asset(key=TRAINING_SEQUENCES, deps=[TRAINING_SAMPLE], group_name="training", partitions_def=as_of_daily,
          backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb", kinds={"dbt", "duckdb"},
          description="The last events of the training sample's users at each training cutoff "
                      "(marts.fct_user_event_sequences, built for those dates by dbt), what the sequence families "
                      "read as tokens beside the features, and what the gate backtests a sequence champion on. Empty, "
                      "with the reason, when neither a candidate nor a champion reads them (no sequence family among "
                      "the model families, and no champion of one), or PyTorch is not installed (the deep extra).")
def training_sequences(context: dg.AssetExecutionContext, dbt: ShopcastDbt, settings: PipelineSettings,
                       warehouse: WarehouseResource, training_policy: TrainingPolicy,
                       mlflow: MlflowStore) -> dg.MaterializeResult:
    champions = champions_reading_tokens(mlflow.store())
    why = sequences_off(training_policy, champions)
    if why:
        context.log.info(f"no sequence tokens for training: {why}")
        with warehouse.writer() as con:
            con.execute(f"drop table if exists {TRAINING_SEQUENCES_TABLE}")
        return dg.MaterializeResult(metadata={"built": False, "reason": why, "dagster/row_count": 0})
    dates = sorted(warehouse.query_df(f"select distinct as_of_date from {TRAINING_SAMPLE_TABLE}")
                   .as_of_date.dt.date)
    built = build_sequences(context, dbt, settings, warehouse, dates, kept=dates)
    with warehouse.writer() as con:
        con.execute(f"create or replace table {TRAINING_SEQUENCES_TABLE} as "
                    f"select s.* from {SEQUENCE_MART} s where exists (select 1 from {TRAINING_SAMPLE_TABLE} t "
                    "where t.user_id = s.user_id and t.as_of_date = s.as_of_date) "
                    "order by s.as_of_date, s.user_id, s.position")
    per_date = warehouse.query_df(f"select as_of_date, count(distinct user_id) as users, count(*) as events "
                                  f"from {TRAINING_SEQUENCES_TABLE} group by 1 order by 1")
    return dg.MaterializeResult(metadata={
        "built": True, "champions_reading_tokens": ", ".join(champions) or "none", "dagster/row_count": int(per_date.events.sum()), "dates_computed": len(built),
        "sequence_length": SEQUENCE_LENGTH, "per_date": dg.MetadataValue.md(frame_to_markdown(per_date)),
    })


@dg.definitions
def sequence_defs() -> dg.Definitions:
    return dg.Definitions(assets=[training_sequences])
