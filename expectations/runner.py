"""Validate one bounded pandas batch against a suite in a Great Expectations file context.

The file context (results, Data Docs) lives under ``<home>/gx``: state, not source. The suites come from
``expectations/suites.py``: a run writes its suite into the context whenever the stored one differs from what the
code builds, so the code is the source of truth.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# before Great Expectations is first imported (in the functions below: importing it takes seconds that every
# process loading the pipeline's definitions paid, most of which never validate anything)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

from expectations.data_docs import localize, page_url
from expectations.suites import build_suite

DATASOURCE = "shopcast_batches"
RESULT_FORMAT = "SUMMARY"  # the checkpoints' (a stored checkpoint with another format is rewritten)
# The arguments of an expectation that say what was allowed (shown beside the observed value when it fails).
BOUND_KWARGS = ("min_value", "max_value", "value_set", "type_", "regex", "mostly", "strict_min", "strict_max")


@dataclass
class ValidationSummary:
    suite: str
    batch: str
    success: bool
    evaluated: int
    failed: list[dict] = field(default_factory=list)
    data_docs_url: str | None = None
    result_identifier: object = None  # the validation result's, for its page in the Data Docs

    def markdown(self) -> str:
        lines = [(f"**{self.suite}** on `{self.batch}`: {'passed' if self.success else 'FAILED'} "
                  f"({self.evaluated - len(self.failed)}/{self.evaluated} expectations)")]
        if self.failed:
            lines += ["", "| expectation | column | observed | allowed |", "|---|---|---|---|"]
            lines += [f"| {f['expectation']} | {f.get('column') or ''} | {f['observed']} | {f.get('bound') or ''} |"
                      for f in self.failed]
        return "\n".join(lines)


def _context(gx_dir: Path):
    import great_expectations as gx

    gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    return context


def _expectations(suite) -> list[str]:
    """A suite's expectations as canonical text, without the ids the store gives them."""
    return sorted(json.dumps({k: v for k, v in e.items() if k != "id"}, sort_keys=True, default=str)
                  for e in suite.to_json_dict()["expectations"])


class SuiteValidator:
    """One suite, set up once in the file context, run on as many bounded batches as needed.

    Data Docs are rebuilt once by ``finish`` rather than after every batch: rebuilding them is the slow part.
    """

    def __init__(self, gx_dir: Path, suite_name: str, **params):
        import great_expectations as gx

        self.context = _context(Path(gx_dir))
        self.suite_name = suite_name
        source = self.context.data_sources.add_or_update_pandas(DATASOURCE)
        try:
            asset = source.get_asset(suite_name)
        except LookupError:
            asset = source.add_dataframe_asset(suite_name)
        try:
            batch_definition = asset.get_batch_definition("whole_dataframe")
        except KeyError:
            batch_definition = asset.add_batch_definition_whole_dataframe("whole_dataframe")
        built = build_suite(suite_name, **params)
        self.checkpoint = self._stored_checkpoint(built)
        if self.checkpoint is None:  # a new home, or the suite's code changed since it was stored
            suite = self.context.suites.add_or_update(built)
            definition = self.context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
            )
            self.checkpoint = self.context.checkpoints.add_or_update(
                gx.Checkpoint(name=suite_name, validation_definitions=[definition], result_format=RESULT_FORMAT)
            )

    def _stored_checkpoint(self, built):
        """The checkpoint stored by an earlier run, if it validates exactly ``built``'s expectations (compared
        without their ids) on this suite's batch: storing the suite again compares every expectation with every
        other (feat_user_daily's 96 took 3 s a run), and the stored one is what a run would write."""
        from great_expectations.exceptions import DataContextError

        try:
            checkpoint = self.context.checkpoints.get(self.suite_name)
        except DataContextError:
            return None
        definitions = checkpoint.validation_definitions
        if (len(definitions) != 1 or checkpoint.result_format != RESULT_FORMAT
                or definitions[0].data.data_asset.name != self.suite_name):
            return None
        stored = definitions[0].suite
        same = stored.name == built.name and _expectations(stored) == _expectations(built)
        return checkpoint if same else None

    def run(self, df: pd.DataFrame, batch: str) -> ValidationSummary:
        import great_expectations as gx

        result = self.checkpoint.run(batch_parameters={"dataframe": df}, run_id=gx.RunIdentifier(run_name=batch))
        ((identifier, validation),) = result.run_results.items()
        failed = [
            {
                "expectation": r.expectation_config.type,
                "column": r.expectation_config.kwargs.get("column")
                or r.expectation_config.kwargs.get("column_list"),
                "observed": r.result.get("observed_value", r.result.get("unexpected_count")),
                "bound": ", ".join(f"{k}={v}" for k, v in r.expectation_config.kwargs.items()
                                   if k in BOUND_KWARGS and v is not None) or None,
            }
            for r in validation.results
            if not r.success
        ]
        return ValidationSummary(
            suite=self.suite_name,
            batch=batch,
            success=bool(result.success),
            evaluated=int(validation.statistics["evaluated_expectations"]),
            failed=failed,
            result_identifier=identifier,
        )

    def finish(self, summaries: list[ValidationSummary], data_docs_url: str) -> list[ValidationSummary]:
        """Rebuild Data Docs, make them render offline (their scripts and styles from the site itself), and stamp
        each summary with its validation page's http address under ``data_docs_url`` (where `shopcast ui` serves
        the site: a browser refuses file:// links from the Dagster UI, and the address follows the home).

        Only this run's pages are rendered (its validations, its suite, the index): a whole rebuild renders every
        validation the home ever stored, a cost that grows with each daily run (1.1 s at 14 validations here;
        a year of daily runs' checks would take minutes on every run)."""
        from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

        self.context.build_data_docs(resource_identifiers=[*(s.result_identifier for s in summaries),
                                                           ExpectationSuiteIdentifier(name=self.suite_name)])
        (index,) = [site["site_url"] for site in self.context.get_docs_sites_urls()]
        site = _path(index).parent
        localize(site)
        for summary in summaries:
            (page,) = [s["site_url"] for s in self.context.get_docs_sites_urls(
                resource_identifier=summary.result_identifier)]
            summary.data_docs_url = page_url(site, _path(page), data_docs_url)
        return summaries


def _path(file_url: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(file_url).path))

