"""Benchmark: first-time embedding throughput of the frozen encoders on this machine's CPU (or CUDA).

For MobileNetV2 at several input sizes it prints images/s through the encoder (`plugins.encoders`: uint8 ->
resize -> normalize -> features -> pooling) beside the bare network's forward on tensors already prepared,
measured in the same run (the ratio is what our preprocessing costs); for MiniLM, texts/s on real quotations
(Debian's fortunes) beside sentence-transformers' own `encode` on the same texts.

    .venv/bin/python bench/encoders.py                    # 512 images per size, 512 texts
    .venv/bin/python bench/encoders.py --images 256 --sizes 64,128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.datasets import fortunes, mnist  # noqa: E402
from plugins.encoders import build_encoder  # noqa: E402
from stack.runs import table  # noqa: E402


def rate(n: int, run) -> float:
    """Items per second of run() over n items (after one warm-up call)."""
    run()
    started = time.perf_counter()
    run()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--sizes", default="64,128,224")
    args = parser.parse_args()
    images = mnist().x_train[:args.images][..., None]  # real 28x28 digits, as the fetcher gives them
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        encoder = build_encoder("mobilenet_v2", size=size)
        prepared = encoder.prepare(images[:encoder.params.batch])  # the bare network's input

        def bare() -> None:
            with torch.inference_mode():
                for _ in range(0, len(images), encoder.params.batch):
                    encoder.features(prepared).mean(dim=(2, 3))

        ours, ref = rate(len(images), lambda: encoder.encode(images)), rate(len(images), bare)
        rows.append([f"mobilenet_v2 {size} px", f"{ours:.0f} images/s", f"{ref:.0f}", f"{ours / ref:.2f}"])
    texts = fortunes().x_train[:args.texts]
    minilm = build_encoder("minilm")
    ours = rate(len(texts), lambda: minilm.encode(texts))
    ref = rate(len(texts), lambda: minilm.model.encode(list(texts), batch_size=minilm.params.batch,
                                                       normalize_embeddings=True, show_progress_bar=False))
    rows.append(["minilm (fortunes quotations)", f"{ours:.0f} texts/s", f"{ref:.0f}", f"{ours / ref:.2f}"])
    device = next(encoder.features.parameters()).device
    print(f"\nFirst-time embedding on {device} ({torch.get_num_threads()} torch threads)\n")
    print(table(["encoder", "ours", "reference (bare forward)", "ratio"], rows))


if __name__ == "__main__":
    main()
