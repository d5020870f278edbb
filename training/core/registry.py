"""Model registry in the store: immutable versions and a compare-and-swap `LATEST` pointer.

Layout under the store root:

    models/<version>/model.joblib    the fitted scikit-learn estimator
    models/<version>/manifest.json   what a person or the API needs to trust it (sha256, channels, ROI, ...)
    models/<version>/...             plots, validation report (written before the manifest)
    models/LATEST                    {"version", "sha256", "promoted_at", "previous", "reason"}

`<version>` is `YYYYmmddTHHMMSSZ-<first 8 hex of sha256>` so names sort by time. The manifest is written
last: a version without one is incomplete and ignored. A version folder is never modified once its
manifest exists. `LATEST` only moves through `promote`, which verifies the version's files first and then
writes the pointer with a generation precondition, so two concurrent publishers cannot both win.

This module is the contract between training and serving: it must stay importable without pandas.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from training.core import events
from training.core.errors import ModelIntegrityError, ObjectNotFound, PreconditionFailed
from training.core.store import Store, sha256_hex

log = logging.getLogger(__name__)

MODELS_PREFIX = "models"
LATEST_KEY = f"{MODELS_PREFIX}/LATEST"
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1

_READ_CURRENT = object()


class VersionExists(ModelIntegrityError):
    """A different model was already written under this version name."""


@dataclass(frozen=True)
class Pointer:
    """The parsed `LATEST` object and the generation it was read at."""

    version: str
    sha256: str
    generation: int
    promoted_at: str = ""
    previous: str | None = None
    reason: str = ""


def version_name(created_at: datetime, model_bytes: bytes) -> str:
    """Return a version name that sorts by creation time and names the content."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{sha256_hex(model_bytes)[:8]}"


def _key(version: str, name: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise ModelIntegrityError(str(version), "invalid version name")
    return f"{MODELS_PREFIX}/{version}/{name}"


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


class ModelRegistry:
    """Versions, manifests and the `LATEST` pointer of one store."""

    def __init__(self, store: Store):
        self.store = store

    # ---- writing ---------------------------------------------------------------------------------
    def publish(
        self,
        version: str,
        model_bytes: bytes,
        manifest: dict[str, Any],
        extra_files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """Write a complete version (extra files, model, then manifest) and return the final manifest.

        If a write fails, the files already written are removed, so no half version is left behind.
        Re-publishing the same model bytes under the same version is a no-op (a retried task); a
        different model under an existing version raises `VersionExists`.
        """
        digest = sha256_hex(model_bytes)
        manifest_key = _key(version, MANIFEST_FILE)
        if self.store.exists(manifest_key):
            existing = self.manifest(version)
            if existing.get("sha256") == digest:
                return existing
            raise VersionExists(version, "already published with different content")
        final = {
            **manifest,
            "format": MANIFEST_FORMAT,
            "version": version,
            "sha256": digest,
            "size": len(model_bytes),
            "files": sorted([MODEL_FILE, MANIFEST_FILE, *(extra_files or {})]),
        }
        try:
            for name, data in (extra_files or {}).items():
                self.store.write(_key(version, name), data, content_type=_content_type(name))
            self.store.write(_key(version, MODEL_FILE), model_bytes)
            self.store.write(_key(version, MANIFEST_FILE), _dumps(final), content_type="application/json")
        except Exception:
            self._remove_incomplete(version)
            raise
        return final

    def _remove_incomplete(self, version: str) -> None:
        """Delete what a failed publish wrote, unless its manifest made it (then the version is complete)."""
        with contextlib.suppress(Exception):  # the store may be what failed; an incomplete version is ignored
            if not self.store.exists(_key(version, MANIFEST_FILE)):
                for key in self.store.list(f"{MODELS_PREFIX}/{version}"):
                    self.store.delete(key)

    def has_version(self, version: str) -> bool:
        """Say whether `version` is complete (its manifest exists)."""
        return self.store.exists(_key(version, MANIFEST_FILE))

    def promote(
        self, version: str, expected_generation: Any = _READ_CURRENT, reason: str = "", run_id: str | None = None
    ) -> Pointer:
        """Verify `version` and point `LATEST` at it, only if `LATEST` is still at `expected_generation`.

        Without `expected_generation` the current pointer is read first (a rollback by a person). A
        pipeline passes the generation it gated against, so a concurrent promotion makes this raise
        `PreconditionFailed` instead of silently replacing a newer champion.
        """
        manifest, _ = self.verify(version)
        current = self.latest()
        if expected_generation is _READ_CURRENT:
            expected_generation = current.generation if current else None
        body = {
            "version": version,
            "sha256": manifest["sha256"],
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "previous": current.version if current and current.version != version else
            (current.previous if current else None),
            "reason": reason,
        }
        generation = self.store.write_if_generation(LATEST_KEY, _dumps(body), expected_generation)
        log.info("promoted %s", version,
                 extra={"event": events.MODEL_PROMOTED, "model_version": version, "run_id": run_id})
        return Pointer(version, manifest["sha256"], generation, body["promoted_at"], body["previous"], reason)

    # ---- reading ---------------------------------------------------------------------------------
    def latest(self) -> Pointer | None:
        """Return the current `LATEST` pointer, or None when nothing was ever promoted."""
        try:
            data, generation = self.store.read_with_generation(LATEST_KEY)
        except ObjectNotFound:
            return None
        try:
            body = json.loads(data)
            return Pointer(str(body["version"]), str(body["sha256"]), generation, str(body.get("promoted_at", "")),
                           body.get("previous"), str(body.get("reason", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelIntegrityError("LATEST", f"unreadable pointer: {exc}") from exc

    def pointer_generation(self) -> int | None:
        """Return the generation of `LATEST` (a metadata call: cheap enough to poll)."""
        return self.store.generation(LATEST_KEY)

    def manifest(self, version: str) -> dict[str, Any]:
        """Return the manifest of `version`."""
        try:
            return json.loads(self.store.read(_key(version, MANIFEST_FILE)))
        except ObjectNotFound as exc:
            raise ModelIntegrityError(version, "no manifest.json (missing or incomplete version)") from exc
        except ValueError as exc:
            raise ModelIntegrityError(version, f"manifest.json is not valid JSON: {exc}") from exc

    def verify(self, version: str, expected_sha256: str | None = None) -> tuple[dict[str, Any], bytes]:
        """Return the manifest and model bytes of `version` after checking size and sha256."""
        manifest = self.manifest(version)
        try:
            model_bytes = self.store.read(_key(version, MODEL_FILE))
        except ObjectNotFound as exc:
            raise ModelIntegrityError(version, "model.joblib is missing") from exc
        digest = sha256_hex(model_bytes)
        if digest != manifest.get("sha256"):
            raise ModelIntegrityError(
                version, f"sha256 of model.joblib is {digest}, manifest says {manifest.get('sha256')}")
        if expected_sha256 and digest != expected_sha256:
            raise ModelIntegrityError(version, f"sha256 of model.joblib is {digest}, LATEST says {expected_sha256}")
        if manifest.get("size") not in (None, len(model_bytes)):
            raise ModelIntegrityError(version, f"model.joblib is {len(model_bytes)} bytes, manifest says "
                                               f"{manifest.get('size')}")
        return manifest, model_bytes

    def load(self, version: str, expected_sha256: str | None = None) -> tuple[dict[str, Any], Any]:
        """Verify `version`, then unpickle its model (never before the hash checks out)."""
        import joblib  # deferred: only needed once a verified model is in hand

        manifest, model_bytes = self.verify(version, expected_sha256)
        try:
            model = joblib.load(io.BytesIO(model_bytes))
        except Exception as exc:  # any unpickling failure means the version cannot be served
            raise ModelIntegrityError(version, f"model.joblib does not load: {exc}") from exc
        return manifest, model

    def versions(self) -> list[str]:
        """Return the names of all complete versions (with a manifest), oldest first."""
        keys = self.store.list(MODELS_PREFIX)
        return sorted(k.split("/")[1] for k in keys if k.count("/") == 2 and k.endswith("/" + MANIFEST_FILE))

    def list_versions(self) -> list[dict[str, Any]]:
        """Return one summary per version, newest first, marking the one `LATEST` points at."""
        latest = self.latest()
        rows = []
        for version in reversed(self.versions()):
            m = self.manifest(version)
            rows.append({
                "version": version,
                "status": m.get("status"),
                "created_at": m.get("created_at"),
                "latest": bool(latest and latest.version == version),
                "metrics": m.get("metrics", {}).get("holdout", {}),
                "gate_reason": m.get("gate", {}).get("reason"),
            })
        return rows


def _content_type(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".png"):
        return "image/png"
    return "application/octet-stream"


__all__ = [
    "LATEST_KEY",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ModelRegistry",
    "Pointer",
    "PreconditionFailed",
    "VersionExists",
    "version_name",
]
