"""Asset keys that several modules use, defined once (the dbt models' keys come from the manifest)."""

import dagster as dg

CLV = dg.AssetKey(["predictions", "clv"])
CLV_TRAINING_CUTOFFS = dg.AssetKey(["predictions", "clv_training_cutoffs"])


def candidates_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["models", f"{target}_candidates"])


def champion_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["models", f"{target}_champion"])


def predictions_key(target: str) -> dg.AssetKey:
    return dg.AssetKey(["predictions", target])
