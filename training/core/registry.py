"""Model registry in the store: immutable versions and a compare-and-swap `LATEST` pointer.

Layout under the store root:

    models/<version>/model.joblib    the model spec (plain data and numpy arrays; see `training.core.artifact`)
    models/<version>/manifest.json   what a person or the API needs to trust it (sha256, channels, ROI, ...)
    models/<version>/...             plots, validation report (written before the manifest)
    models/LATEST                    {"version", "sha256", "promoted_at", "previous", "reason"}

`<version>` is `YYYYmmddTHHMMSSZ-<first 8 hex of sha256>` so names sort by time; any other name is refused.
The manifest is written last: a version without one is incomplete (`list_versions` shows it, `gc` removes
it). A version folder is never modified once its manifest exists. `LATEST` only moves through `promote`,
which runs the same verification as the API (`load`: sha256, restricted load, spec against manifest) and
then writes the pointer with a generation precondition, so two concurrent publishers cannot both win.

This module is the contract between training and serving: it must stay importable without pandas.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from training.core import events
from training.core.artifact import verify_model
from training.core.errors import ModelIntegrityError, ObjectNotFound, PreconditionFailed
from training.core.store import ObjectInfo, Store, sha256_hex

log = logging.getLogger(__name__)

MODELS_PREFIX = "models"
LATEST_KEY = f"{MODELS_PREFIX}/LATEST"
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
VERSION_PATTERN = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
VERSION_FORMAT = "YYYYmmddTHHMMSSZ-<8 hex digits>"

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


def check_version_name(version: str) -> str:
    """Return `version` if it has the shape `version_name` gives, else raise ModelIntegrityError."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        shown = version if not isinstance(version, str) or len(version) <= 60 else \
            f"{version[:40]}... ({len(version)} characters)"
        raise ModelIntegrityError(repr(shown), f"invalid version name: expected {VERSION_FORMAT}, "
                                               "as `versions` lists them")
    return version


def _key(version: str, name: str) -> str:
    return f"{MODELS_PREFIX}/{check_version_name(version)}/{name}"


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

        Without `expected_generation` the current pointer is read first (a rollback by a person); a pointer
        that is not readable is replaced (logged), since it names no version anyone could serve. A
        pipeline passes the generation it gated against, so a concurrent promotion makes this raise
        `PreconditionFailed` instead of silently replacing a newer champion.
        """
        manifest, _ = self.load(version)
        try:
            current = self.latest()
        except ModelIntegrityError as exc:
            if expected_generation is not _READ_CURRENT:
                raise
            current = None
            expected_generation = self.pointer_generation()
            log.warning("replacing unreadable %s (%s) with a pointer to %s", LATEST_KEY, exc.reason, version,
                        extra={"run_id": run_id, "model_version": version})
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
            manifest = json.loads(self.store.read(_key(version, MANIFEST_FILE)))
        except ObjectNotFound as exc:
            raise ModelIntegrityError(version, "no manifest.json (missing or incomplete version)") from exc
        except ValueError as exc:
            raise ModelIntegrityError(version, f"manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise ModelIntegrityError(version, f"manifest.json holds a JSON {type(manifest).__name__}: expected an "
                                               "object")
        return manifest

    def load(self, version: str, expected_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the manifest and model spec of `version` after the one verification everything uses.

        Size and sha256 against the manifest (and `expected_sha256`, LATEST's), a load that runs no code
        from the file and allocates at most `artifact.MAX_MODEL_BYTES`, then the spec against the manifest
        (`artifact.verify_model`). Training's gate, `promote` and the API all call this.
        """
        manifest = self.manifest(version)
        try:
            model_bytes = self.store.read(_key(version, MODEL_FILE))
        except ObjectNotFound as exc:
            raise ModelIntegrityError(version, "model.joblib is missing") from exc
        return manifest, verify_model(version, manifest, model_bytes, expected_sha256)

    verify = load  # one verification: the name promote and the API used before

    def versions(self) -> list[str]:
        """Return the names of all complete versions (with a manifest), oldest first."""
        keys = self.store.list(MODELS_PREFIX)
        return sorted(k.split("/")[1] for k in keys if k.count("/") == 2 and k.endswith("/" + MANIFEST_FILE))

    def _folders(self) -> dict[str, list[ObjectInfo]]:
        """Return every folder under `models/` with the objects in it, partial writes included."""
        folders: dict[str, list[ObjectInfo]] = {}
        for info in [*self._objects(), *self.store.temporary(MODELS_PREFIX)]:
            parts = info.key.split("/")
            if len(parts) >= 3:
                folders.setdefault(parts[1], []).append(info)
        return folders

    def _objects(self) -> list[ObjectInfo]:
        infos = []
        for key in self.store.list(MODELS_PREFIX):
            if key.count("/") >= 2:
                with contextlib.suppress(ObjectNotFound):  # removed since the listing
                    infos.append(self.store.info(key))
        return infos

    def list_versions(self) -> list[dict[str, Any]]:
        """Return one row per version folder, newest first: complete ones with their summary, broken and
        incomplete ones marked (`status` "broken" / "incomplete", `problem` says why)."""
        try:
            latest = self.latest()
        except ModelIntegrityError:
            latest = None  # an unreadable pointer must not hide the versions (`promote` replaces it)
        rows = []
        for version, objects in sorted(self._folders().items(), reverse=True):
            row: dict[str, Any] = {"version": version, "status": None, "created_at": None,
                                   "latest": bool(latest and latest.version == version), "metrics": {},
                                   "gate_reason": None, "problem": None}
            names = {o.key.split("/", 2)[2] for o in objects}
            if not VERSION_PATTERN.fullmatch(version):
                row |= {"status": "broken", "problem": f"not a version name (expected {VERSION_FORMAT})"}
            elif MANIFEST_FILE not in names:
                newest = max((o.updated for o in objects if o.updated is not None), default=None)
                row |= {"status": "incomplete", "problem": "no manifest.json (a publish that did not finish)",
                        "created_at": None if newest is None else
                        datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds")}
            else:
                try:
                    m = self.manifest(version)
                    row |= {"status": m.get("status"), "created_at": m.get("created_at"),
                            "metrics": (m.get("metrics") or {}).get("holdout", {}),
                            "gate_reason": (m.get("gate") or {}).get("reason")}
                except ModelIntegrityError as exc:
                    row |= {"status": "broken", "problem": exc.reason}
                except AttributeError:  # a field of the wrong JSON type
                    row |= {"status": "broken", "problem": "manifest.json has metrics or gate of the wrong type"}
            rows.append(row)
        return rows

    def gc(self, older_than_seconds: float, dry_run: bool = False) -> list[str]:
        """Remove incomplete version folders and partial writes untouched for `older_than_seconds`.

        A complete version (one with its manifest) is never touched; neither is anything newer than the
        limit, which may be a publish still running. Returns the keys removed (or that would be).
        """
        cutoff = time.time() - older_than_seconds

        def stale(objects: list[ObjectInfo]) -> bool:
            return all(o.updated is not None and o.updated < cutoff for o in objects)

        removed: list[str] = []
        for version, objects in sorted(self._folders().items()):
            complete = any(o.key.split("/", 2)[2] == MANIFEST_FILE for o in objects)
            if complete or not objects or not stale(objects):
                continue
            # Checked again just before deleting: a publish may have finished since the listing.
            if self.store.exists(f"{MODELS_PREFIX}/{version}/{MANIFEST_FILE}"):
                continue
            removed += [o.key for o in objects]
        temporary = [o for o in self.store.temporary("") if o.key not in removed and stale([o])]
        removed += [o.key for o in temporary]
        if not dry_run:
            for key in removed:
                self.store.delete(key)
        log.info("gc %s %d object(s) in %s", "would remove" if dry_run else "removed", len(removed),
                 self.store.uri)
        return removed


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
    "VERSION_PATTERN",
    "VersionExists",
    "check_version_name",
    "version_name",
]
