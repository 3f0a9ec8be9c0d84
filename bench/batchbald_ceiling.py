"""Measurement: how close a BatchBALD batch comes to its ceiling log K on MNIST, for several K.

Trains the `cnn` model (the settings of bench/simulations/mnist_pool_*.json) on `--labels` labels (20
balanced, the rest at random), draws the largest K once over the whole unlabeled pool, and runs the greedy
BatchBALD of a `--batch` batch on the first K samples for each K. Prints, per K, the batch's mutual
information after each pick beside log K, the pick at which it reached 95% of log K, and the digits picked.

    python bench/batchbald_ceiling.py                       # 20 labels, seed 0, K = 20, 50, 100, 200
    python bench/batchbald_ceiling.py --labels 80 --seed 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.datasets import load_dataset  # noqa: E402
from plugins.loop import initial_indices  # noqa: E402
from plugins.models import build_model  # noqa: E402
from plugins.strategies import Input  # noqa: E402
from plugins.strategies._batchbald import greedy_batchbald, saturated_after  # noqa: E402

TRAIN = {"epochs": 30, "schedule": "cosine", "min_held_out": 50}


def main() -> None:
    """Parse the options, train once, print one row per K."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20, help="labeled images (20 balanced + the rest random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--ks", default="20,50,100,200", help="comma-separated numbers of MC samples")
    args = parser.parse_args()
    ks = sorted(int(k) for k in args.ks.split(","))
    if args.labels < 20 or ks[0] < 1:
        parser.error("--labels must be at least 20 and every K at least 1")

    data = load_dataset("mnist")
    labeled = initial_indices(data.y_train, 20, args.seed)
    rest = np.setdiff1d(np.arange(len(data.y_train)), labeled)
    extra = np.random.default_rng([args.seed, 2]).choice(rest, args.labels - 20, replace=False)
    labeled = np.concatenate([labeled, extra])
    pool = np.setdiff1d(np.arange(len(data.y_train)), labeled)

    model = build_model("cnn", data.n_classes, seed=args.seed, mc_samples=ks[-1], train=TRAIN)
    started = time.perf_counter()
    model.fit(data.x_train[labeled], data.y_train[labeled])
    accuracy = float((model.predict_proba(data.x_test).argmax(axis=1) == data.y_test).mean())
    inputs = model.pool_inputs(data.x_train[pool], frozenset({Input.SAMPLES}), data.x_train[labeled],
                               data.y_train[labeled])
    samples = torch.as_tensor(np.asarray(inputs.samples))
    print(f"{args.labels} labels, seed {args.seed}: test accuracy {accuracy:.3f}; pool {len(pool):,}; "
          f"fit + pool pass {time.perf_counter() - started:.1f} s")
    print("| K | log K | batch information after each pick (nats) | 95% of log K at pick | digits picked | s |")
    print("|---|---|---|---|---|---|")
    for k in ks:
        generator = torch.Generator().manual_seed(args.seed)
        started = time.perf_counter()
        batch = greedy_batchbald(samples[:, :k].contiguous(), args.batch, 4096, 2000, generator, 256)
        seconds = time.perf_counter() - started
        ceiling = math.log(k)
        digits = np.bincount(data.y_train[pool[batch.picked]], minlength=data.n_classes)
        print(f"| {k} | {ceiling:.2f} | {' '.join(f'{v:.2f}' for v in batch.values)} | "
              f"{saturated_after(batch.values, ceiling) or '-'} | {digits.tolist()} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
