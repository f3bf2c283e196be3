"""Great Expectations suites for shopcast's tables and the runner that validates one bounded batch.

No Dagster import: the Dagster asset checks in dagster_project/defs/quality.py run ``SuiteValidator``s.
"""

from expectations.runner import SuiteValidator, ValidationSummary
from expectations.suites import suite_columns

__all__ = ["SuiteValidator", "ValidationSummary", "suite_columns"]
