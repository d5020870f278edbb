"""Object store: the one place that reads and writes files, on local disk or in Cloud Storage.

`open_store("gs://bucket/prefix")` gives a `GCSStore`, anything else a `LocalStore` rooted at that folder.
Keys are relative, `/`-separated paths (`models/LATEST`, `spend/2024-01.csv`). Both backends give the same
guarantees:

- `write` is all-or-nothing: a reader sees the old object, the new one, or none, never half of one.
- every object has an integer `generation` that changes whenever its content does (GCS: the object
  generation; local: derived from the file's inode, size and modification time, and for small files such
  as `LATEST` its bytes, so a file rewritten by hand or in place gets a new one), and `write_if_generation`
  is a compare-and-swap on it (`expected=None` means "only if absent"). This is what moves the `LATEST`
  pointer safely, and what lets a reader pin the version of an input it listed.
- reading needs no write access (a read-only folder or an objectViewer role is enough); local files are
  created with the permissions the umask allows, like any other file the user writes.

No pandas, no scikit-learn here: the API imports this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from training.core.errors import (
    ConfigError,
    ObjectChanged,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
)


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object without reading it."""

    key: str
    size: int
    generation: int
    checksum: str  # GCS: base64 md5 (or crc32c); local: "size:mtime_ns"
    updated: float | None = None  # last write, seconds since the epoch


class Store(Protocol):
    """The narrow interface every backend implements."""

    uri: str

    def read(self, key: str) -> bytes: ...
    def read_with_generation(self, key: str) -> tuple[bytes, int]: ...
    def open_read(self, key: str, generation: int | None = None) -> IO[bytes]: ...
    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int: ...
    def write_if_generation(
        self, key: str, data: bytes, expected: int | None, content_type: str = "application/json"
    ) -> int: ...
    def generation(self, key: str) -> int | None: ...
    def info(self, key: str) -> ObjectInfo: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def temporary(self, prefix: str = "") -> list[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def uri_for(self, key: str) -> str: ...


def _clean_key(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise StorageError(f"invalid object key {key!r}: expected a relative path without '..'")
    return "/".join(parts)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


# Files up to this size get their bytes in the generation: a hand edit of `LATEST` within the
# filesystem's timestamp granularity, with the same length, still changes it.
CONTENT_GENERATION_BYTES = 64 * 1024
TEMPORARY_SUFFIX = ".tmp"


def _umask() -> int:
    """Return the process umask without changing it (Linux reports it in /proc; elsewhere set and restore)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _generation_of(st: os.stat_result, head: bytes | None) -> int:
    """Return a positive 63-bit generation for a file's identity, size, mtime and (small files) content."""
    digest = hashlib.sha256(f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:".encode())
    if head is not None:
        digest.update(head)
    return (int.from_bytes(digest.digest()[:8], "big") >> 1) or 1


class _PinnedFile(io.BufferedReader):
    """A local file opened at a generation: closing it fails if the file changed while it was read."""

    def __init__(self, raw: io.FileIO, uri: str, generation: int, st: os.stat_result):
        super().__init__(raw)
        self._uri, self._generation, self._stat = uri, generation, st

    def close(self) -> None:
        """Close, raising ObjectChanged if the file was rewritten in place during the read."""
        if self.closed:
            return
        try:
            now = os.fstat(self.fileno())
        finally:
            super().close()
        if (now.st_size, now.st_mtime_ns) != (self._stat.st_size, self._stat.st_mtime_ns):
            raise ObjectChanged(self._uri, self._generation, None)


class LocalStore:
    """A folder on local disk standing in for a bucket (the embedded default)."""

    _LOCK_DIR = ".generations"  # holds only the writers' lock (older versions kept counters here)

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def uri_for(self, key: str) -> str:
        """Return the path of `key` as a person would type it."""
        return str(self._path(key))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise writers across threads and processes of this machine (readers never take it)."""
        lock_path = self.root / self._LOCK_DIR / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _generation_of_open(fh: IO[bytes]) -> tuple[int, os.stat_result]:
        """Return the generation of an open file (its own inode, whatever replaced the path since)."""
        st = os.fstat(fh.fileno())
        head = None
        if st.st_size <= CONTENT_GENERATION_BYTES:
            head = os.pread(fh.fileno(), CONTENT_GENERATION_BYTES + 1, 0)
        return _generation_of(st, head), st

    def _current_generation(self, key: str) -> int | None:
        try:
            with open(self._path(key), "rb") as fh:
                return self._generation_of_open(fh)[0]
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _atomic_write(self, path: Path, data: bytes, previous: int | None) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a store file is as readable as any other
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                generation, st = self._generation_of_open(fh)
                if generation == previous:
                    # Same inode number reused, same size and timestamp tick: move the mtime on so the
                    # generation changes with every write, as GCS's does.
                    os.utime(fh.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns + 1))
                    generation = self._generation_of_open(fh)[0]
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return generation

    def _write_locked(self, key: str, data: bytes) -> int:
        return self._atomic_write(self._path(key), data, self._current_generation(key))

    def read(self, key: str) -> bytes:
        """Return the whole object."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(self.uri_for(key)) from exc

    def read_with_generation(self, key: str) -> tuple[bytes, int]:
        """Return the object and the generation it was read at (no lock: a reader needs no write access)."""
        try:
            with open(self._path(key), "rb") as fh:
                data = fh.read()
                # Stat after reading: a write that replaced the path left this inode alone; one in place
                # since the read gives a generation matching neither version, so a CAS on it fails safely.
                st = os.fstat(fh.fileno())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(self.uri_for(key)) from exc
        head = data if st.st_size <= CONTENT_GENERATION_BYTES else None
        return data, _generation_of(st, head)

    def open_read(self, key: str, generation: int | None = None) -> IO[bytes]:
        """Open the object for streaming reads; with `generation`, only if it is still at that generation
        (and closing the file raises ObjectChanged if it was rewritten in place while being read)."""
        try:
            raw = io.FileIO(self._path(key), "r")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            if generation is not None:
                raise ObjectChanged(self.uri_for(key), generation, None) from exc
            raise ObjectNotFound(self.uri_for(key)) from exc
        if generation is None:
            return io.BufferedReader(raw)
        current, st = self._generation_of_open(raw)
        if current != generation:
            raw.close()
            raise ObjectChanged(self.uri_for(key), generation, current)
        return _PinnedFile(raw, self.uri_for(key), generation, st)

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        """Write the whole object atomically and return its new generation."""
        with self._lock():
            return self._write_locked(key, data)

    def write_if_generation(
        self, key: str, data: bytes, expected: int | None, content_type: str = "application/json"
    ) -> int:
        """Write only if the object is at generation `expected` (None: only if absent)."""
        with self._lock():
            actual = self._current_generation(key)
            if actual != (expected or None):
                raise PreconditionFailed(self.uri_for(key), expected, actual)
            return self._write_locked(key, data)

    def generation(self, key: str) -> int | None:
        """Return the object's generation, or None when it does not exist."""
        return self._current_generation(key)

    def info(self, key: str) -> ObjectInfo:
        """Return size, generation and a cheap checksum without reading the content (small files: read)."""
        try:
            with open(self._path(key), "rb") as fh:
                generation, st = self._generation_of_open(fh)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(self.uri_for(key)) from exc
        return ObjectInfo(_clean_key(key), st.st_size, generation, f"{st.st_size}:{st.st_mtime_ns}",
                          st.st_mtime)

    def exists(self, key: str) -> bool:
        """Say whether the object exists."""
        return self._path(key).is_file()

    def _files(self, prefix: str) -> Iterator[tuple[str, Path]]:
        base = self.root / _clean_key(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(self._LOCK_DIR + "/"):
                yield rel, path

    def list(self, prefix: str = "") -> list[str]:
        """Return the keys under `prefix`, sorted by name (partial writes left out)."""
        return sorted(rel for rel, path in self._files(prefix) if not path.name.endswith(TEMPORARY_SUFFIX))

    def temporary(self, prefix: str = "") -> list[ObjectInfo]:
        """Return the partial writes (`.tmp` files) a killed writer left under `prefix`."""
        infos = []
        for rel, path in self._files(prefix):
            if path.name.endswith(TEMPORARY_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    infos.append(ObjectInfo(rel, st.st_size, 0, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime))
        return sorted(infos, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        """Remove the object (no error if it is already gone)."""
        with self._lock():
            path = self._path(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            legacy = self.root / self._LOCK_DIR / (_clean_key(key) + ".gen")  # counter of older versions
            with contextlib.suppress(FileNotFoundError):
                legacy.unlink()
            with contextlib.suppress(OSError):  # an emptied version folder goes too (rmdir refuses non-empty)
                if path.parent != self.root:
                    path.parent.rmdir()


class GCSStore:
    """A `gs://bucket/prefix` location, through the google-cloud-storage client."""

    def __init__(self, uri: str, client: object | None = None, timeout: float = 60.0,
                 retry_deadline: float = 120.0):
        # Imported here: the local default never needs the Cloud Storage client.
        from google.cloud.storage.retry import DEFAULT_RETRY

        rest = uri.removeprefix("gs://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"invalid GCS URI {uri!r}: expected gs://bucket[/prefix]")
        self.uri = uri.rstrip("/")
        self.prefix = prefix.strip("/")
        self.timeout = timeout
        self._client = client or _gcs_client()
        self._bucket = self._client.bucket(bucket)
        # Every call here is safe to retry (writes replace whole objects, the CAS carries its precondition).
        self._retry = DEFAULT_RETRY.with_timeout(retry_deadline)

    def __repr__(self) -> str:
        return f"GCSStore({self.uri!r})"

    def _name(self, key: str) -> str:
        return _join(self.prefix, _clean_key(key))

    def uri_for(self, key: str) -> str:
        """Return the gs:// URI of `key`."""
        return f"gs://{self._bucket.name}/{self._name(key)}"

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate client errors into ours; `key` "" names the store itself (listing its root)."""
        from google.api_core import exceptions as gexc

        try:
            yield
        except gexc.NotFound as exc:
            raise ObjectNotFound(self._where(key)) from exc
        except gexc.PreconditionFailed as exc:
            raise PreconditionFailed(self._where(key), None) from exc
        except (gexc.ServiceUnavailable, gexc.RetryError, gexc.DeadlineExceeded) as exc:
            raise StorageUnavailable(f"{self._where(key)}: {exc}") from exc
        except gexc.GoogleAPICallError as exc:
            raise StorageError(f"{self._where(key)}: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            # requests' ConnectionError is an OSError; the emulator or the network is down.
            raise StorageUnavailable(f"{self._where(key)}: {exc}") from exc

    def _where(self, key: str) -> str:
        return self.uri_for(key) if key.strip("/") else self.uri

    def read(self, key: str) -> bytes:
        """Return the whole object."""
        with self._errors(key):
            return self._bucket.blob(self._name(key)).download_as_bytes(timeout=self.timeout, retry=self._retry)

    def read_with_generation(self, key: str) -> tuple[bytes, int]:
        """Return the object and the generation it was read at (one request)."""
        with self._errors(key):
            blob = self._bucket.blob(self._name(key))
            data = blob.download_as_bytes(timeout=self.timeout, retry=self._retry)
            return data, int(blob.generation)

    def open_read(self, key: str, generation: int | None = None) -> IO[bytes]:
        """Open the object for streaming reads (8 MiB chunks); with `generation`, that generation only."""
        with self._errors(key):
            blob = self._bucket.get_blob(self._name(key), generation=generation, timeout=self.timeout,
                                         retry=self._retry)
        if blob is None and generation is not None:
            raise ObjectChanged(self.uri_for(key), generation, self.generation(key))
        if blob is None:
            raise ObjectNotFound(self.uri_for(key))
        with self._errors(key):
            return blob.open("rb", chunk_size=8 * 1024 * 1024)

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        """Upload the whole object (GCS makes it visible atomically) and return its generation."""
        with self._errors(key):
            blob = self._bucket.blob(self._name(key))
            blob.upload_from_string(data, content_type=content_type, timeout=self.timeout, retry=self._retry)
            return int(blob.generation)

    def write_if_generation(
        self, key: str, data: bytes, expected: int | None, content_type: str = "application/json"
    ) -> int:
        """Upload only if the object is at generation `expected` (None: only if absent)."""
        blob = self._bucket.blob(self._name(key))
        blob.cache_control = "no-store"
        try:
            with self._errors(key):
                blob.upload_from_string(
                    data, content_type=content_type, if_generation_match=expected or 0, timeout=self.timeout,
                    retry=self._retry,
                )
        except PreconditionFailed as exc:
            # A retried attempt can meet the precondition its own lost-response first attempt consumed.
            current, generation = self.read_with_generation(key)
            if current == data:
                return generation
            raise PreconditionFailed(self.uri_for(key), expected, generation) from exc.__cause__
        return int(blob.generation)

    def generation(self, key: str) -> int | None:
        """Return the object's generation (a metadata request), or None when it does not exist."""
        with self._errors(key):
            blob = self._bucket.get_blob(self._name(key), timeout=self.timeout, retry=self._retry)
        return None if blob is None else int(blob.generation)

    def info(self, key: str) -> ObjectInfo:
        """Return size, generation and the server's checksum without downloading."""
        with self._errors(key):
            blob = self._bucket.get_blob(self._name(key), timeout=self.timeout, retry=self._retry)
        if blob is None:
            raise ObjectNotFound(self.uri_for(key))
        return ObjectInfo(_clean_key(key), int(blob.size or 0), int(blob.generation),
                          blob.md5_hash or blob.crc32c or "", blob.updated.timestamp() if blob.updated else None)

    def exists(self, key: str) -> bool:
        """Say whether the object exists."""
        return self.generation(key) is not None

    def list(self, prefix: str = "") -> list[str]:
        """Return the keys under `prefix`, sorted by name."""
        full = _join(self.prefix, prefix.strip("/"))
        with self._errors(prefix):
            names = [b.name for b in self._client.list_blobs(self._bucket, prefix=full + "/" if full else None,
                                                             timeout=self.timeout, retry=self._retry)]
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(n[strip:] for n in names if not n.endswith("/"))

    def temporary(self, prefix: str = "") -> list[ObjectInfo]:
        """Return partial writes under `prefix`: none, an upload becomes visible whole or not at all."""
        return []

    def delete(self, key: str) -> None:
        """Remove the object (no error if it is already gone)."""
        with contextlib.suppress(ObjectNotFound), self._errors(key):
            self._bucket.blob(self._name(key)).delete(timeout=self.timeout, retry=self._retry)


def _gcs_client() -> object:
    """Build a storage client; against an emulator (`STORAGE_EMULATOR_HOST`) with anonymous credentials."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "adroi-local"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def check_store_uri(uri: str | os.PathLike[str], field: str = "store") -> str:
    """Return `uri` if `open_store` accepts it (syntax only, nothing is contacted), else raise ConfigError."""
    text = str(uri)
    if text.startswith("gs://"):
        bucket = text.removeprefix("gs://").partition("/")[0]
        if re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
            return text
        raise ConfigError(field, text, "gs://bucket[/prefix] with a valid bucket name")
    if not text.strip() or ("://" in text and not text.startswith("file://")):
        raise ConfigError(field, text, "a local folder or gs://bucket[/prefix]")
    return text


def open_store(uri: str | os.PathLike[str], **kwargs: object) -> Store:
    """Return the store for `uri`: `gs://...` → Cloud Storage, anything else → a local folder."""
    text = str(uri)
    if text.startswith("gs://"):
        return GCSStore(text, **kwargs)  # type: ignore[arg-type]
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"unsupported store URI {text!r}: expected gs://bucket[/prefix] or a local folder")
    return LocalStore(text.removeprefix("file://"))


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()
