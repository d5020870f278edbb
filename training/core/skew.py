"""Serving skew: requests whose spend lies outside what the served model was trained on (numpy only).

The API calls `out_of_range` (or `report_out_of_range`, which also logs) once per `/predict` or `/allocate`
request with the model's channels, the request's spend (one instance or a batch) and the largest spend per
period each channel had in training (`max_spend_seen`, read from the manifest). One request logs at most one
`prediction_out_of_range` line, whatever its batch size, so the log-based metric
`adroi_prediction_out_of_range` counts requests and compares with `adroi_prediction_requests` (alert:
`monitoring/policies/prediction-out-of-range.json`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.core import events

log = logging.getLogger(__name__)


def max_spend_seen(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Return the largest spend per training period of each channel from a manifest's `response_curves`."""
    curves = (manifest.get("response_curves") or {}).get("channels") or {}
    return {str(c): float(v["max_spend_seen"]) for c, v in curves.items()
            if isinstance(v, Mapping) and v.get("max_spend_seen") is not None}


def out_of_range(channels: Sequence[str], spend: Any, max_seen: Mapping[str, float] | Sequence[float]) -> list[str]:
    """Return the channels whose spend (one row (C,) or a batch (N, C), channel order) exceeds `max_seen`.

    `max_seen` is per channel (a mapping by name, or values in channel order); a channel without a known
    maximum is never flagged. Negative spend is rejected by the API before this, so only the top is checked.
    """
    names = [str(c) for c in channels]
    matrix = np.atleast_2d(np.asarray(spend, dtype=np.float64))
    if matrix.shape[1] != len(names):
        raise ValueError(f"spend: expected {len(names)} values per row (one per channel), got {matrix.shape[1]}")
    if isinstance(max_seen, Mapping):
        limits = np.array([float(max_seen.get(c, np.inf)) for c in names], dtype=np.float64)
    else:
        limits = np.asarray(max_seen, dtype=np.float64).reshape(-1)
        if limits.shape[0] != len(names):
            raise ValueError(f"max_seen: expected {len(names)} values (one per channel), got {limits.shape[0]}")
    above = (matrix > limits).any(axis=0)
    return [name for name, flagged in zip(names, above, strict=True) if flagged]


def report_out_of_range(channels: Sequence[str], spend: Any, max_seen: Mapping[str, float] | Sequence[float],
                        model_version: str | None, endpoint: str = "/predict") -> list[str]:
    """Return `out_of_range(...)`, logging one `prediction_out_of_range` WARNING when it is not empty."""
    flagged = out_of_range(channels, spend, max_seen)
    if flagged:
        log.warning("%s: spend above the trained range of model %s for %s", endpoint, model_version,
                    ", ".join(flagged), extra={"event": events.PREDICTION_OUT_OF_RANGE, "model_version": model_version,
                                               "channels": flagged, "endpoint": endpoint})
    return flagged
