"""The dbt project as Dagster sees it. Kept apart from the assets module so that
`dagster-dbt project prepare-and-package --file dagster_project/dbt_project.py` can build the manifest
without importing the assets; under `dagster dev` the manifest is re-parsed on start.

dbt gets every value that comes from the settings or the target registry as vars (the profile's warehouse path
too), on every invocation, the manifest's parse included (what a run decides goes apart: defs/resources.py
ShopcastDbt)."""

import json

from dagster_dbt import DbtProject

from dagster_project.settings import DBT_PROJECT_DIR, load_settings

PARSE_VARS = load_settings().dbt_vars()

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR,
                         prepare_project_cli_args=["parse", "--quiet", "--vars", json.dumps(PARSE_VARS)])
dbt_project.prepare_if_dev()
