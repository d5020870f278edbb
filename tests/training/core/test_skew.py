"""training/core/skew.py: which channels of a request lie above the trained range, and the one log line."""

from __future__ import annotations

import numpy as np
import pytest

from training.core import events, skew

CHANNELS = ["email", "video", "search_engine"]
MAX_SEEN = {"email": 100.0, "video": 200.0, "search_engine": 300.0}


def test_one_instance_names_the_channels_above_their_maximum():
    assert skew.out_of_range(CHANNELS, [100.0, 200.5, 10.0], MAX_SEEN) == ["video"]
    assert skew.out_of_range(CHANNELS, [0.0, 0.0, 0.0], MAX_SEEN) == []


def test_a_batch_flags_a_channel_when_any_instance_is_above():
    batch = np.array([[10.0, 10.0, 10.0], [101.0, 10.0, 10.0], [10.0, 10.0, 301.0]])
    assert skew.out_of_range(CHANNELS, batch, MAX_SEEN) == ["email", "search_engine"]


def test_maxima_in_channel_order_and_unknown_channels():
    assert skew.out_of_range(CHANNELS, [1e9, 1.0, 1.0], [100.0, 200.0, 300.0]) == ["email"]
    assert skew.out_of_range(CHANNELS, [1e9, 1e9, 1.0], {"video": 5.0}) == ["video"]  # email: no maximum known


@pytest.mark.parametrize(("spend", "max_seen", "message"), [
    ([1.0, 2.0], MAX_SEEN, "spend: expected 3 values per row"),
    ([1.0, 2.0, 3.0], [1.0], "max_seen: expected 3 values"),
])
def test_shapes_that_do_not_match_the_channels_are_refused(spend, max_seen, message):
    with pytest.raises(ValueError, match=message):
        skew.out_of_range(CHANNELS, spend, max_seen)


def test_max_spend_seen_is_read_from_the_manifests_response_curves():
    manifest = {"response_curves": {"grain": "month", "channels": {
        "email": {"form": "hill", "max_spend_seen": 120.5}, "video": {"form": "linear", "max_spend_seen": 80}}}}
    assert skew.max_spend_seen(manifest) == {"email": 120.5, "video": 80.0}
    assert skew.max_spend_seen({"channels": ["email"]}) == {}


def test_report_logs_one_prediction_out_of_range_event_per_request(json_log):
    flagged = skew.report_out_of_range(CHANNELS, [[1e6, 1e6, 1.0]] * 50, MAX_SEEN, "v1")
    assert skew.report_out_of_range(CHANNELS, [1.0, 1.0, 1.0], MAX_SEEN, "v1") == []

    lines = [line for line in json_log() if line.get("event")]
    assert flagged == ["email", "video"]
    assert len(lines) == 1  # one line for a batch of 50, none for a request within range
    assert lines[0]["event"] == events.PREDICTION_OUT_OF_RANGE and lines[0]["severity"] == "WARNING"
    assert lines[0]["channels"] == ["email", "video"] and lines[0]["model_version"] == "v1"
    assert lines[0]["endpoint"] == "/predict"
