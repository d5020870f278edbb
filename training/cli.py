"""`python -m training`: run the pipeline, list and roll back model versions, show run history.

    run            ingest → validate → fit → evaluate → gate → publish → record (exit 0 promoted or
                   unchanged, 3 rejected by the gate, 2 invalid data or usage, 1 unexpected failure)
    versions       list the model versions in a store, marking the one LATEST points at (and broken or
                   incomplete ones)
    promote        point LATEST at an earlier version (rollback) after the verification the API runs
    gc             remove incomplete versions and partial writes a killed run left (never a complete version)
    allocate       split a budget for one period across channels with the promoted version (the API's
                   `POST /allocate`, same computation), printed as a table or JSON
    history        show the newest runs recorded in the metrics table
    sample-data    write a synthetic data set in the users' file layout
    export-schema  write the metrics table schema as bq/Terraform JSON

Every option can also come from the environment (`ADROI_STORE`, `ADROI_GATE__EVALUATION_THRESHOLD`, ...)
or a config file (`--config`, `ADROI_CONFIG`); the command line wins, then the environment, then the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from training.config import Settings, load_settings
from training.core import events
from training.core.errors import AllocationError, ConfigError, ModelIntegrityError
from training.core.logs import configure_logging

if TYPE_CHECKING:
    from training.pipeline import RunResult

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    settings = load_settings(args.config, overrides={"log_format": args.log_format, **overrides})
    # With --json, stdout carries only the result; logs (JSON ones too) go to stderr.
    configure_logging(settings.log_format, stream=sys.stderr if getattr(args, "json", False) else None)
    return settings


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _num(value: Any, spec: str = ",.4g") -> str:
    return "n/a" if value is None else format(value, spec)


def format_summary(result: RunResult) -> str:
    """Return the one-screen human summary of a RunResult."""
    lines = [f"adroi run {result.run_id}: {result.status.upper()} (exit {result.exit_code})"]
    if result.version:
        lines.append(f"  version       {result.version}")
    lines.append(f"  reason        {result.reason}")
    for part in ("holdout", "train"):
        scores = result.metrics.get(part)
        if scores:
            months = f"  on {result.holdout_months[0]}..{result.holdout_months[-1]}" \
                if part == "holdout" and result.holdout_months else ""
            lines.append(f"  {part:<13} R² {_num(scores.get('r2'), '.3f')}  RMSE {_num(scores.get('rmse'), ',.1f')}"
                         f"  MAE {_num(scores.get('mae'), ',.1f')}  MAPE {_num(scores.get('mape'), '.2%')}{months}")
    if result.algorithm:
        lines.append(f"  model         {result.algorithm}, {result.grain or 'month'} grain")
    lines += roi_lines(result.roi)
    if result.validation:
        v = result.validation
        state = "passed" if v.get("passed") else "FAILED: " + ", ".join(v.get("failed", []))
        lines.append(f"  validation    {state}; {v.get('rows', 'n/a')} rows")
        source = v.get("source")  # a table source (BigQuery): what its queries scanned and returned
        if source:
            lines.append(f"  data source   {source['bytes_estimated']:,} bytes scanned (dry runs), "
                         f"{source['rows_returned']:,} rows returned, ${source['on_demand_usd']:.4f} on demand")
    lines += [f"  warning       {w}" for w in result.warnings]
    lines += [f"  {name:<13} {where}" for name, where in result.files.items()]
    return "\n".join(lines)


def _interval(interval: list[float] | None) -> str:
    return "" if not interval else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def roi_lines(roi: dict[str, Any]) -> list[str]:
    """Return the summary's ROI table: per channel ROI and marginal ROI with their intervals, and spend."""
    channels = roi.get("channels") or {}
    if not channels:
        return []
    window = roi.get("window") or ["?", "?"]
    level = roi.get("interval_level", 0.9)
    width = max(12, *(len(c) for c in channels))
    lines = [f"  ROI           revenue per unit of spend over {window[0]}..{window[1]} ({level:.0%} intervals)",
             f"    {'channel':<{width}} {'ROI':>6} {'interval':<16} {'mROI':>6} {'interval':<16} {'spend':>14}"]
    for name, e in channels.items():
        lines.append(f"    {name:<{width}} {e['roi']:>6.2f} {_interval(e.get('roi_interval')):<16} "
                     f"{e['mroi']:>6.2f} {_interval(e.get('mroi_interval')):<16} {e['spend']:>14,.0f}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole pipeline once."""
    settings = _settings(args, data=args.data, store=args.store, metrics=args.metrics, run_date=args.run_date,
                         channels=args.channels, **{"gate.evaluation_threshold": args.evaluation_threshold,
                                                    "gate.rmse_tolerance": args.rmse_tolerance,
                                                    "model.algorithm": args.algorithm,
                                                    "model.positive": args.positive,
                                                    "model.grain": args.grain})
    from training import pipeline  # the training stack (pandas, scikit-learn) loads only for `run`

    result = pipeline.run(settings, args.run_id)
    print(json.dumps(result.to_dict(), sort_keys=True, default=str) if args.json else format_summary(result))
    return result.exit_code


def _pointer_problem(registry: Any) -> str | None:
    """Return why `LATEST` cannot be read, or None when it can (or does not exist)."""
    try:
        registry.latest()
    except ModelIntegrityError as exc:
        return exc.reason
    return None


def cmd_versions(args: argparse.Namespace) -> int:
    """List the versions of a store, newest first (broken and incomplete ones marked)."""
    from training.core.registry import ModelRegistry
    from training.core.store import open_store

    settings = _settings(args, store=args.store)
    registry = ModelRegistry(open_store(settings.store))
    rows = registry.list_versions()
    problem = _pointer_problem(registry)
    if problem:
        print(f"warning: models/LATEST is unreadable ({problem}); `python -m training promote VERSION` "
              "replaces it", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, sort_keys=True, default=str))
        return EXIT_OK
    flat = [{**r, "latest": "*" if r["latest"] else "", "r2": _num(r["metrics"].get("r2"), ".3f"),
             "rmse": _num(r["metrics"].get("rmse"), ",.1f"),
             "gate_reason": r["problem"] or r["gate_reason"]} for r in rows]
    print(_table(flat, ["latest", "version", "status", "created_at", "r2", "rmse", "gate_reason"])
          if rows else f"no versions in {settings.store}")
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    """Point LATEST at VERSION (a rollback), refusing a version that does not pass the API's verification."""
    from training.core.registry import ModelRegistry
    from training.core.store import open_store

    settings = _settings(args, store=args.store)
    registry = ModelRegistry(open_store(settings.store))
    problem = _pointer_problem(registry)
    try:
        pointer = registry.promote(args.version, reason=args.reason)
    except ModelIntegrityError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.warning("LATEST moved from %s to %s by hand: %s", pointer.previous, pointer.version,
                args.reason, extra={"event": events.MODEL_ROLLED_BACK, "model_version": pointer.version})
    if problem:
        print(f"LATEST was unreadable ({problem}): replaced")
    print(f"LATEST -> {pointer.version} (was {pointer.previous or 'nothing'})")
    return EXIT_OK


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Return the seconds of `24h`, `30m`, `7d`, `90s` or `0`; raise ConfigError otherwise."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    if match is None:
        raise ConfigError("--older-than", text, "a duration such as 24h, 30m, 7d or 0")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove incomplete versions and partial writes older than --older-than (or list them with --dry-run)."""
    from training.core.registry import ModelRegistry
    from training.core.store import open_store

    older_than = parse_duration(args.older_than)
    settings = _settings(args, store=args.store)
    removed = ModelRegistry(open_store(settings.store)).gc(older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for key in removed:
        print(f"{verb} {key}")
    print(f"{verb} {len(removed)} object(s) older than {args.older_than} from {settings.store}")
    return EXIT_OK


def realised_text(row: dict[str, Any]) -> str:
    """Describe a run's realised performance of the served model: `RMSE 1.2e+05/2 (MAPE 3.1%) ≤ 1.5e+05`."""
    periods = row.get("realised_periods")
    if periods is None:
        return ""
    if not periods or row.get("realised_rmse") is None:
        return "0 new"
    text = f"RMSE {_num(row['realised_rmse'], ',.4g')}/{periods} (MAPE {_num(row.get('realised_mape'), '.1%')})"
    limit = row.get("realised_rmse_limit")
    if limit is not None:
        text += f" {'> ' if row.get('model_degraded') or row['realised_rmse'] > limit else '≤ '}{limit:,.4g}"
    return text + (" DEGRADED" if row.get("model_degraded") else "")


def cmd_history(args: argparse.Namespace) -> int:
    """Show the newest runs of the metrics table."""
    from training.metrics import open_metrics

    settings = _settings(args, metrics=args.metrics)
    rows = open_metrics(settings.metrics).history(args.limit)
    if args.json:
        print(json.dumps(rows, sort_keys=True, default=str))
    else:
        flat = [{**r, "started_at": f"{r['started_at']:%Y-%m-%d %H:%M:%S}", "r2": _num(r["holdout_r2"], ".3f"),
                 "rmse": _num(r["holdout_rmse"], ",.1f"), "realised": realised_text(r),
                 "reason": r["gate_reason"] or r["error"]} for r in rows]
        print(_table(flat, ["started_at", "run_id", "status", "model_version", "r2", "rmse", "realised", "reason"])
              if rows else f"no runs in {settings.metrics}")
    return EXIT_OK


def cmd_sample_data(args: argparse.Namespace) -> int:
    """Write a synthetic data set."""
    from training.sample import write_mmm_sample, write_sample

    configure_logging(args.log_format)
    if args.process == "mmm":
        channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
        truth = write_mmm_sample(args.out, seed=args.seed, years=args.years, channels=channels,
                                 revenue_grain=args.grain_revenue, end_month=args.end_month or "2026-10")
        roi = ", ".join(f"{c} {v:.2f}" for c, v in truth["roi"].items())
        print(f"wrote {args.years} years of daily spend, {args.grain_revenue} revenue and controls, "
              f"{truth['spend_rows']} spend rows to {args.out}; true ROI: {roi}")
        return EXIT_OK
    extra = {"end_month": args.end_month} if args.end_month else {}
    truth = write_sample(args.out, months=args.months, campaigns=args.campaigns, seed=args.seed, **extra)
    print(f"wrote {len(truth['months'])} months, {truth['spend_rows']} spend rows to {args.out}")
    return EXIT_OK


def end_month(value: str, today: date | None = None) -> str:
    """`--end-month`: "YYYY-MM", or "last" for the calendar month before today (a sample that is fresh now)."""
    if value == "last":
        first = (today or date.today()).replace(day=1)
        return f"{first.year - (first.month == 1)}-{(first.month - 2) % 12 + 1:02d}"
    try:
        datetime.strptime(value, "%Y-%m")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: expected YYYY-MM or 'last'") from exc
    return value


def cmd_export_schema(args: argparse.Namespace) -> int:
    """Write the metrics table schema as bq/Terraform JSON."""
    from training.metrics import SCHEMA_FILE, export_schema

    print(export_schema(args.path or SCHEMA_FILE))
    return EXIT_OK


def parse_bounds(text: str | None) -> dict[str, list[float | None]] | None:
    """Parse `tv=0:50000,search=10000:` into {"tv": [0, 50000], "search": [10000, None]}; an empty end is open."""
    if text is None:
        return None
    bounds: dict[str, list[float | None]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, pair = item.partition("=")
        low, colon, high = pair.partition(":")
        if not equals or not colon or not name.strip():
            raise AllocationError("--bounds", item, "channel=min:max (either end may be empty), comma-separated")
        try:
            bounds[name.strip()] = [float(low) if low.strip() else None, float(high) if high.strip() else None]
        except ValueError as exc:
            raise AllocationError("--bounds", item, "numbers for min and max, e.g. tv=0:50000") from exc
    return bounds


def _signed(value: float) -> str:
    return f"{value:+,.0f}" if round(value) else "0"


def format_allocation(answer: dict[str, Any]) -> str:
    """Render an allocation answer (`training.core.planner.plan_budget`) as a table a person reads."""
    current = (answer["current_mix"] or {}).get("allocation") or {}
    rows = []
    for channel, spend in answer["allocation"].items():
        plan = answer["channels"][channel]
        now = current.get(channel)
        rows.append({"channel": channel, "current spend": _num(now, ",.0f"), "recommended": f"{spend:,.0f}",
                     "change": "n/a" if now is None else _signed(spend - now),
                     "mROI": _num(plan["mroi"], ".2f"), "bound": plan["binding"] or ""})
    total_now = sum(current.values()) if current else None
    rows.append({"channel": "total", "current spend": _num(total_now, ",.0f"),
                 "recommended": f"{sum(answer['allocation'].values()):,.0f}",
                 "change": "n/a" if total_now is None else _signed(sum(answer["allocation"].values()) - total_now)})
    target = f" (target mROI {answer['target_mroi']:g}, unspent {answer['unspent']:,.0f})" \
        if answer["scenario"] == "target_mroi" else ""
    lines = [f"model {answer['model_version']} ({answer['algorithm']}), period {answer['period'] or 'n/a'}, "
             f"budget {answer['budget']:,.0f} per {answer['grain'] or 'period'}, scenario {answer['scenario']}{target}",
             "", _table(rows, ["channel", "current spend", "recommended", "change", "mROI", "bound"]), "",
             f"predicted revenue  {answer['predicted_revenue']:,.0f}  (base {answer['base_revenue']:,.0f} + media "
             f"{answer['media_revenue']:,.0f})"]
    if answer["current_mix"] is not None:
        lines.append(f"current mix        {answer['current_mix']['predicted_revenue']:,.0f}  (the mean split of the "
                     "last 12 training periods, scaled to the same total)")
    if answer["lift"] is not None:
        relative = answer["lift"]["relative"]
        lines.append(f"lift               {_signed(answer['lift']['revenue'])}"
                     + ("" if relative is None else f"  ({relative:+.1%})"))
    lines += [f"warning: {w}" for w in answer["warnings"]]
    return "\n".join(lines)


def cmd_allocate(args: argparse.Namespace) -> int:
    """Split a budget across channels with the promoted version (verified like the API loads it)."""
    from training.core.planner import model_facts, plan_budget
    from training.core.registry import ModelRegistry
    from training.core.store import open_store

    settings = _settings(args, store=args.store)
    registry = ModelRegistry(open_store(settings.store))
    pointer = registry.latest()
    if pointer is None:
        print(f"error: no promoted model in {settings.store}: run `python -m training run` first", file=sys.stderr)
        return EXIT_USAGE
    manifest, spec = registry.load(pointer.version, expected_sha256=pointer.sha256)
    answer = plan_budget(model_facts(pointer.version, spec, manifest), args.budget, period=args.period,
                         bounds=parse_bounds(args.bounds), scenario=args.scenario, target_mroi=args.target_mroi)
    print(json.dumps(answer, sort_keys=False) if args.json else format_allocation(answer))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `python -m training`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML or YAML settings file (env ADROI_CONFIG)")
    common.add_argument("--log-format", choices=["text", "json", "cloud"],
                        help="default: cloud (Cloud Logging API) on Composer, json elsewhere on Google Cloud, else text")
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="run the training pipeline once")
    run.add_argument("--data", help="input root: folder or gs://bucket/prefix with spend/ and revenue/, or "
                     "bq://project.dataset with spend and revenue tables")
    run.add_argument("--store", help="model store: folder or gs://bucket/prefix")
    run.add_argument("--metrics", help="sqlite:///path.db or bq://project.dataset.table")
    run.add_argument("--run-date", help="the run's logical date, YYYY-MM-DD (data freshness is judged on it)")
    run.add_argument("--run-id", help="id of this run (default: manual__<time>-<random>)")
    run.add_argument("--channels", help="comma-separated channel list (default: every channel in the data)")
    run.add_argument("--evaluation-threshold", type=float, help="minimum holdout R² to promote")
    run.add_argument("--rmse-tolerance", type=float, help="how much worse than the champion's RMSE is allowed")
    run.add_argument("--algorithm", choices=["mmm", "ols", "ridge"],
                     help="model (default mmm: media-mix; ols/ridge: revenue linear in spend per period)")
    run.add_argument("--grain", choices=["month", "week"],
                     help="periods the model is fitted on (default month; week = ISO weeks, needs daily revenue)")
    run.add_argument("--positive", action=argparse.BooleanOptionalAction, default=None,
                     help="constrain marginal ROI to be >= 0")
    run.add_argument("--json", action="store_true", help="print the run result as JSON")
    run.set_defaults(func=cmd_run)

    versions = commands.add_parser("versions", parents=[common], help="list model versions")
    versions.add_argument("--store")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(func=cmd_versions)

    promote = commands.add_parser("promote", parents=[common], help="point LATEST at a version (rollback)")
    promote.add_argument("version")
    promote.add_argument("--store")
    promote.add_argument("--reason", default="rollback from the command line")
    promote.set_defaults(func=cmd_promote)

    gc = commands.add_parser("gc", parents=[common],
                             help="remove incomplete versions and partial writes left by killed runs")
    gc.add_argument("--store")
    gc.add_argument("--older-than", default="24h",
                    help="only what was last written longer ago than this (default 24h; 0 = everything)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.set_defaults(func=cmd_gc)

    plan = commands.add_parser("allocate", parents=[common],
                               help="split a budget for one period across channels (the promoted version)")
    plan.add_argument("--store", help="model store: folder or gs://bucket/prefix")
    plan.add_argument("--budget", type=float, required=True, help="total spend for one period of the model's grain")
    plan.add_argument("--bounds", help="absolute spend per period, e.g. tv=0:50000,search=10000: (empty end: open)")
    plan.add_argument("--scenario", choices=["max_revenue", "target_mroi"], default="max_revenue",
                      help="max_revenue (default): spend the budget for the most revenue; target_mroi: spend while "
                           "one more unit returns at least --target-mroi, the budget as a cap")
    plan.add_argument("--target-mroi", type=float, help="with --scenario target_mroi")
    plan.add_argument("--period", help="YYYY-MM or YYYY-Www (default: the period after the training window)")
    plan.add_argument("--json", action="store_true", help="print the answer as JSON (the API's body)")
    plan.set_defaults(func=cmd_allocate)

    history = commands.add_parser("history", parents=[common], help="show recorded runs, newest first")
    history.add_argument("--metrics")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    sample = commands.add_parser("sample-data", parents=[common], help="write a synthetic data set")
    sample.add_argument("out", help="folder or gs://bucket/prefix")
    sample.add_argument("--months", type=int, default=36)
    sample.add_argument("--campaigns", type=int, default=6)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--end-month", type=end_month,
                        help="newest month, YYYY-MM, or 'last' for the month before today "
                             "(default: 2026-10, the bundled sample's)")
    sample.add_argument("--process", choices=["linear", "mmm"], default="linear",
                        help="linear: revenue linear in monthly spend (default); mmm: a media-mix process with "
                             "daily adstock, saturation, seasonal demand, trend and controls")
    sample.add_argument("--grain-revenue", choices=["daily", "monthly"], default="monthly",
                        help="mmm: revenue per day (DATE, REVENUE) or per month (YEAR, MONTH, REVENUE)")
    sample.add_argument("--years", type=int, default=4, help="mmm: years of revenue")
    sample.add_argument("--channels", help="mmm: comma-separated channel names (default tv,search,social,display)")
    sample.set_defaults(func=cmd_sample_data)

    schema = commands.add_parser("export-schema", parents=[common], help="write the metrics table JSON schema")
    schema.add_argument("path", nargs="?", help="default: infra/metrics_schema.json")
    schema.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the subcommand, and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the exit code and one line matter more to the caller than a traceback
        log.error("%s failed: %s", args.command, exc, exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
