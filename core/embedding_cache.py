"""A per-task embedding cache in the artifact store, so that an unchanged task is not embedded twice.

Entries are keyed by (task id, digest of the task's data value) under one encoder identity and project:
``embeddings/<safe encoder identity>/project-<project>/seg-<time_ns:020d>-<uuid4 hex>.npz``. Each segment is
an ``np.savez`` of ``ids`` (int64, N), ``digests`` (<U32, N) and ``vectors`` (float32, N x D), written with one
atomic ``store.put``. Segment names sort by time; a later segment wins for the same (id, digest). A segment
that cannot be read is skipped with a warning: the cache then misses, and the task is embedded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.artifact_store import ArtifactStore

log = logging.getLogger("lsal.embeddings")

DIGEST_LENGTH = 32
_SEGMENT = re.compile(r"seg-(\d{20})-[0-9a-f]{32}\.npz")


def value_digest(value: Any) -> str:
    """A stable digest of a task's data value (the image URL or the text): a changed value is re-embedded."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def _safe_identity(identity: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", identity)[:80]
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


class EmbeddingCache:
    """Embeddings per (task id, data-value digest) for one encoder and project, in segment files of a store."""

    def __init__(self, store: ArtifactStore, encoder_identity: str, project: int) -> None:
        self.store = store
        self.prefix = f"embeddings/{_safe_identity(encoder_identity)}/project-{int(project)}"

    def _segments(self) -> list[str]:
        return [k for k in self.store.list_keys(self.prefix) if _SEGMENT.fullmatch(k.rsplit("/", 1)[-1])]

    def _fetch(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except KeyError:
            log.warning("embedding segment %s vanished (compacted meanwhile?); skipped", key)
        except Exception as exc:  # noqa: BLE001 - a store error makes a miss, not a failure
            log.warning("embedding segment %s could not be fetched (%s); skipped", key, exc)
        return None

    @staticmethod
    def _parse(key: str, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                ids, digests, vectors = z["ids"], z["digests"], z["vectors"]
            if (ids.ndim != 1 or ids.dtype.kind not in "iu" or digests.ndim != 1 or digests.dtype.kind != "U"
                    or vectors.ndim != 2 or vectors.dtype.kind != "f"
                    or not len(ids) == len(digests) == len(vectors)):
                raise ValueError("arrays of the wrong shape or type")
        except Exception as exc:  # noqa: BLE001 - corrupt or truncated: a miss, never a failure
            log.warning("embedding segment %s is unreadable (%s); skipped", key, exc)
            return None
        return ids, digests, vectors

    def _write(self, ids: np.ndarray, digests: np.ndarray, vectors: np.ndarray,
               time_ns: int | None = None) -> str:
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, digests=digests, vectors=vectors)
        stamp = time.time_ns() if time_ns is None else time_ns
        key = f"{self.prefix}/seg-{stamp:020d}-{uuid.uuid4().hex}.npz"
        self.store.put(key, buffer.getvalue())
        return key

    def lookup(self, items: Sequence[tuple[int, str]]) -> dict[int, np.ndarray]:
        """The cached vector of each (task id, digest) pair that has one (a task whose digest changed: no entry)."""
        wanted = {(int(i), str(d)) for i, d in items}
        if not wanted:
            return {}
        wanted_ids = np.fromiter({i for i, _ in wanted}, dtype=np.int64)
        found: dict[int, np.ndarray] = {}
        dim = None
        for key in self._segments():
            data = self._fetch(key)
            segment = None if data is None else self._parse(key, data)
            del data
            if segment is None:
                continue
            ids, digests, vectors = segment
            if dim is None:
                dim = vectors.shape[1]
            elif vectors.shape[1] != dim:
                log.warning("embedding segment %s has dimension %d, not %d; skipped",
                            key, vectors.shape[1], dim)
                continue
            for row in np.flatnonzero(np.isin(ids, wanted_ids)):
                if (int(ids[row]), str(digests[row])) in wanted:
                    # A copy, not a view: the segment's arrays are freed before the next one is read.
                    found[int(ids[row])] = np.array(vectors[row], dtype=np.float32)
        return found

    def add(self, ids: Sequence[int], digests: Sequence[str], vectors: np.ndarray) -> None:
        """Write one segment (atomic: a crash leaves the segment whole or absent, never a partial entry)."""
        vectors = np.asarray(vectors)
        if not len(ids) == len(digests) == len(vectors):
            raise ValueError(f"ids, digests and vectors differ in length: "
                             f"{len(ids)}, {len(digests)}, {len(vectors)}")
        if len(ids) == 0:
            return
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (N, D), got shape {vectors.shape}")
        if vectors.dtype.kind not in "iuf" or not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite numbers")
        if any(not isinstance(d, str) or not 0 < len(d) <= DIGEST_LENGTH for d in digests):
            raise ValueError(f"digests must be non-empty strings of at most {DIGEST_LENGTH} characters")
        id_array = np.asarray(ids)
        if id_array.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got {id_array.dtype}")
        self._write(id_array.astype(np.int64), np.array(list(digests), dtype=f"<U{DIGEST_LENGTH}"),
                    vectors.astype(np.float32))

    def compact(self, max_segments: int = 16) -> int:
        """Merge the segments into one when there are more than max_segments; return how many were merged (0: none).

        Segments fetched but unreadable are deleted too (they hold nothing); ones the store failed to give are
        left alone, as are ones of another dimension.
        """
        if max_segments < 1:
            raise ValueError(f"max_segments must be at least 1, got {max_segments}")
        keys = self._segments()
        if len(keys) <= max_segments:
            return 0
        merged: dict[tuple[int, str], np.ndarray] = {}
        read, corrupt, dim, last_stamp = [], [], None, 0
        for key in keys:
            data = self._fetch(key)
            if data is None:  # not fetched (a store error or gone): left alone
                continue
            segment = self._parse(key, data)
            if segment is None:  # fetched but unreadable: holds nothing to keep
                corrupt.append(key)
                continue
            ids, digests, vectors = segment
            if dim is None:
                dim = vectors.shape[1]
            elif vectors.shape[1] != dim:
                log.warning("embedding segment %s has dimension %d, not %d; not merged",
                            key, vectors.shape[1], dim)
                continue
            for i, d, v in zip(ids.tolist(), digests.tolist(), vectors):
                merged[(i, d)] = v
            read.append(key)
            last_stamp = int(_SEGMENT.fullmatch(key.rsplit("/", 1)[-1]).group(1))
        if merged:
            pairs = list(merged)
            # Stamped with the newest merged segment's time: a segment added meanwhile still sorts after it.
            self._write(np.array([i for i, _ in pairs], dtype=np.int64),
                        np.array([d for _, d in pairs], dtype=f"<U{DIGEST_LENGTH}"),
                        np.stack([merged[p] for p in pairs]).astype(np.float32), last_stamp)
        for key in read + corrupt:  # only after the merged segment is written: a crash leaves duplicates
            self.store.delete(key)
        return len(read)

    def clear(self) -> int:
        """Delete every segment of this encoder and project; return how many."""
        keys = self._segments()
        for key in keys:
            self.store.delete(key)
        return len(keys)
