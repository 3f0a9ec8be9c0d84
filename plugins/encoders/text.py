"""all-MiniLM-L6-v2 (sentence-transformers, read from the shipped files, never downloaded) as a frozen text
encoder: 384-d mean-pooled, L2-normalized sentence embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydantic import Field

from plugins.device import pick_device
from plugins.encoders.base import EncodeProgress, Encoder, EncoderParams
from plugins.minilm_files import checked_minilm_dir
from plugins.encoders.registry import ENCODERS
from plugins.strategies import InvalidParamsError


@ENCODERS.register("minilm")
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) of each text, cut at `max_tokens` tokens."""

    input_type = "text"

    class Params(EncoderParams):
        max_tokens: int = Field(256, ge=8, le=512, description="longer texts are cut to this many tokens")
        device: str | None = Field(None, description="cuda or cpu (None: CUDA when present)")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub: the files are local
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # heavy: imported when a text encoder is built

        if self.params.checkpoint is None:
            folder, self._digest = checked_minilm_dir()
        else:
            folder = Path(self.params.checkpoint)
            if not (folder / "modules.json").is_file():
                raise InvalidParamsError(f"{folder} is not a sentence-transformers folder (no modules.json)")
            self._digest = _folder_digest(folder)
        self.model = SentenceTransformer(str(folder), device=str(pick_device(self.params.device)),
                                         local_files_only=True)
        self.model.max_seq_length = self.params.max_tokens
        self._dim = int(self.model.get_embedding_dimension())

    @property
    def dim(self) -> int:
        return self._dim

    def weights_digest(self) -> str:
        return self._digest

    def encode(self, inputs: np.ndarray, progress: EncodeProgress | None = None) -> np.ndarray:
        texts = [str(t) for t in np.asarray(inputs, dtype=object).reshape(-1)]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = self.params.batch * 4  # sentence-transformers batches inside; report every few batches
        for start in range(0, len(texts), step):
            out[start:start + step] = self.model.encode(texts[start:start + step], batch_size=self.params.batch,
                                                        normalize_embeddings=True, convert_to_numpy=True,
                                                        show_progress_bar=False)
            if progress:
                progress(min(start + step, len(texts)), len(texts))
        return out


def _folder_digest(folder: Path) -> str:
    """SHA-256 over the names and bytes of the weight files of a sentence-transformers folder."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
