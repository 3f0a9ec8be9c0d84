"""A project's encoder with its embedding cache (core.embeddings) and the text input loader (core.inputs):
each task is encoded once, a changed text again, and the wrong pairing of encoder and input is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.artifact_store import LocalArtifactStore
from core.embedding_cache import EmbeddingCache
from core.embeddings import Embedder, encoder_of
from core.inputs import load_inputs
from core.project_settings import ProjectSettings
from plugins.encoders import build_encoder
from plugins.minilm_files import checked_minilm_dir
from plugins.models.pretrained import PretrainedWeightsError

SETTINGS = ProjectSettings()


@pytest.fixture(scope="module")
def minilm():
    try:
        checked_minilm_dir()
    except PretrainedWeightsError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the MiniLM files are not fetched here: {exc}")
    return build_encoder("minilm")


class Counting:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder) -> None:
        self.encoder, self.encoded = encoder, []
        self.input_type, self.dim, self.name = encoder.input_type, encoder.dim, encoder.name

    def encode(self, texts, progress=None):
        self.encoded += list(texts)
        return self.encoder.encode(texts)

    def image_size(self):
        return None


def test_each_task_is_encoded_once_and_again_only_when_its_text_changes(tmp_path, minilm):
    counting = Counting(minilm)
    cache = EmbeddingCache(LocalArtifactStore(tmp_path), minilm.identity(), project=3)
    embedder = Embedder(counting, cache)
    items = [(11, "the compiler crashed"), (12, "   "), (13, "beam me up"), (14, 42)]
    ids, x, skipped = load_inputs("text", None, items, SETTINGS, embedder=embedder)
    assert ids == [11, 13, 14] and x.shape == (3, 384) and [s.task for s in skipped] == [12]
    assert skipped[0].reason == "no_text" and counting.encoded == ["the compiler crashed", "beam me up", "42"]
    np.testing.assert_allclose(x[1], minilm.encode(np.array(["beam me up"], dtype=object))[0], atol=1e-5)

    counting.encoded.clear()
    again_ids, again, _ = load_inputs("text", None, [(13, "beam me up"), (11, "the compiler crashed")], SETTINGS,
                                      embedder=Embedder(counting, cache))
    assert again_ids == [13, 11] and counting.encoded == []  # read from the cache, in the order asked
    np.testing.assert_array_equal(again, x[[1, 0]])

    _, changed, _ = load_inputs("text", None, [(11, "the compiler crashed twice")], SETTINGS,
                                embedder=Embedder(counting, cache))
    assert counting.encoded == ["the compiler crashed twice"] and not np.allclose(changed[0], x[0])


def test_items_without_a_task_id_are_encoded_but_not_cached(tmp_path, minilm):
    counting = Counting(minilm)
    cache = EmbeddingCache(LocalArtifactStore(tmp_path), minilm.identity(), project=3)
    for _ in range(2):
        ids, x, _ = load_inputs("text", None, [(0, "a"), (1, "b")], SETTINGS, embedder=Embedder(counting, cache),
                                cache_ids=[None, 7])
        assert ids == [0, 1] and x.shape == (2, 384)
    assert counting.encoded == ["a", "b", "a"]  # the second time only the uncached item is encoded


def test_text_without_an_encoder_and_an_encoder_of_the_wrong_input_are_refused(tmp_path, minilm):
    with pytest.raises(ValueError, match="set the project's encoder"):
        load_inputs("text", None, [(1, "x")], SETTINGS)
    with pytest.raises(ValueError, match="reads texts"):
        load_inputs("image", None, [(1, "http://x/a.png")], SETTINGS, embedder=Embedder(minilm, None))
    with pytest.raises(ValueError, match="no input loader"):
        load_inputs("audio", None, [], SETTINGS)


def test_an_empty_request_gives_an_empty_matrix_of_the_encoders_width(minilm):
    ids, x, skipped = load_inputs("text", None, [], SETTINGS, embedder=Embedder(minilm, None))
    assert ids == [] and x.shape == (0, 384) and skipped == []


def test_a_versions_encoder_is_the_one_its_recorded_settings_name():
    class Version:
        extra = {"settings": {"encoder": {"name": "minilm", "params": {"max_tokens": 64}}}}

    assert encoder_of(Version()).params == {"max_tokens": 64}
    Version.extra = {"settings": {"encoder": None}}
    assert encoder_of(Version()) is None
