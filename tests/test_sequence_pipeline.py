"""The sequence family through Dagster (issue 24): the mart built for the training cutoffs, the tokens joined to
the training sample, the GRU a candidate of the classification targets, and scoring with a GRU champion reading
the scoring date's sequences. Needs the deep extra (PyTorch); `make test` installs it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dagster_project import runs
from tests.conftest import DEMO_AS_OF
from tests.test_pipeline import _metadata, _read

pytestmark = pytest.mark.slow


def test_the_gru_trains_on_the_sequence_mart_and_a_gru_champion_scores_with_the_dates_sequences(pipeline,
                                                                                                 monkeypatch):
    pytest.importorskip("torch", reason="the sequence family needs the deep extra (PyTorch)")
    import mlflow

    from dagster_project.asset_keys import candidates_key, predictions_key
    from dagster_project.defs.resources import MlflowStore
    from dagster_project.defs.training import TRAINING_SEQUENCES
    from dagster_project.settings import load_settings
    from ml.registry import CHAMPION, set_alias

    target = "purchase_propensity_7d"
    monkeypatch.setenv("SHOPCAST_MODEL_FAMILIES", "logistic_regression,gru")
    monkeypatch.setenv("SHOPCAST_FEATURE_SETS", "counts,sequence")
    # one target's candidates (the built home has its training sample): what the sequences change
    runs._execute("weekly_training", partition_key=DEMO_AS_OF.isoformat(),
                  asset_selection=[TRAINING_SEQUENCES, candidates_key(target)])

    built = _metadata(["training", "training_sequences"])
    sample_dates = set(_read(pipeline, "select distinct as_of_date from training.training_sample").as_of_date)
    per_date = _read(pipeline, "select as_of_date, count(distinct user_id) as users, max(position) as longest "
                               "from training.training_sequences group by 1")
    assert built["built"] is True and built["dagster/row_count"] > 0
    assert set(per_date.as_of_date) == sample_dates and (per_date.longest <= 50).all()
    # every sequence row is of a sampled user at that cutoff, from before it
    strays = _read(pipeline, """
        select count(*) from training.training_sequences s
        where not exists (select 1 from training.training_sample t where t.user_id = s.user_id
                          and t.as_of_date = s.as_of_date) or cast(s.event_ts as date) >= s.as_of_date""")
    assert strays.iloc[0, 0] == 0

    candidates = _metadata(list(candidates_key(target).path))
    assert "gru (sequence)" in candidates["candidates"]
    assert "logistic_regression (counts)" in candidates["candidates"]

    # whichever would win the gate, a GRU champion scores the day with its tokens: the GRU run registered as one
    settings = load_settings()
    store = MlflowStore(tracking_uri=settings.paths.mlflow_tracking_uri,
                        artifact_root=str(settings.paths.mlflow_artifacts)).store()
    client = store.activate()
    runs_found = client.search_runs([store.experiment_id(target)],
                                    filter_string="tags.family = 'gru'", order_by=["attributes.start_time DESC"])
    registered = mlflow.register_model(f"runs:/{runs_found[0].info.run_id}/model", target)
    set_alias(store, target, CHAMPION, registered.version)
    runs._execute("daily_scoring", partition_key=DEMO_AS_OF.isoformat(), asset_selection=[predictions_key(target)])
    scored = _read(pipeline, f"select * from predictions.{target} where as_of_date = ?", [DEMO_AS_OF])
    assert len(scored) > 0 and set(scored.model_version) == {str(registered.version)}
    assert scored.probability.between(0, 1).all()
    reasons = set(scored[["reason_1", "reason_2", "reason_3"]].stack().dropna())
    assert reasons and not any(r.startswith("seq_") for r in reasons)
    scoring_dates = set(_read(pipeline, "select distinct as_of_date from marts.fct_user_event_sequences").as_of_date)
    assert pd.Timestamp(DEMO_AS_OF) in {pd.Timestamp(d) for d in scoring_dates}
    # and the drift monitor compares its aggregated features and its score (from the tokens of both dates), not
    # the tokens themselves (a GRU champion had failed it: the training rows had no tokens)
    from dagster_project.defs.monitoring import DRIFT

    runs._execute("daily_scoring", partition_key=DEMO_AS_OF.isoformat(), asset_selection=[DRIFT])
    drift = _read(pipeline, "select feature, psi, status from monitoring.feature_drift "
                            "where target = ? and as_of_date = ?", [target, DEMO_AS_OF])
    assert not any(f.startswith("seq_") for f in drift.feature) and "count_7d" in " ".join(drift.feature)
    score = drift[drift.feature == "__score__"]
    assert len(score) == 1 and 0 <= score.psi.iloc[0] < 1, drift

    # a retrain that no longer names the sequence family still builds the champion's tokens: the gate backtests
    # the GRU champion as it is (it had failed with a KeyError on a frame without tokens)
    from dagster_project.asset_keys import champion_key

    monkeypatch.setenv("SHOPCAST_MODEL_FAMILIES", "logistic_regression")
    monkeypatch.setenv("SHOPCAST_BACKTEST_CUTOFFS", "1")
    runs._execute("weekly_training", partition_key=DEMO_AS_OF.isoformat(), asset_selection=[TRAINING_SEQUENCES])
    rebuilt = _metadata(["training", "training_sequences"])
    assert rebuilt["built"] is True and rebuilt["champions_reading_tokens"] == target
    # (in a run the gate follows the candidates, which follow the sequences: two steps here, in that order)
    runs._execute("weekly_training", partition_key=DEMO_AS_OF.isoformat(), asset_selection=[champion_key(target)])
    decision = _read(pipeline, "select incumbent, backtest_folds from monitoring.model_decisions "
                               "where target = ? order by decided_at desc limit 1", [target])
    assert decision.incumbent.iloc[0] == f"champion v{registered.version}"
    assert len(json.loads(decision.backtest_folds.iloc[0])) == 1
