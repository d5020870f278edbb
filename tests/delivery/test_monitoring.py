"""monitoring/: alert policies and the channel load into the client library's own types, and every event
they match is a constant of `training.core.events` that the code really emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from google.cloud import monitoring_v3
from google.protobuf.json_format import ParseError

from training.core import events

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted((REPO_ROOT / "monitoring" / "policies").glob("*.json"))
POLICIES = {p.name: json.loads(p.read_text()) for p in POLICY_FILES}
MONITORING_TF = (REPO_ROOT / "infra" / "monitoring.tf").read_text()
EVENT_IN_FILTER = re.compile(r'jsonPayload\.event\s*=\s*"([^"]+)"')
USER_METRIC = re.compile(r'metric\.type\s*=\s*"logging\.googleapis\.com/user/([^"]+)"')
CONSTANT_OF = {value: name for name, value in vars(events).items() if name.isupper() and isinstance(value, str)}


def conditions() -> list[tuple[str, dict]]:
    """(policy file, condition) for every condition of every policy."""
    return [(name, c) for name, policy in POLICIES.items() for c in policy["conditions"]]


def log_filters() -> list[str]:
    """The filter of every log-match condition."""
    return [c["conditionMatchedLog"]["filter"] for _, c in conditions() if "conditionMatchedLog" in c]


def log_metric_filters() -> dict[str, str]:
    """Log-based metric name -> its log filter, from `local.log_metrics` in infra/monitoring.tf."""
    block = re.search(r"log_metrics\s*=\s*\{(.*?)\n\s*\}", MONITORING_TF, re.DOTALL)
    assert block, "infra/monitoring.tf defines no local.log_metrics"
    filters = {name: json.loads(text) for name, text in re.findall(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*")', block.group(1))}
    assert filters, "local.log_metrics is empty"
    return filters


def log_metric_events() -> dict[str, str | None]:
    """Log-based metric name -> event it counts (None: it counts Cloud Run's own request logs)."""
    return {name: next(iter(EVENT_IN_FILTER.findall(text)), None) for name, text in log_metric_filters().items()}


def emitted_constants() -> set[str]:
    """Names X of every `events.X` used in the application code (not in events.py itself)."""
    used = set()
    for folder in ("training", "app"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name != "events.py":
                used |= set(re.findall(r"\bevents\.([A-Z][A-Z0-9_]*)\b", path.read_text()))
    return used


def matched_events() -> set[str]:
    """Every event name an alert depends on: in log filters and behind the log-based metrics."""
    names = {e for f in log_filters() for e in EVENT_IN_FILTER.findall(f)}
    metrics = log_metric_events()
    for _, c in conditions():
        for body in c.values():
            if isinstance(body, dict) and "filter" in body:
                names |= {metrics[m] for m in USER_METRIC.findall(body["filter"]) if metrics[m]}
                names |= {metrics[m] for m in USER_METRIC.findall(body.get("denominatorFilter", "")) if metrics[m]}
    return names


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_loads_into_the_client_librarys_alert_policy(path):
    policy = monitoring_v3.AlertPolicy.from_json(path.read_text(), ignore_unknown_fields=False)

    assert policy.display_name.startswith("adroi: ")
    assert policy.conditions and all(c.display_name for c in policy.conditions)
    assert policy.severity in (monitoring_v3.AlertPolicy.Severity.ERROR, monitoring_v3.AlertPolicy.Severity.WARNING)
    assert policy.documentation.mime_type == "text/markdown"
    assert "**Check first**" in policy.documentation.content
    assert policy.documentation.subject


def test_unknown_fields_are_refused_by_the_same_check():
    bad = dict(POLICIES["model-rejected.json"], severty="WARNING")
    with pytest.raises(ParseError, match="severty"):
        monitoring_v3.AlertPolicy.from_json(json.dumps(bad), ignore_unknown_fields=False)


def test_notification_channel_loads_and_is_an_email_channel():
    text = (REPO_ROOT / "monitoring" / "channels" / "email.json").read_text()
    channel = monitoring_v3.NotificationChannel.from_json(text, ignore_unknown_fields=False)
    assert channel.type_ == "email" and "email_address" in channel.labels


def test_log_match_policies_have_the_notification_rate_limit_the_api_requires():
    for name, policy in POLICIES.items():
        if any("conditionMatchedLog" in c for c in policy["conditions"]):
            assert policy["alertStrategy"]["notificationRateLimit"]["period"], name


def test_every_matched_event_is_a_constant_of_training_events():
    assert matched_events() <= events.ALL_EVENTS


def test_every_matched_event_is_emitted_by_the_code():
    emitted = emitted_constants()
    missing = sorted(CONSTANT_OF[e] for e in matched_events() if CONSTANT_OF[e] not in emitted)
    assert not missing, f"alerts match events nothing emits (no `events.<NAME>` in training/ or app/): {missing}"


def test_the_required_alerts_exist():
    by_event = {e: name for name in POLICIES for f in log_filters() for e in EVENT_IN_FILTER.findall(f)
                if any(c.get("conditionMatchedLog", {}).get("filter") == f for c in POLICIES[name]["conditions"])}
    assert {events.TRAINING_FAILED, events.DATA_INVALID, events.MODEL_REJECTED, events.MODEL_LOAD_FAILED,
            events.MODEL_DEGRADED} <= set(by_event)
    assert POLICIES[by_event[events.MODEL_REJECTED]]["severity"] == "WARNING"
    assert POLICIES[by_event[events.MODEL_DEGRADED]]["severity"] == "WARNING"
    absent = [c["conditionAbsent"] for _, c in conditions() if "conditionAbsent" in c]
    counted = {log_metric_events()[m] for a in absent for m in USER_METRIC.findall(a["filter"])}
    assert {events.MODEL_PROMOTED, events.TRAINING_FINISHED} <= counted
    thresholds = [c["conditionThreshold"] for _, c in conditions() if "conditionThreshold" in c]
    ratio = next(t for t in thresholds if "denominatorFilter" in t and "5xx" in t["filter"])
    assert 'response_code_class="5xx"' in ratio["filter"] and ratio["thresholdValue"] == 0.01
    assert ratio["aggregations"][0]["alignmentPeriod"] == "300s"
    latency = next(t for t in thresholds if "request_latencies" in t["filter"])
    assert latency["aggregations"][0]["crossSeriesReducer"] == "REDUCE_PERCENTILE_99"
    assert latency["thresholdValue"] == 500  # run.googleapis.com/request_latencies is in ms


def test_absence_covers_about_48_hours_within_the_apis_limits():
    for _, c in conditions():
        if "conditionAbsent" in c:
            window = int(c["conditionAbsent"]["aggregations"][0]["alignmentPeriod"].rstrip("s"))
            absent_for = int(c["conditionAbsent"]["duration"].rstrip("s"))
            assert absent_for <= 23.5 * 3600 and absent_for % 60 == 0  # the API's maximum, whole minutes
            assert 47 * 3600 <= window + absent_for <= 48 * 3600


def test_cloud_run_policies_watch_the_service_cloud_build_deploys():
    service = yaml.safe_load((REPO_ROOT / "cloudbuild.yaml").read_text())["substitutions"]["_SERVICE"]
    for name, c in conditions():
        body = next(v for v in c.values() if isinstance(v, dict))
        if "cloud_run_revision" in body["filter"]:
            assert f'resource.labels.service_name="{service}"' in body["filter"], name


def _keys(node: object, skip: frozenset[str] = frozenset({"labelExtractors"})) -> set[str]:
    if isinstance(node, dict):
        found = set(node)
        for key, value in node.items():
            if key not in skip:
                found |= _keys(value)
        return found
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node)) if node else set()
    return set()


def test_terraform_maps_every_field_the_policy_files_use():
    """infra/monitoring.tf builds the policies from these files: a field it does not read would be dropped."""
    used = set().union(*(_keys(p) for p in POLICIES.values()))
    unread = {k for k in used if not re.search(rf'(\.{k}\b|"{k}")', MONITORING_TF)}
    assert not unread, f"fields in monitoring/policies that infra/monitoring.tf ignores: {sorted(unread)}"


def test_every_log_based_metric_a_policy_uses_is_defined_in_terraform():
    used = {m for _, c in conditions() for body in c.values() if isinstance(body, dict)
            for m in USER_METRIC.findall(body.get("filter", "") + body.get("denominatorFilter", ""))}
    assert used <= set(log_metric_filters())


def test_serving_skew_alert_is_the_share_of_out_of_range_requests_in_an_hour():
    policy = POLICIES["prediction-out-of-range.json"]
    ratio, volume = (c["conditionThreshold"] for c in policy["conditions"])

    assert policy["combiner"] == "AND" and policy["severity"] == "WARNING"
    assert USER_METRIC.findall(ratio["filter"]) == ["adroi_prediction_out_of_range"]
    assert USER_METRIC.findall(ratio["denominatorFilter"]) == ["adroi_prediction_requests"]
    assert ratio["thresholdValue"] == 0.1 and ratio["comparison"] == "COMPARISON_GT"
    assert {a["alignmentPeriod"] for a in ratio["aggregations"] + ratio["denominatorAggregations"]
            + volume["aggregations"]} == {"3600s"}
    assert USER_METRIC.findall(volume["filter"]) == ["adroi_prediction_requests"] and volume["thresholdValue"] == 19
    assert "10%" in policy["displayName"] and "20 requests" in policy["documentation"]["content"]
    filters = log_metric_filters()
    assert EVENT_IN_FILTER.findall(filters["adroi_prediction_out_of_range"]) == [events.PREDICTION_OUT_OF_RANGE]
    requests = filters["adroi_prediction_requests"]
    assert 'log_id("run.googleapis.com/requests")' in requests and 'httpRequest.requestMethod="POST"' in requests
    assert '"/predict"' in requests and '"/allocate"' in requests
    assert 'service_name="${local.service_name}"' in requests


def test_degraded_alert_documents_the_band_and_where_to_look():
    policy = POLICIES["model-degraded.json"]
    content = policy["documentation"]["content"]
    assert EVENT_IN_FILTER.findall(policy["conditions"][0]["conditionMatchedLog"]["filter"]) == [events.MODEL_DEGRADED]
    for text in ("monitoring.degraded_rmse_factor", "monitoring.degraded_rmse_sigmas", "monitoring.min_realised_periods",
                 "realised_rmse_limit", "realised_performance.png", "python -m training history"):
        assert text in content, text
