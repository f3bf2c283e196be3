"""This home's targets: the default three and the optional ones its settings name (``extra_targets``; the registry is
ml/targets.py). Read once, when the code location loads, like the partitions: the assets are built per target."""

from dagster_project.settings import load_settings
from ml.targets import enabled_targets, label_horizon_days

TARGETS = enabled_targets(load_settings().extra_target_list)
# the newest training cutoff is this many days before the as-of date (ml/targets.py label_horizon_days)
LABEL_HORIZON_DAYS = label_horizon_days(TARGETS)
