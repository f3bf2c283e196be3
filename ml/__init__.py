"""shopcast's model library: plain scikit-learn and MLflow code, no Dagster import."""
