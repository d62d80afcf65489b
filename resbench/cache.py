"""Artifact cache: trained baselines and prepared methods, keyed by everything that determines them.

Each entry is two files in ``ROOT/KIND/``: the payload ``HASH-CHECKSUM.pt`` (anything ``torch.save``
accepts, usually a state dict) and ``HASH.json`` beside it, holding the key, the payload's file name and
SHA-256 checksum, creation time, build time, versions and the builder's own metadata (metrics, timings).
``HASH`` is the SHA-256 of the canonical JSON of (kind, key).

Writes are atomic (:func:`resbench.files.write_atomically`), payload first and metadata last, so the metadata
file is the commit mark. An entry that is partial or corrupt (missing metadata or payload, truncated
payload, checksum mismatch, unreadable file) is reported with a logging warning and rebuilt, never
loaded. Two processes building the same entry at once both succeed; the last metadata written wins and
always names a complete payload, because payload names carry their checksum.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resbench import __version__
from resbench.errors import ResbenchError, UsageError
from resbench.files import write_atomically

__all__ = ["CACHE_DIR_VARIABLE", "DEFAULT_CACHE_DIR", "ArtifactCache", "ArtifactCacheError", "CacheEntry",
           "MissingArtifact", "key_hash"]

logger = logging.getLogger(__name__)

CACHE_DIR_VARIABLE = "RESBENCH_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".resbench-cache")
Builder = Callable[[], tuple[Any, Mapping[str, Any]]]


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cache keys must be plain JSON (str, number, bool, None, list, dict): {error}") from None


def key_hash(kind: str, key: Mapping[str, Any]) -> str:
    """SHA-256 (hex, first 32 digits) of the canonical JSON of ``kind`` and ``key``."""
    return hashlib.sha256(_canonical_json({"kind": kind, "key": dict(key)}).encode()).hexdigest()[:32]


class CorruptEntry(Exception):
    """An entry that must not be loaded; the message says why."""


@dataclass(frozen=True)
class CacheEntry:
    """Where one entry lives."""

    directory: Path
    hash: str

    @property
    def metadata_path(self) -> Path:
        return self.directory / f"{self.hash}.json"

    def payload_path(self, checksum: str) -> Path:
        return self.directory / f"{self.hash}-{checksum[:16]}.pt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactCacheError(ResbenchError):
    """The artifact cache could not hold an artifact (no space, no permission): the machine's doing, not a
    plugin's."""


class MissingArtifact(ArtifactCacheError):
    """An artifact an earlier job made is not in this worker's cache (see ``ArtifactCache(builds=False)``)."""


class ArtifactCache:
    """Keyed store of torch-saveable artifacts with JSON metadata. See the module docstring.

    ``root`` defaults to ``$RESBENCH_CACHE_DIR`` or ``.resbench-cache`` in the working directory. A cache
    with ``builds=False`` only loads: where an earlier job of the run made the artifact, building it
    again (on a node that does not share the cache) would train twice, and it raises
    :class:`MissingArtifact` instead.
    """

    def __init__(self, root: str | Path | None = None, *, builds: bool = True) -> None:
        self.root = Path(root or os.environ.get(CACHE_DIR_VARIABLE) or DEFAULT_CACHE_DIR)
        self.builds = builds

    def entry(self, kind: str, key: Mapping[str, Any]) -> CacheEntry:
        """Where the entry for (``kind``, ``key``) lives."""
        return CacheEntry(self.root / kind, key_hash(kind, key))

    def load(self, kind: str, key: Mapping[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        """(payload, metadata) of a sound entry; None when absent or, with a warning, when corrupt."""
        entry = self.entry(kind, key)
        try:
            return self._read(entry, key)
        except FileNotFoundError:
            if any(entry.directory.glob(f"{entry.hash}-*.pt")):
                logger.warning("cache entry %s/%s has a payload but no metadata (partial write); rebuilding",
                               kind, entry.hash)
            return None
        except CorruptEntry as error:
            logger.warning("cache entry %s/%s is corrupt (%s); rebuilding", kind, entry.hash, error)
            return None

    def _read(self, entry: CacheEntry, key: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        try:
            record = json.loads(entry.metadata_path.read_text())
            checksum = str(record["sha256"])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CorruptEntry(f"unreadable metadata: {error}") from None
        if _canonical_json(record.get("key")) != _canonical_json(dict(key)):
            raise CorruptEntry("metadata key does not match")
        try:
            data = entry.payload_path(checksum).read_bytes()
        except FileNotFoundError:
            raise CorruptEntry("payload file missing") from None
        if len(data) != record.get("size_bytes") or _sha256(data) != checksum:
            raise CorruptEntry("payload checksum mismatch (truncated or altered file)")
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:
            raise CorruptEntry(f"payload cannot be loaded: {error}") from None
        return payload, dict(record.get("metadata", {}))

    def store(
        self, kind: str, key: Mapping[str, Any], payload: Any, metadata: Mapping[str, Any], build_seconds: float
    ) -> dict[str, Any]:
        """Write an entry atomically (payload, then metadata) and return the metadata record."""
        entry = self.entry(kind, key)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        checksum = _sha256(data)
        record = {
            "kind": kind,
            "key": dict(key),
            "hash": entry.hash,
            "payload": entry.payload_path(checksum).name,
            "sha256": checksum,
            "size_bytes": len(data),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "build_seconds": round(build_seconds, 3),
            "resbench_version": __version__,
            "torch_version": torch.__version__,
            "metadata": dict(metadata),
        }
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"  # fails before writing on non-JSON metadata
        try:
            write_atomically(entry.payload_path(checksum), data, "artifact cache")
            write_atomically(entry.metadata_path, text, "artifact cache")
        except (OSError, UsageError) as error:
            reason = f"{error.strerror} ({error.filename})" if isinstance(error, OSError) else str(error)
            raise ArtifactCacheError(f"cannot store the {kind} in the artifact cache {self.root}: {reason}; make room "
                                     "there or pass another --cache-dir") from None
        self._remove_stale_payloads(entry, checksum)
        return record

    def _remove_stale_payloads(self, entry: CacheEntry, checksum: str) -> None:
        keep = entry.payload_path(checksum)
        for path in entry.directory.glob(f"{entry.hash}-*.pt"):
            if path != keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def load_or_build(
        self, kind: str, key: Mapping[str, Any], build: Builder
    ) -> tuple[Any, dict[str, Any], bool]:
        """(payload, metadata, hit): the cached artifact, or ``build()``'s result after storing it.

        ``build`` returns (payload, metadata); metadata must be JSON-able (metrics, timings). The
        returned metadata is the builder's, the same on a hit as on the build.
        """
        found = self.load(kind, key)
        if found is not None:
            logger.info("cache hit: %s %s", kind, self.entry(kind, key).hash)
            return found[0], found[1], True
        if not self.builds:
            raise MissingArtifact(
                f"the {kind} {self.entry(kind, key).hash[:12]} that an earlier job of this run made is not in the "
                f"artifact cache {self.root.resolve()} on {socket.gethostname()}: the workers of a cluster must "
                "share --cache-dir (a network file system)")
        started = time.perf_counter()
        payload, metadata = build()
        record = self.store(kind, key, payload, metadata, time.perf_counter() - started)
        logger.info("cached %s %s", kind, record["hash"])
        return payload, dict(record["metadata"]), False
