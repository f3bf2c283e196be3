"""What `shopcast status` reports: warehouse tables with row counts and the latest asset-check results."""

from __future__ import annotations

import datetime as dt

from dagster_project.settings import get_paths
from dagster_project.warehouse import connect, table_row_counts


def collect() -> dict:
    from dagster_project.runs import definitions, instance

    paths = get_paths()
    report: dict = {"shopcast_home": str(paths.home), "warehouse": str(paths.warehouse), "tables": [], "checks": []}
    if paths.warehouse.exists():
        with connect(paths.warehouse, read_only=True) as con:
            report["tables"] = [{"table": f"{s}.{t}", "rows": n} for s, t, n in table_row_counts(con)]
    check_keys = list(definitions().resolve_asset_graph().asset_check_keys)
    with instance() as inst:
        latest = inst.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    for key in sorted(check_keys, key=lambda k: k.to_user_string()):
        record = latest.get(key)
        evaluation = record.event.dagster_event.event_specific_data if record and record.event and \
            record.event.dagster_event else None
        report["checks"].append({
            "check": key.to_user_string(),
            "status": record.status.value if record else "never run",
            "passed": getattr(evaluation, "passed", None),
            "partition": record.partition if record else None,
            "at": dt.datetime.fromtimestamp(record.create_timestamp).isoformat(timespec="seconds") if record else None,
        })
    return report


def render(report: dict) -> str:
    lines = [f"warehouse: {report['warehouse']}", "", "tables:"]
    lines += [f"  {t['table']:<45} {t['rows']:>12,}" for t in report["tables"]] or ["  (none yet)"]
    lines += ["", "checks (latest):"]
    for c in report["checks"]:
        if c["status"] == "never run":
            continue
        verdict = {True: "passed", False: "FAILED", None: c["status"]}[c["passed"]]
        lines.append(f"  {c['check']:<60} {verdict:<8} {c['partition'] or ''}")
    lines += ["", "open the Dagster UI: make ui  (then http://127.0.0.1:3000)",
              f"query the warehouse: duckdb -readonly {report['warehouse']}"]
    return "\n".join(lines)
