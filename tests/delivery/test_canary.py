"""delivery/canary.py: the canary rollout, against local stand-ins of everything it talks to.

Cloud Monitoring is a local gRPC server answering google.monitoring.v3.MetricService/ListTimeSeries with the
real `monitoring_v3` message types, from a ledger of the requests the tagged revision (a local HTTP server)
really answered; the real `MetricServiceClient` queries it. The Cloud Run Admin API v2 is a local HTTP server
that checks every PATCH against the documented Service.traffic / TrafficTarget shape and answers 400 otherwise.
Time is a fake clock, so a ten-minute watch runs in well under a second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
import requests
from google.api import distribution_pb2
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from delivery.canary import (
    REVISION,
    CanaryFailed,
    CloudRunService,
    RevisionMetrics,
    RolloutError,
    RolloutSettings,
    SyntheticTraffic,
    Thresholds,
    WindowStats,
    bucket_bounds,
    parse_args,
    percentile,
    rollout,
    split,
)
from tests.conftest import ServedRequest

OLD, NEW, TAG = "adroi-api-00001-old", "adroi-api-00002-new", "sha-abc1234"


class FakeClock:
    """Wall-clock time that only moves when the rollout sleeps."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)


def serving(world, statuses: list[dict]) -> None:
    """Set the service's current traffic (as `gcloud run deploy --no-traffic --tag` leaves it)."""
    world.admin.service["traffic"] = [{k: v for k, v in t.items() if k != "uri"} for t in statuses]
    world.admin.service["trafficStatuses"] = statuses


def after_deploy(world) -> list[dict]:
    """Old revision at 100%, the new one tagged at 0%."""
    return [{"type": REVISION, "revision": OLD, "percent": 100},
            {"type": REVISION, "revision": NEW, "percent": 0, "tag": TAG, "uri": world.revision_url}]


def run_rollout(world, clock: FakeClock, **settings):
    """Run the rollout against the stand-ins with `settings` over the defaults."""
    run = CloudRunService(requests.Session(), "proj", "europe-west1", "adroi-api", endpoint=world.run_url,
                          sleep=lambda s: None, settle_seconds=5, poll_seconds=1)
    client = monitoring_v3.MetricServiceClient(
        transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(world.monitoring_target)))
    thresholds = settings.pop("thresholds", Thresholds(max_5xx_ratio=0.01, max_p99_ms=500, min_requests=20))
    options = {"tag": TAG, "watch_seconds": 300, "check_seconds": 60, "synthetic_requests": 10,
               "thresholds": thresholds, **settings}
    return rollout(run, RevisionMetrics(client, "proj"), "adroi-api", RolloutSettings(**options),
                   lambda url: SyntheticTraffic(url, lambda: "token-123"), clock=clock.now, sleep=clock.sleep)


def traffic_of(body: dict) -> list[tuple[str, int, str]]:
    return sorted((t["revision"], t["percent"], t.get("tag", "")) for t in body["traffic"])


# ---- distributions ----------------------------------------------------------------------------------------

def test_bucket_bounds_follow_each_documented_bucket_kind():
    options = distribution_pb2.Distribution.BucketOptions
    assert bucket_bounds(options(linear_buckets={"num_finite_buckets": 3, "width": 10, "offset": 5})) == \
        [5, 15, 25, 35]
    assert bucket_bounds(options(exponential_buckets={"num_finite_buckets": 3, "growth_factor": 2,
                                                      "scale": 1.5})) == [1.5, 3, 6, 12]
    assert bucket_bounds(options(explicit_buckets={"bounds": [1, 10, 100]})) == [1, 10, 100]


@pytest.mark.parametrize(("counts", "q", "expected"), [
    # 98 requests in [0, 10) and 2 in [90, 100): the 99th of 100 is half-way through the last bucket.
    ([0, 98, 0, 0, 0, 0, 0, 0, 0, 0, 2], 0.99, 95.0),
    ([0, 100], 0.5, 5.0),                  # uniform inside one bucket
    ([3], 0.99, 0.0),                      # underflow only: its upper bound
    ([0] * 11 + [4], 0.99, 100.0),         # overflow only: its lower bound
    ([0, 0, 0], 0.99, None),               # no requests
])
def test_percentile_interpolates_inside_the_bucket_holding_the_rank(counts, q, expected):
    bounds = [float(10 * i) for i in range(11)]
    assert percentile(bounds, counts, q) == expected


@pytest.mark.parametrize("previous", [[100], [70, 30], [50, 25, 25], [1, 1, 98], [33, 33, 34]])
@pytest.mark.parametrize("percent", [1, 10, 50, 99])
def test_split_gives_the_canary_its_share_and_scales_the_rest_to_exactly_100(previous, percent):
    targets = [{"type": REVISION, "revision": f"r{i}", "percent": p} for i, p in enumerate(previous)]

    result = split(targets, NEW, TAG, percent, [])

    assert sum(t["percent"] for t in result) == 100
    assert result[-1] == {"type": REVISION, "revision": NEW, "percent": percent, "tag": TAG}
    for t, p in zip(result, previous, strict=False):
        assert abs(t["percent"] - p * (100 - percent) / 100) < 1


# ---- the rollout --------------------------------------------------------------------------------------

def test_a_healthy_canary_gets_10_percent_then_100_percent_with_synthetic_traffic(canary_world):
    serving(canary_world, after_deploy(canary_world))
    clock = FakeClock()

    outcome = run_rollout(canary_world, clock)

    assert outcome.decision == "promoted" and outcome.revision == NEW
    patches = [body for _, body in canary_world.admin.patches]
    assert [traffic_of(b) for b in patches] == [[(OLD, 90, ""), (NEW, 10, TAG)], [(NEW, 100, "")]]
    # Nobody else called the revision: the synthetic requests carried the token and made the count.
    predicts = [r for r in canary_world.revision.seen if r[0] == "POST"]
    assert len(predicts) >= 20 and outcome.stats.requests == len(canary_world.ledger.requests)
    assert outcome.stats.errors_5xx == 0
    # 120 ms lies in the bucket [1.4^14, 1.4^15) = [111.1, 155.6) ms of the exponential buckets.
    assert 1.4 ** 14 <= outcome.stats.p99_ms < 1.4 ** 15
    assert sum(clock.slept) == 300 and max(clock.slept) == 60


def test_monitoring_is_asked_for_the_new_revision_only_since_the_canary_began(canary_world):
    serving(canary_world, after_deploy(canary_world))
    clock = FakeClock()
    began = clock.now()

    run_rollout(canary_world, clock)

    queries = canary_world.monitoring.queries
    assert {q.name for q in queries} == {"projects/proj"}
    assert {q.filter.split('"')[1] for q in queries} == {"run.googleapis.com/request_count",
                                                          "run.googleapis.com/request_latencies"}
    assert all(f'resource.labels.revision_name = "{NEW}"' in q.filter for q in queries)
    assert all(q.interval.start_time == began for q in queries)
    assert queries[-1].interval.end_time == began + timedelta(seconds=300)


def test_a_canary_answering_5xx_is_rolled_back_to_the_previous_revision_and_fails(canary_world):
    serving(canary_world, after_deploy(canary_world))
    canary_world.revision.predict_status = 500

    with pytest.raises(CanaryFailed, match=r"5xx ratio .* above max_5xx_ratio 0\.01") as failure:
        run_rollout(canary_world, FakeClock())

    assert OLD in str(failure.value)
    final = canary_world.admin.patches[-1][1]
    assert traffic_of(final) == [(OLD, 100, "")]
    assert canary_world.admin.service["trafficStatuses"] == final["traffic"]


def test_a_slow_canary_is_rolled_back_as_soon_as_enough_requests_show_it(canary_world):
    serving(canary_world, after_deploy(canary_world))
    canary_world.revision.latency_ms = 900.0
    clock = FakeClock()

    with pytest.raises(CanaryFailed, match=r"p99 latency .* above max_p99_ms 500"):
        run_rollout(canary_world, clock, watch_seconds=600)

    assert sum(clock.slept) == 180  # judged at the third check, the first with 20 requests, not at 600 s
    assert traffic_of(canary_world.admin.patches[-1][1]) == [(OLD, 100, "")]


def test_too_few_requests_to_judge_rolls_back(canary_world):
    serving(canary_world, after_deploy(canary_world))

    with pytest.raises(CanaryFailed, match=r"only 0 requests in 300 s, fewer than min_requests 20"):
        run_rollout(canary_world, FakeClock(), synthetic_requests=0)

    assert canary_world.revision.seen == []
    assert traffic_of(canary_world.admin.patches[-1][1]) == [(OLD, 100, "")]


def test_real_traffic_is_enough_and_no_synthetic_request_is_sent(canary_world):
    serving(canary_world, after_deploy(canary_world))
    clock = FakeClock()
    for i in range(40):  # users' requests the 10% split brought in the first minute
        canary_world.ledger.add(ServedRequest(NEW, clock.now() + timedelta(seconds=1 + i), 200, 80.0))

    outcome = run_rollout(canary_world, clock)

    assert outcome.decision == "promoted" and outcome.stats.requests == 40
    assert canary_world.revision.seen == []


def test_a_split_between_revisions_and_other_tags_are_restored_exactly_on_rollback(canary_world):
    canary_world.admin.revisions = {OLD, NEW, "adroi-api-00000-older", "adroi-api-00003-pinned"}
    serving(canary_world, [
        {"type": REVISION, "revision": OLD, "percent": 70},
        {"type": REVISION, "revision": "adroi-api-00000-older", "percent": 30, "tag": "stable",
         "uri": "https://stable---x"},
        {"type": REVISION, "revision": "adroi-api-00003-pinned", "percent": 0, "tag": "debug", "uri": "https://d"},
        {"type": REVISION, "revision": NEW, "percent": 0, "tag": TAG, "uri": canary_world.revision_url}])
    canary_world.revision.predict_status = 503

    with pytest.raises(CanaryFailed):
        run_rollout(canary_world, FakeClock())

    canary, restore = (body for _, body in canary_world.admin.patches)
    assert traffic_of(canary) == [("adroi-api-00000-older", 27, "stable"), ("adroi-api-00001-old", 63, ""),
                                  (NEW, 10, TAG), ("adroi-api-00003-pinned", 0, "debug")]
    assert traffic_of(restore) == [("adroi-api-00000-older", 30, "stable"), ("adroi-api-00001-old", 70, ""),
                                   ("adroi-api-00003-pinned", 0, "debug")]


def test_first_deploy_moves_all_traffic_at_once_without_watching(canary_world):
    # The Terraform placeholder never served (or was deleted): only the new revision exists, at 0%.
    serving(canary_world, [{"type": REVISION, "revision": NEW, "percent": 0, "tag": TAG,
                            "uri": canary_world.revision_url}])

    outcome = run_rollout(canary_world, FakeClock())

    assert outcome.decision == "first_deploy"
    assert [traffic_of(b) for _, b in canary_world.admin.patches] == [[(NEW, 100, "")]]
    assert canary_world.monitoring.queries == []


def test_a_monitoring_error_during_the_watch_rolls_back_and_propagates(canary_world):
    from google.api_core import exceptions

    serving(canary_world, after_deploy(canary_world))
    canary_world.monitoring.fail_with = grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(exceptions.PermissionDenied):
        run_rollout(canary_world, FakeClock())

    assert traffic_of(canary_world.admin.patches[-1][1]) == [(OLD, 100, "")]


def test_a_missing_tag_stops_before_moving_any_traffic(canary_world):
    serving(canary_world, after_deploy(canary_world))

    with pytest.raises(RolloutError, match=r"no revision of adroi-api carries the tag 'sha-other'"):
        run_rollout(canary_world, FakeClock(), tag="sha-other")

    assert canary_world.admin.patches == []


def test_every_patch_is_a_documented_traffic_update_with_the_current_etag(canary_world):
    serving(canary_world, after_deploy(canary_world))

    run_rollout(canary_world, FakeClock())

    assert [q for q, _ in canary_world.admin.patches] == [{"updateMask": "traffic"}] * 2
    assert [b["etag"] for _, b in canary_world.admin.patches] == ["etag-0", "etag-1"]
    # The stand-in answers 400 to anything else; this proves it does.
    stale = requests.patch(f"{canary_world.run_url}/v2/{canary_world.admin.service['name']}",
                           params={"updateMask": "traffic"}, timeout=5,
                           json={"etag": "etag-2", "traffic": [{"revision": NEW, "percent": 100}]})
    assert stale.status_code == 400 and "type None" in stale.text


def test_a_rejected_traffic_update_is_a_rollout_error_naming_the_answer(canary_world):
    serving(canary_world, after_deploy(canary_world))
    canary_world.admin.revisions = {OLD}  # the new revision vanished between deploy and canary

    with pytest.raises(RolloutError, match=r"HTTP 400: .*revision 'adroi-api-00002-new' does not exist"):
        run_rollout(canary_world, FakeClock())


def test_window_stats_name_each_breach_with_value_and_threshold():
    stats = WindowStats(requests=200, errors_5xx=4, p99_ms=812.5)

    assert stats.breaches(Thresholds(max_5xx_ratio=0.01, max_p99_ms=500, min_requests=50)) == [
        "5xx ratio 0.0200 (4/200) above max_5xx_ratio 0.01", "p99 latency 812.5 ms above max_p99_ms 500"]
    assert stats.breaches(Thresholds(max_5xx_ratio=0.05, max_p99_ms=1000, min_requests=50)) == []


def test_command_line_defaults_match_the_alert_policies():
    args = parse_args(["--project", "p", "--region", "r", "--service", "s", "--tag", "t", "--audience", "a"])

    assert (args.canary_percent, args.max_5xx_ratio, args.max_p99_ms) == (10, 0.01, 500.0)


def test_synthetic_requests_carry_the_token_and_survive_an_unreachable_revision(canary_world, caplog):
    from tests.conftest import free_port

    sent = SyntheticTraffic(canary_world.revision_url, lambda: "token-123").send(3)
    lost = SyntheticTraffic(f"http://127.0.0.1:{free_port()}", lambda: "token-123").send(2)

    assert sent == 3 and lost == 0
    assert [r[:2] for r in canary_world.revision.seen] == [("GET", "/model")] + [("POST", "/predict")] * 3
    assert canary_world.revision.seen[0][2] == "Bearer token-123"
    assert all('"spend": {"email": 1000.0, "video": 1000.0}' in r[2] for r in canary_world.revision.seen[1:])
    assert len([r for r in caplog.records if "synthetic request" in r.getMessage()]) == 2


def test_main_wires_the_command_line_and_credentials_into_the_rollout_and_exits_1_on_rollback(monkeypatch):
    import google.auth
    import google.oauth2.id_token
    from google.auth.credentials import AnonymousCredentials

    from delivery import canary

    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (AnonymousCredentials(), "the-project"))
    monkeypatch.setattr(google.oauth2.id_token, "fetch_id_token", lambda request, audience: f"token-for-{audience}")
    seen, results = [], [canary.Outcome("promoted", NEW), CanaryFailed("p99 900 ms above 500 ms"),
                         RolloutError("PATCH answered 400")]

    def fake_rollout(run, metrics, service, settings, traffic):
        seen.append((run, metrics, service, settings, traffic("https://tag---adroi-api.a.run.app/")))
        result = results[len(seen) - 1]
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(canary, "rollout", fake_rollout)
    argv = ["--project", "p1", "--region", "europe-west1", "--service", "adroi-api", "--tag", TAG,
            "--audience", "https://adroi-api.a.run.app", "--canary-percent", "20", "--watch-seconds", "120",
            "--max-p99-ms", "250", "--synthetic-requests", "0"]

    codes = [canary.main(argv) for _ in results]

    assert codes == [0, 1, 1]
    run, metrics, service, settings, traffic = seen[0]
    assert run.url.endswith("/v2/projects/p1/locations/europe-west1/services/adroi-api")
    assert isinstance(metrics.client, monitoring_v3.MetricServiceClient) and metrics.project == "p1"
    assert service == "adroi-api"
    assert settings == RolloutSettings(tag=TAG, canary_percent=20, watch_seconds=120.0, check_seconds=60.0,
                                       synthetic_requests=0, thresholds=Thresholds(0.01, 250.0, 50))
    assert isinstance(traffic, SyntheticTraffic) and traffic.url == "https://tag---adroi-api.a.run.app"
    assert traffic.token() == "token-for-https://adroi-api.a.run.app"
