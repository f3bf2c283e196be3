"""What `shopcast status` reports: warehouse tables with row counts and the latest asset-check results."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from dagster_project.serving import serving_path
from dagster_project.settings import get_paths
from dagster_project.targets import TARGETS
from dagster_project.warehouse import column_exists, connect, qualified, table_exists, table_row_counts


def collect() -> dict:
    from dagster_project.runs import asset_check_keys, instance

    paths = get_paths()
    report: dict = {"shopcast_home": str(paths.home), "warehouse": str(paths.warehouse),
                    "serving": str(serving_path(paths.serving)), "tables": [], "checks": []}
    if paths.warehouse.exists():
        with connect(paths.warehouse, read_only=True) as con:
            report["tables"] = [{"table": f"{s}.{t}", "rows": n} for s, t, n in table_row_counts(con)]
            report["loads"] = _loads(con)
            report["audiences"] = _audiences(con)
            report["realised_by_week"] = _realised_by_week(con)
            report["decisions"] = _decisions(con)
            report["recommendations"] = _recommendations(con, paths)
    report["targets"] = [_target_status(name, paths) for name in TARGETS]
    check_keys = asset_check_keys()
    with instance() as inst:
        latest = inst.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
        for target in report["targets"]:
            target["not_published_reason"] = _publication(inst, target["target"])
    for key in sorted(check_keys, key=lambda k: k.to_user_string()):
        record = latest.get(key)
        evaluation = record.event.dagster_event.event_specific_data if record and record.event and \
            record.event.dagster_event else None
        report["checks"].append({
            "check": key.to_user_string(),
            "status": record.status.value if record else "never run",
            "passed": getattr(evaluation, "passed", None),
            # a WARN check that did not pass warns; an ERROR one fails (what blocks downstream when blocking)
            "severity": evaluation.severity.value if getattr(evaluation, "severity", None) is not None else None,
            "partition": record.partition if record else None,
            "at": dt.datetime.fromtimestamp(record.create_timestamp).isoformat(timespec="seconds") if record else None,
        })
    return report


CLASSIFICATION_SHOWN = ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1", "lift_top_decile")
REGRESSION_SHOWN = ("normalized_gini", "spearman", "mae", "rmse", "decile_calibration_error", "capture_top_decile")


def _publication(inst, name: str) -> str | None:
    """Why a target published nothing in its latest run (not eligible, or no champion), from the assets' metadata."""
    from dagster_project.asset_keys import candidates_key, champion_key, predictions_key

    for key in (candidates_key(name), champion_key(name), predictions_key(name)):
        event = inst.get_latest_materialization_event(key)
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        if metadata.get("eligible") and not metadata["eligible"].value or \
                metadata.get("published") and not metadata["published"].value:
            return str(metadata["reason"].value)
    return None


def _loads(con) -> list[dict]:
    """Per loaded file: rows read, accepted, rejected by reason, duplicates (raw.load_audit)."""
    if not table_exists(con, "raw", "load_audit"):
        return []
    rows = con.execute(
        "select source_file, source_format, rows_read, rows_accepted, rows_rejected, rows_duplicate, "
        "cast(rejected_by_reason as varchar), loaded_at from raw.load_audit order by loaded_at").fetchall()
    return [{"file": f, "format": fmt, "read": r, "accepted": a, "rejected": j, "duplicate": d,
             "rejected_by_reason": json.loads(reasons) if reasons else {}, "loaded_at": str(at)}
            for f, fmt, r, a, j, d, reasons, at in rows]


def _realised_by_week(con) -> list[dict]:
    """Realised performance of past predictions, averaged per target and week of as-of date."""
    if not table_exists(con, "monitoring", "prediction_performance"):
        return []
    # the recommendation lists' Recall@10 (a home whose table predates them has no such column)
    recall = "avg(recall_at_10)" if column_exists(con, "monitoring", "prediction_performance", "recall_at_10") \
        else "null"
    rows = con.execute(f"""
        select target, cast(date_trunc('week', as_of_date) as date) as week, count(*) as dates,
               string_agg(distinct model_version, ',' order by model_version) as versions, sum(users) as predictions,
               avg(roc_auc) as roc_auc, avg(pr_auc) as pr_auc, avg(lift_top_decile) as lift_top_decile,
               avg(normalized_gini) as normalized_gini, avg(calibration_error) as calibration_error,
               {recall} as recall_at_10
        from monitoring.prediction_performance group by all order by target, week
    """).fetchall()
    names = ["target", "week", "dates", "versions", "predictions", "roc_auc", "pr_auc", "lift_top_decile",
             "normalized_gini", "calibration_error", "recall_at_10"]
    return [dict(zip(names, r)) for r in rows]


def _recommendations(con, paths) -> dict:
    """The recommendations target: its champion and the latest lists (docs/recommendations.md)."""
    from ml.registry import CHAMPION, Store, version_by_alias
    from ml.targets import RECOMMENDATIONS_MODEL

    champion = version_by_alias(Store(paths.mlflow_tracking_uri, paths.mlflow_artifacts), RECOMMENDATIONS_MODEL,
                                CHAMPION)
    lists = {}
    for table in ("next_items", "new_items"):
        if table_exists(con, "predictions", table):
            row = con.execute(f"select max(as_of_date), count(distinct user_id), count(*), "
                              f"count(*) filter (where model_version = 'fallback') from predictions.{table} "
                              f"where as_of_date = (select max(as_of_date) from predictions.{table})").fetchone()
            lists[table] = None if row[0] is None else {"as_of_date": row[0].isoformat(), "users": row[1],
                                                        "rows": row[2], "fallback_rows": row[3]}
    return {"champion": None if champion is None else {"version": champion.version,
                                                       "candidate": champion.tags.get("candidate"),
                                                       "gate_reason": champion.tags.get("gate_reason")},
            "lists": lists}


def _decisions(con, limit: int = 15) -> list[dict]:
    if not table_exists(con, "monitoring", "model_decisions"):
        return []
    rows = con.execute("select as_of_date, target, trigger, decision, reason from monitoring.model_decisions "
                       "order by decided_at desc limit ?", [limit]).fetchall()
    return [dict(zip(["as_of_date", "target", "trigger", "decision", "reason"], r)) for r in reversed(rows)]


def _audiences(con) -> list[dict]:
    """The size of each marketing audience at its latest as-of date, and what it is expected to bring (expected
    buyers in 7 days, expected revenue in 28 days; None where that target is not published: audiences.audience_sizes)."""
    if not table_exists(con, "audiences", "audience_sizes"):
        return []
    columns = {c for (c,) in con.execute("select column_name from information_schema.columns where table_schema = "
                                         "'audiences' and table_name = 'audience_sizes'").fetchall()}
    # (a home built before expected buyers were added has sizes only until its next run)
    expected = ("expected_buyers_7d, expected_revenue_28d" if "expected_buyers_7d" in columns
                else "null as expected_buyers_7d, null as expected_revenue_28d")
    frame = con.execute(f"""
        select audience, as_of_date, users, scored_users, {expected} from audiences.audience_sizes
        qualify as_of_date = max(as_of_date) over (partition by audience) order by audience
    """).df()
    return [{"audience": r.audience, "as_of_date": r.as_of_date.date().isoformat(), "users": int(r.users),
             "scored_users": int(r.scored_users),
             "expected_buyers_7d": None if pd.isna(r.expected_buyers_7d) else round(float(r.expected_buyers_7d), 1),
             "expected_revenue_28d": None if pd.isna(r.expected_revenue_28d) else round(float(r.expected_revenue_28d), 2)}
            for r in frame.itertuples()]


def _or_dash(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _target_status(name: str, paths) -> dict:
    """The champion (version, validation metrics, training dates) and the latest predictions of a target."""
    from ml.registry import (
        CHALLENGER,
        CHAMPION,
        Store,
        latest_training,
        run_metrics,
        run_tags,
        version_by_alias,
    )

    store = Store(paths.mlflow_tracking_uri, paths.mlflow_artifacts)
    out: dict = {"target": name, "champion": None, "challenger": None, "latest_predictions": None}
    if (paths.mlflow_dir / "mlflow.db").exists():
        for alias in (CHAMPION, CHALLENGER):
            entry = version_by_alias(store, name, alias)
            if entry is None:
                continue
            tags = run_tags(store, entry)
            out[alias] = {
                "model_name": name, "version": entry.version, "family": entry.tags.get("family"),
                "feature_set": entry.tags.get("feature_set"),
                "validation_as_of_date": tags.get("validation_as_of_date"),
                "training_as_of_dates": tags.get("training_as_of_dates", "").split(","),
                "validation_metrics": {k: round(v, 4) for k, v in run_metrics(store, entry).items()
                                       if k not in ("tuning_score", "tuning_pr_auc", "fit_seconds")},
                "gate_reason": entry.tags.get("gate_reason"),
            }
        keep = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1", "lift_top_decile",
                "capture_top_decile", *REGRESSION_SHOWN, "base_rate")
        out["latest_training"] = latest_training(store, name, keep)
    if paths.warehouse.exists():
        with connect(paths.warehouse, read_only=True) as con:
            if table_exists(con, "predictions", name):
                row = con.execute(
                    f"select as_of_date, count(*), any_value(model_version) from {qualified('predictions', name)} "
                    "group by 1 order by 1 desc limit 1").fetchone()
                if row:
                    out["latest_predictions"] = {"as_of_date": row[0].isoformat(), "rows": row[1],
                                                 "model_version": row[2]}
    return out


def render(report: dict, verbose: bool = False) -> str:
    """The summary first (checks that failed, targets and champions, lists, audiences, decisions); the tables and
    every check's latest result only with ``verbose`` (60-odd lines a user rarely came for)."""
    run = [c for c in report["checks"] if c["status"] != "never run"]
    failed = [c for c in run if c["passed"] is False]
    errors = [c for c in failed if c.get("severity") != "WARN"]
    lines = [f"warehouse: {report['warehouse']}",
             f"checks: {len(run) - len(failed)} of {len(run)} passed in their latest run"
             + (f"; {len(errors)} FAILED" if errors else "") + (f"; {len(failed) - len(errors)} warned"
                                                               if len(failed) > len(errors) else "")]
    lines += [f"  {'FAILED' if c in errors else 'warned'} {c['check']} {c['partition'] or ''}".rstrip()
              for c in failed]
    if report.get("loads"):
        lines += ["", "loads (rows read = accepted + rejected + duplicate):"]
        for load in report["loads"]:
            reasons = ", ".join(f"{k} {v:,}" for k, v in load["rejected_by_reason"].items()) or "none"
            lines.append(f"  {Path(load['file']).name} ({load['format']}): read {load['read']:,}, accepted "
                         f"{load['accepted']:,}, rejected {load['rejected']:,}, duplicate {load['duplicate']:,}; "
                         f"rejected by reason: {reasons}")
    for t in report.get("targets", []):
        lines += ["", f"target {t['target']}:"]
        target = TARGETS[t["target"]]
        shown = REGRESSION_SHOWN if target.is_regression else CLASSIFICATION_SHOWN
        if t.get("not_published_reason"):
            lines.append(f"  not published in the latest run: {t['not_published_reason']}")
        training = t.get("latest_training")
        if training:
            lines.append(f"  latest training, validated on {training['validation_as_of_date']}:")
            lines.append("    " + f"{'model':<36}" + "".join(f"{k:>{max(len(k) + 2, 10)}}" for k in shown))
            for model, m in {**training["candidates"], f"baseline ({training['baseline_name']})": training["baseline"]}.items():
                lines.append("    " + f"{model[:36]:<36}" + "".join(f"{m.get(k, float('nan')):>{max(len(k) + 2, 10)}.4f}"
                                                                for k in shown))
        for alias in ("champion", "challenger"):
            entry = t[alias]
            if entry:
                m = entry["validation_metrics"]
                headline = (("normalized_gini", "spearman", "mae") if target.is_regression
                            else ("roc_auc", "pr_auc", "lift_top_decile"))
                features = f", {entry['feature_set']} features" if entry.get("feature_set") else ""
                lines.append(f"  {alias}: v{entry['version']} ({entry['family']}{features}), validated on "
                             f"{entry['validation_as_of_date']}: "
                             + ", ".join(f"{k} {m.get(k, float('nan')):.3f}" for k in headline))
                if entry["gate_reason"]:
                    lines.append(f"    gate: {entry['gate_reason']}")
        p = t["latest_predictions"]
        lines.append(f"  predictions: {p['rows']:,} rows for {p['as_of_date']} (model v{p['model_version']})"
                     if p else "  predictions: none yet")
    recommendations = report.get("recommendations")
    if recommendations:
        champion = recommendations["champion"]
        lines += ["", "next_items (recommendations; docs/recommendations.md)",
                  f"  champion: v{champion['version']} ({champion['candidate']})" if champion
                  else "  champion: none yet (not eligible, or not trained)"]
        if champion and champion.get("gate_reason"):
            lines.append(f"    gate: {champion['gate_reason']}")
        for table, latest in recommendations["lists"].items():
            lines.append(f"  {table}: {latest['rows']:,} items for {latest['users']:,} users on {latest['as_of_date']}"
                         f" ({latest['fallback_rows']:,} from the popularity fallback)" if latest
                         else f"  {table}: none yet")
    if report.get("audiences"):
        lines += ["", "audiences (latest as-of date):"]
        lines += [f"  {a['audience']:<30} {a['users']:>8,} of {a['scored_users']:>8,} scored users ({a['as_of_date']}); "
                  f"expected buyers in 7 days {_or_dash(a['expected_buyers_7d'], '{:,.1f}')}, expected revenue in 28 "
                  f"days {_or_dash(a['expected_revenue_28d'], '{:,.2f}')}"
                  for a in report["audiences"]]
    if report.get("realised_by_week"):
        lines += ["", "realised performance of past predictions (per week of as-of date; docs/feedback_loop.md):",
                  (f"  {'target':<24} {'week':<10} {'dates':>5} {'versions':<9} {'users':>8} {'roc_auc':>8} "
                   f"{'pr_auc':>8} {'lift@10%':>8} {'gini':>8} {'calib.err':>9}")]
        fmt = lambda v: f"{v:8.3f}" if v is not None and not math.isnan(v) else f"{'-':>8}"
        lines += [f"  {r['target']:<24} {r['week']!s:<10} {r['dates']:>5} {r['versions']:<9} {r['predictions']:>8,} "
                  f"{fmt(r['roc_auc'])} {fmt(r['pr_auc'])} {fmt(r['lift_top_decile'])} {fmt(r['normalized_gini'])} "
                  f"{fmt(r['calibration_error']):>9}" for r in report["realised_by_week"]]
    if report.get("decisions"):
        lines += ["", "model decisions (latest; monitoring.model_decisions):"]
        lines += [f"  {d['as_of_date']} {d['target']:<24} {d['trigger']:<34} {d['decision']:<10} {d['reason']}"
                  for d in report["decisions"]]
    if verbose:
        lines += ["", "tables:"]
        lines += [f"  {t['table']:<45} {t['rows']:>12,}" for t in report["tables"]] or ["  (none yet)"]
        lines += ["", "checks (latest):"]
        for c in run:
            verdict = {True: "passed", False: "warned" if c.get("severity") == "WARN" else "FAILED",
                       None: c["status"]}[c["passed"]]
            lines.append(f"  {c['check']:<60} {verdict:<8} {c['partition'] or ''}")
    else:
        lines += ["", (f"the {len(report['tables'])} tables' row counts and each of the {len(run)} checks: "
                      "shopcast status --verbose")]
    lines += ["", "open the Dagster UI: make ui  (then http://127.0.0.1:3000)",
              "open the MLflow UI: make mlflow-ui  (then http://127.0.0.1:5000)",
              (f"query the serving file (read-only; runs never block it, docs/serving.md): .venv/bin/python -c "
               f"\"import duckdb; print(duckdb.connect('{report['serving']}', read_only=True).sql("
               f"'select * from predictions.purchase_propensity_7d order by probability desc limit 10'))\"")]
    return "\n".join(lines)
