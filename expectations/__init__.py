"""Great Expectations suites for shopcast's tables and the runner that validates one bounded batch.

No Dagster import: the Dagster asset checks in dagster_project/defs/quality.py call ``validate``.
"""

from expectations.runner import SuiteValidator, ValidationSummary

__all__ = ["SuiteValidator", "ValidationSummary", "validate"]
