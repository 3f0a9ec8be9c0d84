"""A project's encoder with its embedding cache: task inputs in, embeddings out, each task encoded once.

Only the tasks whose (task id, data-value digest) the cache lacks are fetched and encoded; their embeddings
are written back in chunks (one atomic segment each), so a job killed mid-pool keeps what it finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.artifact_store import open_store
from core.embedding_cache import EmbeddingCache, value_digest
from core.image_fetch import Skipped
from plugins.specs import EncoderSpec

if TYPE_CHECKING:
    from core.config import Settings
    from plugins.encoders import Encoder

# load_raw([(key, value)]) -> (keys loaded, raw inputs in that order, skipped)
RawLoader = Callable[[list[tuple[int, Any]]], tuple[list[int], np.ndarray, list[Skipped]]]
# progress(phase, done, total)
EmbedProgress = Callable[[str, int, int], None]
CHUNK = 2048  # tasks fetched, encoded and written per cache segment


class Embedder:
    """Embeddings of (key, value) pairs through `encoder`, read from and written to `cache`."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache | None, progress: EmbedProgress | None = None) -> None:
        self.encoder, self.cache, self.progress = encoder, cache, progress

    def embed(self, items: list[tuple[int, Any]], load_raw: RawLoader,
              cache_ids: Sequence[int | None] | None = None) -> tuple[list[int], np.ndarray, list[Skipped]]:
        """(keys embedded, (N, dim) float32 in that order, skipped tasks) of `items`; `cache_ids` gives each
        item's task id in the cache (default: its key; None: not cached)."""
        task_ids = list(cache_ids) if cache_ids is not None else [key for key, _ in items]
        digests = [value_digest(value) for _, value in items]
        cached: dict[int, np.ndarray] = {}
        asked = [(t, d) for t, d in zip(task_ids, digests) if t is not None]
        if self.cache is not None and asked:
            cached = self.cache.lookup(asked)
        vectors: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for index, ((key, _), task) in enumerate(zip(items, task_ids)):
            if task is not None and task in cached:
                vectors[key] = cached[task]
            else:
                missing.append(index)
        skipped: list[Skipped] = []
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start:start + CHUNK]
            keys, raw, left_out = load_raw([items[i] for i in chunk])
            skipped += left_out
            encoded = self.encoder.encode(raw) if len(keys) else np.zeros((0, self.encoder.dim), np.float32)
            position = {items[i][0]: i for i in chunk}
            for key, vector in zip(keys, encoded):
                vectors[key] = vector
            writable = [(task_ids[position[k]], digests[position[k]], v) for k, v in zip(keys, encoded)
                        if task_ids[position[k]] is not None]
            if self.cache is not None and writable:
                self.cache.add([w[0] for w in writable], [w[1] for w in writable], np.stack([w[2] for w in writable]))
            if self.progress:
                self.progress("embedding", min(start + CHUNK, len(missing)), len(missing))
        if self.cache is not None and missing:
            self.cache.compact()
        ok = [key for key, _ in items if key in vectors]
        out = np.stack([vectors[k] for k in ok]).astype(np.float32) if ok else np.zeros((0, self.encoder.dim), np.float32)
        return ok, out, skipped


def encoder_of(artifact: Any) -> EncoderSpec | None:
    """The encoder a model version was trained on (from the settings it recorded); None: it read raw inputs."""
    recorded = ((getattr(artifact, "extra", None) or {}).get("settings") or {}).get("encoder")
    return EncoderSpec.model_validate(recorded) if recorded else None


def embedder_for(settings: Settings, project: int, spec: EncoderSpec | None,
                 progress: EmbedProgress | None = None) -> Embedder | None:
    """The Embedder of encoder `spec` (a project's, or the one a model version was trained on), cached in the
    artifact store; None when `spec` is None."""
    if spec is None:
        return None
    from plugins.encoders import build_encoder

    encoder = build_encoder(spec.name, **spec.params)
    store = open_store(settings.artifact_store or str(settings.model_dir), settings.s3_endpoint_url)
    return Embedder(encoder, EmbeddingCache(store, encoder.identity(), project), progress)
