"""A BI stand-in for the load test: query the serving file in a loop, as a dashboard would, and record every read.

Run as ``python tests/serving_reader.py SERVING_FILE OUT_JSON STOP_FILE MAX_SECONDS MAX_READS``. Each read opens a
read-only connection, reads the manifest and every published table's row count, latest as-of date and content hash
(serving.CONTENT_HASH_SQL), and checks they are the manifest's (one publish, nothing torn or mixed). Stops when STOP_FILE appears, after MAX_SECONDS, or after MAX_READS reads.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb

from dagster_project.serving import content_hash
from dagster_project.warehouse import qualified


def read_once(path: str) -> tuple[str, list[str]]:
    """(publish id, problems) of one consistent read."""
    problems = []
    with duckdb.connect(path, read_only=True) as con:
        (publish_id, as_of) = con.execute("select publish_id, as_of_date from serving.publish").fetchone()
        for schema, table, rows, high, expected_hash in con.execute(
                "select schema, table_name, rows, max_as_of_date, content_hash from serving.published_tables"
        ).fetchall():
            has_date = con.execute("select count(*) from information_schema.columns where table_schema = ? and "
                                   "table_name = ? and column_name = 'as_of_date'", [schema, table]).fetchone()[0]
            found, latest = con.execute(
                f'select count(*), {"max(as_of_date)" if has_date else "null"} from "{schema}"."{table}"').fetchone()
            found_hash = content_hash(con, qualified(schema, table))
            if (found, latest, found_hash) != (rows, high, expected_hash):
                problems.append(f"{publish_id} {schema}.{table}: {found} rows / {latest} / content {found_hash}, "
                                f"manifest {rows} / {high} / {expected_hash}")
        scored = con.execute("select max(as_of_date) from predictions.churn_probability_7d").fetchone()[0]
        if scored is not None and scored > as_of:
            problems.append(f"{publish_id}: scores dated {scored}, after the publish's as-of date {as_of}")
    return publish_id, problems


def main(path: str, out: str, stop_file: str, max_seconds: float, max_reads: int) -> None:
    started = time.monotonic()
    reads, errors, inconsistent, publishes = 0, [], [], {}
    while reads < max_reads and time.monotonic() - started < max_seconds and not Path(stop_file).exists():
        try:
            publish_id, problems = read_once(path)
        except duckdb.Error as exc:  # recorded, not hidden: the test asserts there are none
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            publishes[publish_id] = publishes.get(publish_id, 0) + 1
            inconsistent += problems
        reads += 1
        time.sleep(0.5)  # a busy dashboard, not a denial of service: the runs and the other test worker share 2 cores
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors, "inconsistent": inconsistent,
                                     "publishes": publishes, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
