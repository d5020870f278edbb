"""Canary rollout of a tagged Cloud Run revision, run by Cloud Build after the smoke test.

    python -m delivery.canary --project P --region R --service S --tag sha-abc1234 --audience adroi-api

1. Reads the service (Cloud Run Admin API v2) and finds the revision that carries `--tag` (deployed with
   `--no-traffic`) and the split that serves users now. First deploy (no other revision serves traffic):
   it moves 100% to the new revision at once, since there is nothing to compare with or return to.
2. Sends `--canary-percent` of traffic to the new revision, the rest to the previous split, scaled.
3. Every `--check-seconds` until `--watch-seconds` have passed, reads the new revision's request count by
   response code class and its latency distribution from Cloud Monitoring (`run.googleapis.com/request_count`,
   `run.googleapis.com/request_latencies`) since the canary began. While fewer than `--min-requests` are
   counted it sends `--synthetic-requests` light requests (`POST /predict`) to the revision's tag URL.
   It stops early when enough requests show a breach.
4. Judges: with at least `--min-requests` requests, a 5xx ratio at most `--max-5xx-ratio` and a p99 at most
   `--max-p99-ms`, it promotes (100% to the new revision, tag removed); otherwise, or on any error, it puts
   the previous split back exactly and exits 1, which fails the build.

Only the Python standard library, `google-auth`, `requests` and `google-cloud-monitoring` are needed, so the
step runs in `python:3.11` after `pip install google-cloud-monitoring`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from google.api import distribution_pb2
from google.cloud import monitoring_v3

logger = logging.getLogger(__name__)

RUN_API = "https://run.googleapis.com"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
# The canary step's timeout in cloudbuild.yaml is this plus 600 s for pip and three traffic moves.
MAX_WATCH_SECONDS = 1800


class RolloutError(Exception):
    """The rollout could not proceed (service state, API error); traffic was put back where possible."""


class CanaryFailed(Exception):
    """The canary breached a threshold or got too few requests to be judged; traffic was rolled back."""


@dataclass(frozen=True)
class Thresholds:
    """What the canary must meet to be promoted."""

    max_5xx_ratio: float = 0.01
    max_p99_ms: float = 500.0
    min_requests: int = 50


@dataclass(frozen=True)
class WindowStats:
    """The new revision's requests, 5xx responses and p99 latency (ms, None without requests) in a window."""

    requests: int
    errors_5xx: int
    p99_ms: float | None

    @property
    def error_ratio(self) -> float:
        """5xx responses over all requests (0 without requests)."""
        return self.errors_5xx / self.requests if self.requests else 0.0

    def breaches(self, thresholds: Thresholds) -> list[str]:
        """Each threshold this window breaches, in words (empty when it meets them all)."""
        found = []
        if self.error_ratio > thresholds.max_5xx_ratio:
            found.append(f"5xx ratio {self.error_ratio:.4f} ({self.errors_5xx}/{self.requests}) "
                         f"above max_5xx_ratio {thresholds.max_5xx_ratio}")
        if self.p99_ms is not None and self.p99_ms > thresholds.max_p99_ms:
            found.append(f"p99 latency {self.p99_ms:.1f} ms above max_p99_ms {thresholds.max_p99_ms}")
        return found


@dataclass(frozen=True)
class Outcome:
    """How the rollout ended: `promoted`, `first_deploy` or `already_serving`, with the last window read."""

    decision: str
    revision: str
    stats: WindowStats | None = None


# ---- Cloud Monitoring ------------------------------------------------------------------------------------

def bucket_bounds(options: distribution_pb2.Distribution.BucketOptions) -> list[float]:
    """The finite bucket boundaries of a distribution's bucket options (linear, exponential or explicit)."""
    kind = options.WhichOneof("options")
    if kind == "linear_buckets":
        b = options.linear_buckets
        return [b.offset + b.width * i for i in range(b.num_finite_buckets + 1)]
    if kind == "exponential_buckets":
        b = options.exponential_buckets
        return [b.scale * b.growth_factor ** i for i in range(b.num_finite_buckets + 1)]
    if kind == "explicit_buckets":
        return list(options.explicit_buckets.bounds)
    raise RolloutError(f"distribution bucket_options: unknown kind {kind!r}, expected linear, exponential "
                       "or explicit buckets")


def percentile(bounds: list[float], counts: list[int], q: float) -> float | None:
    """The q-quantile of a bucketed distribution, interpolated linearly inside its bucket (None if empty).

    Bucket 0 is the underflow (-inf, bounds[0]), bucket i is [bounds[i-1], bounds[i]), the last is the overflow
    [bounds[-1], +inf): a quantile in the underflow reads as bounds[0], in the overflow as bounds[-1].
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if i == 0:
                return bounds[0]
            if i > len(bounds) - 1:
                return bounds[-1]
            lower, upper = bounds[i - 1], bounds[i]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1]


class RevisionMetrics:
    """Reads one Cloud Run revision's request count and latency from Cloud Monitoring."""

    def __init__(self, client: monitoring_v3.MetricServiceClient, project: str) -> None:
        self.client = client
        self.project = project

    def _series(self, metric: str, service: str, revision: str, start: datetime, end: datetime,
                group_by: list[str]) -> list[monitoring_v3.TimeSeries]:
        seconds = max(60, int((end - start).total_seconds()))
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=(f'metric.type = "{metric}" AND resource.type = "cloud_run_revision" '
                    f'AND resource.labels.service_name = "{service}" '
                    f'AND resource.labels.revision_name = "{revision}"'),
            interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
            aggregation=monitoring_v3.Aggregation(
                alignment_period={"seconds": seconds},
                per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
                cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
                group_by_fields=group_by),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        return list(self.client.list_time_series(request=request))

    def window(self, service: str, revision: str, start: datetime, end: datetime) -> WindowStats:
        """Requests, 5xx responses and p99 latency of `revision` between `start` and `end`."""
        total = errors = 0
        for series in self._series(REQUEST_COUNT, service, revision, start, end,
                                   ["metric.labels.response_code_class"]):
            count = sum(p.value.int64_value for p in series.points)
            total += count
            if series.metric.labels.get("response_code_class") == "5xx":
                errors += count
        bounds: list[float] | None = None
        counts: list[int] = []
        for series in self._series(REQUEST_LATENCIES, service, revision, start, end, []):
            for point in series.points:
                dist = point.value.distribution_value
                if not dist.count:
                    continue
                these = bucket_bounds(dist.bucket_options)
                if bounds is None:
                    bounds, counts = these, [0] * (len(these) + 1)
                elif these != bounds:
                    raise RolloutError(f"{REQUEST_LATENCIES}: points with different bucket options "
                                       f"({len(these)} and {len(bounds)} bounds) cannot be merged")
                for i, c in enumerate(dist.bucket_counts):  # trailing zero buckets may be omitted
                    counts[i] += c
        p99 = percentile(bounds, counts, 0.99) if bounds is not None else None
        return WindowStats(requests=total, errors_5xx=errors, p99_ms=p99)


# ---- Cloud Run Admin API v2 ------------------------------------------------------------------------------

class CloudRunService:
    """Reads a Cloud Run service and replaces its traffic split (Admin API v2: services.get, services.patch)."""

    def __init__(self, session: requests.Session, project: str, region: str, service: str,
                 endpoint: str = RUN_API, sleep: Callable[[float], None] = time.sleep,
                 settle_seconds: float = 300.0, poll_seconds: float = 2.0) -> None:
        self.session = session
        self.url = f"{endpoint.rstrip('/')}/v2/projects/{project}/locations/{region}/services/{service}"
        self.sleep = sleep
        self.settle_seconds = settle_seconds
        self.poll_seconds = poll_seconds

    def get(self) -> dict[str, Any]:
        """The service resource."""
        response = self.session.get(self.url, timeout=30)
        if response.status_code != 200:
            raise RolloutError(f"GET {self.url}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def set_traffic(self, traffic: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace the traffic split with `traffic` and wait until Cloud Run serves it; returns the service."""
        service = self.get()
        body = {"traffic": traffic, "etag": service.get("etag", "")}
        response = self.session.patch(self.url, params={"updateMask": "traffic"}, json=body, timeout=60)
        if response.status_code != 200:
            raise RolloutError(f"PATCH {self.url} traffic={json.dumps(traffic)}: HTTP {response.status_code}: "
                               f"{response.text[:500]}")
        wanted = sorted((t["revision"], t["percent"], t.get("tag", "")) for t in traffic)
        waited = 0.0
        while True:
            service = self.get()
            served = sorted((t.get("revision", ""), t.get("percent", 0), t.get("tag", ""))
                            for t in service.get("trafficStatuses", []))
            if not service.get("reconciling") and served == wanted:
                return service
            if waited >= self.settle_seconds:
                raise RolloutError(f"traffic of {self.url} did not settle in {self.settle_seconds:.0f} s: "
                                   f"serving {served}, expected {wanted}")
            self.sleep(self.poll_seconds)
            waited += self.poll_seconds


def split(previous: list[dict[str, Any]], new_revision: str, tag: str, percent: int,
          keep_tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A traffic list: `percent` to `new_revision` under `tag`, the rest to `previous` scaled (integers, sum 100)."""
    rest = 100 - percent
    total = sum(t["percent"] for t in previous)
    shares = [t["percent"] * rest / total for t in previous]
    floors = [int(s) for s in shares]
    for i in sorted(range(len(shares)), key=lambda i: floors[i] - shares[i])[: rest - sum(floors)]:
        floors[i] += 1  # largest remainder, so the split sums to exactly 100
    targets = {}
    for t, share in zip(previous, floors, strict=True):
        targets[t["revision"]] = {**t, "percent": share}
    targets[new_revision] = {"type": REVISION, "revision": new_revision, "percent": percent, "tag": tag}
    return [*targets.values(), *keep_tags]


def serving_split(service: dict[str, Any], exclude_tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The revisions serving traffic now (revision, percent, tag) and the other tags to keep at 0%."""
    serving: dict[str, dict[str, Any]] = {}
    tags = []
    for t in service.get("trafficStatuses", []):
        revision, percent, tag = t.get("revision"), int(t.get("percent", 0)), t.get("tag", "")
        if not revision:
            raise RolloutError(f"trafficStatuses entry without a revision: {t}")
        if percent > 0:
            entry = serving.setdefault(revision, {"type": REVISION, "revision": revision, "percent": 0})
            entry["percent"] += percent
            if tag and tag != exclude_tag:
                entry["tag"] = tag
        elif tag and tag != exclude_tag:
            tags.append({"type": REVISION, "revision": revision, "percent": 0, "tag": tag})
    return list(serving.values()), tags


# ---- the rollout -----------------------------------------------------------------------------------------

class SyntheticTraffic:
    """Sends light `POST /predict` requests to a revision's tag URL with an identity token."""

    def __init__(self, url: str, token: Callable[[], str], session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session = session or requests.Session()
        self._body: dict[str, Any] | None = None

    def send(self, count: int) -> int:
        """Send `count` predictions (one small spend per channel); returns how many answered 2xx."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        ok = 0
        for _ in range(count):
            try:
                if self._body is None:
                    model = self.session.get(f"{self.url}/model", headers=headers, timeout=20)
                    model.raise_for_status()
                    self._body = {"spend": {c: 1000.0 for c in model.json()["channels"]}}
                answer = self.session.post(f"{self.url}/predict", json=self._body, headers=headers, timeout=20)
                ok += answer.ok
            except (requests.RequestException, KeyError, ValueError) as exc:
                logger.warning("synthetic request to %s failed: %s", self.url, exc)
        return ok


@dataclass(frozen=True)
class RolloutSettings:
    """What the rollout watches for and how long."""

    tag: str
    canary_percent: int = 10
    watch_seconds: float = 600.0
    check_seconds: float = 60.0
    synthetic_requests: int = 10
    thresholds: Thresholds = Thresholds()


def rollout(run: CloudRunService, metrics: RevisionMetrics, service_name: str, settings: RolloutSettings,
            synthetic: Callable[[str], SyntheticTraffic], clock: Callable[[], datetime] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Canary the revision tagged `settings.tag`, then promote it or roll back (raises CanaryFailed)."""
    clock = clock or (lambda: datetime.now(UTC))
    if not 0 < settings.canary_percent < 100:
        raise RolloutError(f"canary_percent: {settings.canary_percent}, expected 1 to 99")
    service = run.get()
    tagged = [t for t in service.get("trafficStatuses", []) if t.get("tag") == settings.tag]
    if not tagged:
        raise RolloutError(f"no revision of {service_name} carries the tag {settings.tag!r}; "
                           f"tags: {[t.get('tag') for t in service.get('trafficStatuses', []) if t.get('tag')]}")
    new_revision, tag_url = tagged[0]["revision"], tagged[0].get("uri", "")
    previous, keep_tags = serving_split(service, settings.tag)
    # Promotion keeps every other tag (at 0%): their URLs keep working.
    promoted = [{"type": REVISION, "revision": new_revision, "percent": 100},
                *({**t, "percent": 0} for t in previous if t.get("tag") and t["revision"] != new_revision),
                *keep_tags]
    if not previous or [t["revision"] for t in previous] == [new_revision]:
        decision = "first_deploy" if not previous else "already_serving"
        logger.info("%s: no other revision serves traffic (%s): moving 100%% to %s without a canary",
                    service_name, decision, new_revision)
        run.set_traffic(promoted)
        return Outcome(decision, new_revision)
    # What a rollback restores: the same revisions, percents and tags as before the canary.
    restore = [*previous, *keep_tags]
    logger.info("%s: canary %s at %d%%; previous split %s", service_name, new_revision,
                settings.canary_percent, [(t["revision"], t["percent"]) for t in previous])
    try:
        run.set_traffic(split(previous, new_revision, settings.tag, settings.canary_percent, keep_tags))
        stats = watch(metrics, service_name, new_revision, settings, synthetic(tag_url), clock, sleep)
    except BaseException:
        logger.error("%s: rolling back to %s after an error", service_name, restore)
        run.set_traffic(restore)
        raise
    problems = stats.breaches(settings.thresholds)
    if stats.requests < settings.thresholds.min_requests:
        problems.append(f"only {stats.requests} requests in {settings.watch_seconds:.0f} s, fewer than "
                        f"min_requests {settings.thresholds.min_requests}: the canary cannot be judged")
    if problems:
        logger.error("%s: canary %s failed: %s; rolling back to %s", service_name, new_revision,
                     "; ".join(problems), [(t["revision"], t["percent"]) for t in previous])
        run.set_traffic(restore)
        raise CanaryFailed(f"canary {new_revision}: {'; '.join(problems)}; traffic rolled back to "
                           f"{[(t['revision'], t['percent']) for t in previous]}")
    run.set_traffic(promoted)
    logger.info("%s: promoted %s to 100%% (%d requests, 5xx ratio %.4f, p99 %s ms)", service_name, new_revision,
                stats.requests, stats.error_ratio, stats.p99_ms)
    return Outcome("promoted", new_revision, stats)


def watch(metrics: RevisionMetrics, service_name: str, revision: str, settings: RolloutSettings,
          synthetic: SyntheticTraffic, clock: Callable[[], datetime],
          sleep: Callable[[float], None]) -> WindowStats:
    """Read the canary's metrics after each check interval until the watch ends or enough requests show a breach."""
    start = clock()
    deadline = start + timedelta(seconds=settings.watch_seconds)
    while True:
        sleep(min(settings.check_seconds, max(0.0, (deadline - clock()).total_seconds())))
        now = clock()
        stats = metrics.window(service_name, revision, start, now)
        logger.info("%s: %d requests, %d 5xx, p99 %s ms after %.0f s", revision, stats.requests,
                    stats.errors_5xx, stats.p99_ms, (now - start).total_seconds())
        enough = stats.requests >= settings.thresholds.min_requests
        if enough and stats.breaches(settings.thresholds):
            return stats
        if now >= deadline:
            return stats
        if not enough and settings.synthetic_requests:
            synthetic.send(settings.synthetic_requests)


# ---- command line ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (every Cloud Build `_CANARY_*` substitution maps to one option)."""
    p = argparse.ArgumentParser(prog="python -m delivery.canary", description=__doc__.split("\n\n")[0])
    p.add_argument("--project", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--tag", required=True, help="tag of the revision deployed with --no-traffic")
    p.add_argument("--audience", required=True, help="audience of the identity token for synthetic requests")
    p.add_argument("--canary-percent", type=int, default=10)
    p.add_argument("--watch-seconds", type=float, default=600.0)
    p.add_argument("--check-seconds", type=float, default=60.0)
    p.add_argument("--min-requests", type=int, default=50)
    p.add_argument("--max-5xx-ratio", type=float, default=0.01)
    p.add_argument("--max-p99-ms", type=float, default=500.0)
    p.add_argument("--synthetic-requests", type=int, default=10,
                   help="requests sent per check while fewer than --min-requests are counted (0: none)")
    args = p.parse_args(argv)
    if not 60 <= args.watch_seconds <= MAX_WATCH_SECONDS:
        p.error(f"--watch-seconds {args.watch_seconds:g}: expected 60 to {MAX_WATCH_SECONDS} (the Cloud Build "
                "step's timeout must leave time to move traffic back)")
    if not 1 <= args.canary_percent <= 99:
        p.error(f"--canary-percent {args.canary_percent}: expected 1 to 99")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the rollout with Application Default Credentials; exit 1 when it rolled back."""
    import google.auth
    import google.auth.transport.requests
    import google.oauth2.id_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    run = CloudRunService(google.auth.transport.requests.AuthorizedSession(credentials),
                          args.project, args.region, args.service)
    metrics = RevisionMetrics(monitoring_v3.MetricServiceClient(credentials=credentials), args.project)

    def token() -> str:
        return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), args.audience)

    settings = RolloutSettings(
        tag=args.tag, canary_percent=args.canary_percent, watch_seconds=args.watch_seconds,
        check_seconds=args.check_seconds, synthetic_requests=args.synthetic_requests,
        thresholds=Thresholds(args.max_5xx_ratio, args.max_p99_ms, args.min_requests))
    try:
        outcome = rollout(run, metrics, args.service, settings, lambda url: SyntheticTraffic(url, token))
    except (CanaryFailed, RolloutError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("rollout of %s: %s", outcome.revision, outcome.decision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
