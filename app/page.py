"""The marketing team's page at `/`: a server-rendered report of the served model and a budget planner form.

    GET /   the report (reads without JavaScript): version, holdout fit, ROI and marginal ROI with intervals,
            response curves with current spend, the decomposition over time, validation findings and the gate
            decision; and a planner form that `static/planner.js` sends to `POST /allocate`.

Everything comes from the model the follower serves (its manifest's `roi`, `response_curves` and
`decomposition` blocks, see CONTRACTS) plus the version's `validation.json`, read from the store once per
version. The page depends only on the version, so it is rendered once per version and cached with an ETag.
A model without the blocks (older ols/ridge versions) still renders its marginal ROI table.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request

from app import charts
from training.core.registry import MODELS_PREFIX

log = logging.getLogger(__name__)
bp = Blueprint("page", __name__)

VALIDATION_FILE = "validation.json"
VALIDATION_RETRY_SECONDS = 60.0  # a validation report that could not be read is tried again after this
CACHED_VERSIONS = 4


class BlockError(ValueError):
    """A manifest block that the page cannot draw: names the field, its value and what was expected."""

    def __init__(self, field: str, value: Any, expected: str):
        text = repr(value)
        self.field = field
        super().__init__(f"{field} is {text if len(text) <= 60 else text[:57] + '...'}: expected {expected}")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BlockError(field, value, "a finite number")
    return float(value)


def _numbers(values: Any, field: str, length: int | None = None) -> list[float]:
    if not isinstance(values, list | tuple):
        raise BlockError(field, values, "a list of numbers")
    if length is not None and len(values) != length:
        raise BlockError(field, f"{len(values)} values", f"{length} values")
    return [_number(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BlockError(field, value, "an object")
    return value


def _interval(value: Any, field: str) -> tuple[float, float]:
    low, high = _numbers(value, field, 2)
    return low, high


def _block_channels(block: Mapping[str, Any], channels: Sequence[str], field: str) -> list[str]:
    """Return the served channels the block describes, in the model's order (never the block's key order)."""
    described = _mapping(block.get("channels"), f"{field}.channels")
    unknown = sorted(set(described) - set(channels))
    if unknown:
        raise BlockError(f"{field}.channels", unknown, f"channels of the model ({', '.join(channels)})")
    return [c for c in channels if c in described]


def _when(text: Any) -> str | None:
    """Return an ISO time as `2026-11-22 06:13 UTC` (the text itself when it is not one)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# ---- the report's sections -----------------------------------------------------------------------------

def summary_section(model: Any) -> dict[str, Any]:
    """Return the version, its times, its algorithm and its holdout fit."""
    manifest = model.manifest
    holdout = manifest.get("metrics", {}).get("holdout", {}) if isinstance(manifest.get("metrics"), Mapping) else {}
    training = manifest.get("training") if isinstance(manifest.get("training"), Mapping) else {}
    months = training.get("months") or []
    holdout_months = training.get("holdout_months") or []
    return {
        "version": model.version,
        "trained_at": _when(manifest.get("created_at")),
        "promoted_at": _when(model.pointer.promoted_at),
        "algorithm": manifest.get("algorithm") or "unknown",
        "run_id": manifest.get("run_id"),
        "channels": [charts.channel_label(c) for c in model.channels],
        "training_window": f"{months[0]} – {months[-1]}" if months else None,
        "holdout_window": f"{holdout_months[0]} – {holdout_months[-1]}" if holdout_months else None,
        "holdout": {k: holdout.get(k) for k in ("r2", "rmse", "mae", "mape")
                    if isinstance(holdout.get(k), int | float)},
    }


def roi_section(manifest: Mapping[str, Any], channels: Sequence[str]) -> dict[str, Any]:
    """Return the ROI/mROI table rows and the interval chart's geometry from the `roi` block."""
    block = _mapping(manifest["roi"], "roi")
    level = _number(block.get("interval_level", 0.9), "roi.interval_level")
    rows = []
    for channel in _block_channels(block, channels, "roi"):
        entry = _mapping(block["channels"][channel], f"roi.channels.{channel}")
        field = f"roi.channels.{channel}"
        rows.append({
            "channel": channel, "label": charts.channel_label(channel),
            "colour": charts.colour(channels.index(channel)),
            "spend": _number(entry.get("spend"), f"{field}.spend"),
            "contribution": _number(entry.get("contribution"), f"{field}.contribution"),
            "roi": _number(entry.get("roi"), f"{field}.roi"),
            "roi_interval": _interval(entry.get("roi_interval"), f"{field}.roi_interval"),
            "mroi": _number(entry.get("mroi"), f"{field}.mroi"),
            "mroi_interval": _interval(entry.get("mroi_interval"), f"{field}.mroi_interval"),
        })
    window = block.get("window")
    return {"level": level, "level_pct": f"{level * 100:.0f}%", "rows": rows, "chart": _roi_chart(rows),
            "window": " – ".join(map(str, window)) if isinstance(window, list | tuple) and len(window) == 2 else None}


def _roi_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A dot-and-interval chart: one row per channel, ROI (circle) above mROI (diamond), a line at 1."""
    width, left, right, top, row_height, bottom = 600, 124, 16, 8, 34, 36
    height = top + row_height * len(rows) + bottom
    values = [v for r in rows for v in (*r["roi_interval"], *r["mroi_interval"], r["roi"], r["mroi"])]
    ticks = charts.nice_ticks(min(0.0, *values), max(1.0, *values), 6)
    x = charts.Scale(ticks[0], ticks[-1], left, width - right)
    marks = []
    for i, row in enumerate(rows):
        middle = top + row_height * (i + 0.5)
        marks.append({
            "label": row["label"], "colour": row["colour"], "y_label": middle + 4,
            "roi": {"y": middle - 6, "x": x(row["roi"]), "x1": x(row["roi_interval"][0]),
                    "x2": x(row["roi_interval"][1])},
            "mroi": {"y": middle + 7, "x": x(row["mroi"]), "x1": x(row["mroi_interval"][0]),
                     "x2": x(row["mroi_interval"][1])},
        })
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top,
            "bottom": height - bottom, "marks": marks, "ticks": charts.axis_ticks(x, ticks, charts.format_ratio),
            "break_even": x(1.0) if ticks[0] <= 1.0 <= ticks[-1] else None}


def marginal_roi_rows(model: Any) -> list[dict[str, Any]]:
    """Return the marginal ROI per channel an older linear model has (its coefficients)."""
    coefficients = model.manifest.get("coefficients")
    if not isinstance(coefficients, Mapping):
        return []
    return [{"channel": c, "label": charts.channel_label(c), "mroi": coefficients.get(c)} for c in model.channels
            if isinstance(coefficients.get(c), int | float)]


def curves_section(manifest: Mapping[str, Any], channels: Sequence[str], symbol: str) -> dict[str, Any]:
    """Return one small response-curve chart per channel from the `response_curves` block."""
    block = _mapping(manifest["response_curves"], "response_curves")
    grain = block.get("grain") if block.get("grain") in ("month", "week") else "period"
    return {"grain": grain, "curves": [_curve_chart(block["channels"][c], c, channels.index(c), symbol)
                                       for c in _block_channels(block, channels, "response_curves")]}


def _curve_chart(entry: Any, channel: str, index: int, symbol: str) -> dict[str, Any]:
    """Geometry of one response curve: the curve, the current spend, and the spend beyond the data."""
    field = f"response_curves.channels.{channel}"
    entry = _mapping(entry, field)
    points = _mapping(entry.get("points"), f"{field}.points")
    spend = _numbers(points.get("spend"), f"{field}.points.spend")
    revenue = _numbers(points.get("revenue"), f"{field}.points.revenue", len(spend))
    if len(spend) < 2 or any(b < a for a, b in zip(spend, spend[1:], strict=False)):
        raise BlockError(f"{field}.points.spend", f"{len(spend)} values", "at least 2 increasing spends")
    current = _number(entry.get("current_spend"), f"{field}.current_spend")
    seen = _number(entry.get("max_spend_seen"), f"{field}.max_spend_seen")
    width, height, left, right, top, bottom = 320, 200, 56, 20, 12, 34
    x_ticks = charts.nice_ticks(0.0, max(spend[-1], current), 4)
    y_ticks = charts.nice_ticks(min(0.0, *revenue), max(revenue), 4)
    x = charts.Scale(x_ticks[0], x_ticks[-1], left, width - right)
    y = charts.Scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    # No x label at 0: the y axis's "$0" already names the corner.
    x_labels = charts.axis_ticks(x, [v for v in x_ticks if v != 0], lambda v: charts.format_money(v, symbol))
    step = charts.label_step(len(x_labels), (width - right - left), max(len(t.label) for t in x_labels))
    current_revenue = charts.interpolate(current, spend, revenue)
    return {
        "channel": channel, "label": charts.channel_label(channel), "colour": charts.colour(index),
        "form": entry.get("form"), "width": width, "height": height, "left": left, "right": width - right,
        "top": top, "bottom": height - bottom, "path": charts.line_path(spend, revenue, x, y),
        "x_ticks": x_labels[::step],
        "y_ticks": charts.axis_ticks(y, y_ticks, lambda v: charts.format_money(v, symbol)),
        "current": {"x": x(current), "y": y(current_revenue), "spend": current, "revenue": current_revenue,
                    "spend_text": charts.format_amount(current, symbol),
                    "revenue_text": charts.format_amount(current_revenue, symbol)},
        "beyond_seen": x(seen) if seen < x_ticks[-1] else None, "max_spend_seen": seen,
        "max_seen_text": charts.format_amount(seen, symbol),
        # What planner.js needs to mark the recommended spend on this chart.
        "scale": json.dumps({"x": [x.low, x.high, x.start, x.end], "y": [y.low, y.high, y.start, y.end],
                             "spend": spend, "revenue": revenue}, separators=(",", ":")),
    }


def decomposition_section(manifest: Mapping[str, Any], channels: Sequence[str], symbol: str) -> dict[str, Any]:
    """Return the stacked areas of base and channel contributions per period, with the actual revenue."""
    block = _mapping(manifest["decomposition"], "decomposition")
    periods = block.get("periods")
    if not isinstance(periods, list) or len(periods) < 2:
        raise BlockError("decomposition.periods", periods, "a list of at least 2 periods")
    periods = [str(p) for p in periods]
    n = len(periods)
    names = _block_channels(block, channels, "decomposition")
    layers = [("base", "base", charts.BASE_COLOUR, _numbers(block.get("base"), "decomposition.base", n))]
    layers += [(c, charts.channel_label(c), charts.colour(channels.index(c)),
                _numbers(block["channels"][c], f"decomposition.channels.{c}", n)) for c in names]
    actual = _numbers(block["actual"], "decomposition.actual", n) if block.get("actual") is not None else None
    fitted = _numbers(block["fitted"], "decomposition.fitted", n) if block.get("fitted") is not None else None
    bands = charts.stack_diverging([values for *_, values in layers])
    width, height, left, right, top, bottom = 760, 320, 64, 28, 12, 44
    lows = [min(lower) for lower, _ in bands] + (actual or [])
    highs = [max(upper) for _, upper in bands] + (actual or [])
    y_ticks = charts.nice_ticks(min(0.0, *lows), max(highs), 5)
    x = charts.Scale(0, n - 1, left, width - right)
    y = charts.Scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    positions = list(range(n))
    step = charts.label_step(n, width - right - left, max(len(p) for p in periods))
    return {
        "width": width, "height": height, "left": left, "right": width - right, "top": top,
        "bottom": height - bottom, "first": periods[0], "last": periods[-1], "count": n,
        "layers": [{"key": key, "label": label, "colour": colour, "path": charts.band_path(positions, lo, hi, x, y),
                    "total": sum(values)}
                   for (key, label, colour, values), (lo, hi) in zip(layers, bands, strict=True)],
        "actual_path": charts.line_path(positions, actual, x, y) if actual else None,
        "actual_dots": [{"x": x(i), "y": y(v)} for i, v in enumerate(actual)] if actual and n <= 60 else [],
        "x_ticks": [charts.Tick(x(i), periods[i]) for i in range(0, n, step)],
        "y_ticks": charts.axis_ticks(y, y_ticks, lambda v: charts.format_money(v, symbol)),
        "table": {"columns": [label for _, label, *_ in layers],
                  "rows": [{"period": p, "amounts": [values[i] for *_, values in layers],
                            "fitted": fitted[i] if fitted else None, "actual": actual[i] if actual else None}
                           for i, p in enumerate(periods)]},
    }


def gate_section(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the quality gate's decision recorded in the manifest."""
    gate = manifest.get("gate")
    if not isinstance(gate, Mapping):
        return None
    champion = gate.get("champion")
    return {"decision": gate.get("decision"), "reason": gate.get("reason"),
            "threshold": gate.get("evaluation_threshold"), "rmse_tolerance": gate.get("rmse_tolerance"),
            "champion": champion.get("version") if isinstance(champion, Mapping) else champion}


def validation_section(report: Mapping[str, Any]) -> dict[str, Any]:
    """Return the validation checks that did not pass (warnings first seen by a person) and the totals."""
    results = [r for r in report.get("results", []) if isinstance(r, Mapping)]
    findings = [{"rule": r.get("rule"), "status": r.get("status"), "action": r.get("action"),
                 "message": r.get("message"), "count": r.get("count"), "examples": r.get("examples") or []}
                for r in results if r.get("status") != "pass"]
    return {"passed": bool(report.get("passed")), "checks": len(results), "findings": findings,
            "rows": report.get("rows"), "run_date": report.get("run_date")}


# ---- reading once per version ----------------------------------------------------------------------------

@dataclass
class RenderedPage:
    """The page of one version: its HTML, its ETag, and until when it may be served (None: forever)."""

    html: str
    etag: str
    expires: float | None


class PageCache:
    """The rendered page of the last few versions (the page depends only on the version)."""

    def __init__(self) -> None:
        self._pages: dict[tuple[str, str], RenderedPage] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> RenderedPage | None:
        """Return the page of `key` unless it is absent or expired."""
        page = self._pages.get(key)
        if page is None or (page.expires is not None and page.expires < time.monotonic()):
            return None
        return page

    def put(self, key: tuple[str, str], page: RenderedPage) -> None:
        """Keep `page`, dropping the oldest versions beyond CACHED_VERSIONS."""
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > CACHED_VERSIONS:
                self._pages.pop(next(iter(self._pages)))


@dataclass(frozen=True)
class ValidationRead:
    """The version's validation report, or why there is none and whether trying again may help."""

    report: dict[str, Any] | None
    problem: str | None = None
    transient: bool = False


def read_validation(registry: Any, version: str, manifest: Mapping[str, Any]) -> ValidationRead:
    """Read the version's `validation.json` from the store (the manifest does not carry it)."""
    files = manifest.get("files")
    if isinstance(files, list) and VALIDATION_FILE not in files:
        return ValidationRead(None, "This version was published without a validation report")
    try:
        report = json.loads(registry.store.read(f"{MODELS_PREFIX}/{version}/{VALIDATION_FILE}"))
    except ValueError as exc:
        return ValidationRead(None, f"Its {VALIDATION_FILE} is not valid JSON ({exc})")
    except Exception as exc:  # the store may be down: the rest of the page still renders, retried later
        log.warning("could not read %s of %s: %s", VALIDATION_FILE, version, exc)
        return ValidationRead(None, f"The validation report could not be read ({exc})", transient=True)
    if not isinstance(report, Mapping):
        return ValidationRead(None, f"Its {VALIDATION_FILE} is not a JSON object")
    return ValidationRead(dict(report))


def _section(build: Any, *args: Any) -> tuple[Any, str | None]:
    """Run a section builder; a malformed block becomes a message on the page, not an error page."""
    try:
        return build(*args), None
    except BlockError as exc:
        return None, str(exc)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return None, f"malformed block: {exc!r}"


def build_report(model: Any, registry: Any, symbol: str) -> tuple[dict[str, Any], bool]:
    """Return the template context of `model`'s page, and whether it is final (nothing to read again)."""
    manifest, channels = model.manifest, list(model.channels)
    context: dict[str, Any] = {"summary": summary_section(model), "symbol": symbol, "errors": {}}
    for name, build, args in (("roi", roi_section, (manifest, channels)),
                              ("curves", curves_section, (manifest, channels, symbol)),
                              ("decomposition", decomposition_section, (manifest, channels, symbol))):
        block = {"curves": "response_curves"}.get(name, name)
        context[name] = None
        if manifest.get(block) is not None:
            context[name], error = _section(build, *args)
            if error:
                context["errors"][name] = error
    context["missing_blocks"] = [b for b in ("roi", "response_curves", "decomposition") if manifest.get(b) is None]
    context["marginal_roi"] = marginal_roi_rows(model)
    context["gate"] = gate_section(manifest)
    validation = read_validation(registry, model.version, manifest)
    context["validation"] = validation_section(validation.report) if validation.report is not None else None
    context["validation_problem"] = validation.problem
    curves = {c["channel"]: c for c in (context["curves"] or {}).get("curves", [])}
    context["planner"] = {
        "channels": [{"channel": c, "label": charts.channel_label(c),
                      "current": curves[c]["current"]["spend"] if c in curves else None} for c in channels],
        "budget": round(sum(c["current"]["spend"] for c in curves.values())) if curves else None,
        "grain": (context["curves"] or {}).get("grain") or ("month" if context["summary"]["training_window"]
                                                              else "period"),
    }
    return context, not validation.transient


@bp.app_template_filter("money")
def money_filter(value: float, symbol: str) -> str:
    """Jinja filter: a money amount in full ($1,234,567)."""
    return charts.format_amount(float(value), symbol)


@bp.app_template_filter("ratio")
def ratio_filter(value: float | None) -> str:
    """Jinja filter: a ratio with two decimals."""
    return charts.format_ratio(None if value is None else float(value))


def _no_model_page(reason: str | None) -> Response:
    html = render_template("page/unavailable.html", reason=reason)
    return Response(html, status=503, mimetype="text/html", headers={"Retry-After": "30"})


@bp.get("/")
def report() -> Response:
    """Render the report of the served model (cached per version) with the planner form."""
    follower = current_app.extensions["adroi_follower"]
    model = follower.current  # read once: the page describes one version even if a swap happens now
    if model is None:
        return _no_model_page(follower.last_error)
    cache: PageCache = current_app.extensions["adroi_page"]
    key = (model.version, model.sha256)
    page = cache.get(key)
    if page is None:
        context, final = build_report(model, follower.registry, current_app.config["CURRENCY_SYMBOL"])
        etag = f"{model.version}-{model.sha256[:12]}-{'final' if final else 'partial'}"
        page = RenderedPage(render_template("page/report.html", **context), etag,
                            None if final else time.monotonic() + VALIDATION_RETRY_SECONDS)
        cache.put(key, page)
    response = Response(page.html, mimetype="text/html")
    response.set_etag(page.etag)
    response.headers["Cache-Control"] = "no-cache"  # revalidate: the model may change at any poll
    return response.make_conditional(request)


def register_page(app: Flask) -> None:
    """Attach the page (and its per-version cache) to `app`."""
    app.extensions["adroi_page"] = PageCache()
    app.register_blueprint(bp)
