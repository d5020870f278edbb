"""The model follower: one background thread per worker that keeps the newest good model in hand.

Each poll reads only the generation of `models/LATEST` (a metadata request). When it changed, the follower
reads the pointer, downloads and verifies the version it names, and replaces `current` in one assignment;
a request reads `current` once, so it finishes on the model it started with. Any failure keeps the last
good model and logs `model_load_failed`; the next poll tries again.
"""

from __future__ import annotations

import logging
import threading
import time

from app.model import ServedModel, load_served_model
from training.core import events
from training.core.registry import ModelRegistry

log = logging.getLogger(__name__)


class ModelFollower:
    """Polls the registry and holds the served model (`current`, None until one loads)."""

    def __init__(self, registry: ModelRegistry, poll_seconds: float):
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self._seen_generation: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self._swapped = threading.Condition()

    def poll_once(self) -> bool:
        """Check `LATEST` once and load the version it names if it changed; return True on a swap."""
        with self._poll_lock:
            try:
                return self._poll()
            except Exception as exc:  # whatever broke, the last good model keeps serving
                self.last_error = str(exc)
                serving = self.current.version if self.current else None
                log.error("model load failed, still serving %s: %s", serving or "nothing", exc,
                          extra={"event": events.MODEL_LOAD_FAILED, "model_version": serving,
                                 "reason": str(exc), "store": self.registry.store.uri})
                return False

    def _poll(self) -> bool:
        generation = self.registry.pointer_generation()
        if generation is None or generation == self._seen_generation:
            if generation is None and self.current is None:
                self.last_error = f"no model promoted yet in {self.registry.store.uri}"
            return False
        pointer = self.registry.latest()
        if pointer is None:  # deleted between the two reads; keep what we serve
            return False
        if self.current and (pointer.version, pointer.sha256) == (self.current.version, self.current.sha256):
            self._seen_generation = pointer.generation
            return False
        started = time.perf_counter()
        model = load_served_model(self.registry, pointer)
        with self._swapped:
            previous, self.current = self.current, model
            self._swapped.notify_all()
        self._seen_generation, self.last_error = pointer.generation, None
        log.info("serving model %s", model.version, extra={
            "event": events.MODEL_LOADED, "model_version": model.version,
            "previous_version": previous.version if previous else None,
            "load_ms": round((time.perf_counter() - started) * 1000, 1)})
        return True

    def wait_for_version(self, version: str, timeout: float) -> bool:
        """Block until the served model is `version` (True) or `timeout` seconds pass (False)."""
        with self._swapped:
            return self._swapped.wait_for(
                lambda: self.current is not None and self.current.version == version, timeout)

    def start(self) -> None:
        """Start the polling thread (a daemon: it never holds the worker open)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()
