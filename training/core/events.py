"""Log event names shared by the pipeline, the API and the Cloud Monitoring alert policies.

Alert policies under `monitoring/policies/` match `jsonPayload.event="<name>"`; a test checks that every
name they use is defined here and emitted by the code.
"""

from __future__ import annotations

TRAINING_STARTED = "training_started"
DATA_INVALID = "data_invalid"
MODEL_REJECTED = "model_rejected"
MODEL_PROMOTED = "model_promoted"
TRAINING_FAILED = "training_failed"
TRAINING_FINISHED = "training_finished"
MODEL_ROLLED_BACK = "model_rolled_back"

MODEL_PERFORMANCE = "model_performance"  # the champion scored on periods it never saw (every run that can)
MODEL_DEGRADED = "model_degraded"  # ... with an error above what its cross-validation promised

MODEL_LOADED = "model_loaded"
MODEL_LOAD_FAILED = "model_load_failed"
# A /predict or /allocate request with spend beyond what the model saw in training (one line per request).
PREDICTION_OUT_OF_RANGE = "prediction_out_of_range"

ALL_EVENTS = frozenset(
    {
        TRAINING_STARTED,
        DATA_INVALID,
        MODEL_REJECTED,
        MODEL_PROMOTED,
        TRAINING_FAILED,
        TRAINING_FINISHED,
        MODEL_ROLLED_BACK,
        MODEL_PERFORMANCE,
        MODEL_DEGRADED,
        MODEL_LOADED,
        MODEL_LOAD_FAILED,
        PREDICTION_OUT_OF_RANGE,
    }
)
