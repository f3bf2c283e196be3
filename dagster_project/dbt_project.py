"""The dbt project as Dagster sees it. Kept apart from the assets module so that
`dagster-dbt project prepare-and-package --file dagster_project/dbt_project.py` can build the manifest
without importing the assets; under `dagster dev` the manifest is re-parsed on start."""

from dagster_dbt import DbtProject

from dagster_project.settings import DBT_PROJECT_DIR, configure_environment

configure_environment()  # the profile reads SHOPCAST_WAREHOUSE_PATH

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
