"""Confident pre-labels, measured: in an active-learning run on a real data set, how much of the unlabeled pool
the rule auto-labels at a target precision, and what precision those pool labels really have.

For each seed: a fixed pool of `--pool` items of the data set's training split (ground truth known, hidden
from the model); `--start` of them labeled at random (class-balanced, as the simulator starts), then each
round `--step` more chosen by the project's strategy (margin) on the serving model's pool inputs, up to
`--max-labels`. Each round is the worker's retrain (worker.train.train_version) on the labeled set, without
the I/O: the stable held-out set (plugins.holdout), the warm start from the serving version,
`fit_and_measure`, `confident_block` per target (plugins.confident: temperature scaling, fixed-sequence
Clopper-Pearson threshold), `promotion_verdict` (the project's promotion gate, on by default: the served
model is the one trained on the training side; a version worse beyond noise is not served, and the serving
version's rule stays). Then, as the publication does (worker.publish), `ConfidentRule.confident` of the
serving rule on the serving model's probabilities of every still-unlabeled pool item. The achieved precision
is the share of those confident pool items whose predicted class is their true class. The labeled (and so
held-out) items are chosen by active learning, harder than the pool: that bias is part of what is measured.

    OMP_NUM_THREADS=2 .venv/bin/python bench/confident_labels.py --dataset mnist --seeds 0,1,2

Prints a table per target and round: mean [min-max] over seeds (threshold, precision and bound over the
seeds that have a threshold). The goal is judged at `--target`; `--also` targets are reported separately.
`--quick`: digits, tiny rounds (seconds). `--out FILE.json`: the raw rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.label_config import kind_of  # noqa: E402
from core.project_settings import ProjectSettings  # noqa: E402
from plugins.confident import ConfidentRule  # noqa: E402
from plugins.datasets import Dataset, load_dataset  # noqa: E402
from plugins.holdout import assign_holdout, split_indices  # noqa: E402
from plugins.loop import initial_indices  # noqa: E402
from plugins.models import build_model  # noqa: E402
from worker.train import _warm_start, confident_block, fit_and_measure, promotion_verdict  # noqa: E402

GOAL = "achieved precision >= target in every round with a threshold, every seed, >= 3 seeds"
QUICK = {"dataset": "digits", "pool": 0, "start": 300, "step": 100, "max_labels": 500}


def label_config(names: list[str]) -> str:
    """A single-choice image labeling config with one choice per class."""
    choices = "".join(f'<Choice value="{n}"/>' for n in names)
    return f'<View><Image name="img" value="$image"/><Choices name="label" toName="img">{choices}</Choices></View>'


class _Serving:
    """The serving version as promotion_verdict asks for it (ctx.store and ctx.models), kept in memory."""

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None
        self.artifact: SimpleNamespace | None = None

    def current_version(self) -> str | None:
        """Name of the serving version (None before the first)."""
        return None if self.record is None else self.record["version"]

    def version(self, name: str) -> dict[str, Any] | None:
        """The serving version's record."""
        return self.record

    def get(self, project: int, name: str) -> SimpleNamespace | None:
        """The serving version's artifact: its label map and model."""
        return self.artifact


def pool_row(rule: dict[str, Any], probs: np.ndarray, y_true: np.ndarray, target: float) -> dict[str, Any]:
    """What the serving rule marks confident among the pool's probabilities, scored against the true classes."""
    has_rule = rule.get("threshold") is not None
    sure = ConfidentRule.from_dict(rule).confident(probs) if has_rule else np.zeros(len(probs), dtype=bool)
    n_sure, n_right = int(sure.sum()), int((sure & (probs.argmax(axis=1) == y_true)).sum())
    achieved = n_right / n_sure if n_sure else None
    return {"target": target, "threshold": rule.get("threshold"), "needed": rule.get("needed"),
            "rule_held_out": rule.get("held_out"), "above": rule.get("above", 0),
            "held_precision": rule.get("precision"), "lower_bound": rule.get("lower_bound"),
            "reason": rule.get("reason"), "auto_labeled": n_sure, "auto_right": n_right,
            "share": n_sure / len(probs), "achieved": achieved,
            "met": None if achieved is None else achieved >= target}


def run_seed(data: Dataset, args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """One active-learning run: a row per round and target with the serving rule and what it achieved."""
    kind = kind_of(label_config(data.class_names))
    model_spec = {"name": args.model, "params": {"committee": 1} if args.model == "logistic" else {}}
    settings = ProjectSettings(strategy={"name": args.strategy}, model=model_spec, image_size=data.x_train.shape[1],
                               channels=1 if data.x_train.ndim == 3 else 3, holdout_fraction=args.holdout,
                               confident_target=args.targets[0],
                               confident_level=args.level, batch_size=args.step, seed=seed,
                               promotion_gate=not args.no_gate)
    rng = np.random.default_rng([seed, 7])
    n_pool = args.pool if 0 < args.pool < len(data.y_train) else len(data.y_train)
    pool = np.sort(rng.choice(len(data.y_train), size=n_pool, replace=False))
    x_pool, y_pool = data.x_train[pool], data.y_train[pool]
    labeled = initial_indices(kind.strata(y_pool), args.start, seed)
    strategy = settings.build_strategy()
    serving = _Serving()
    ctx = SimpleNamespace(store=serving, models=serving, project=0)
    sides: dict[int, bool] = {}
    rows = []
    for round_no in range(10_000):  # the worker's train_version, then the publication's confident marks
        started = time.perf_counter()
        ids = [int(i) for i in labeled]
        x, y = x_pool[labeled], kind.encode([data.class_names[c] for c in y_pool[labeled]])
        sides = assign_holdout(ids, kind.strata(y), settings.holdout_fraction, settings.seed, sides)
        train_idx, held_idx = split_indices(ids, sides)
        model = build_model(settings.model.name, len(kind.labels), **settings.model_params(), **kind.model_params())
        _warm_start(ctx, model, list(kind.labels))
        refit = not (settings.promotion_gate and len(held_idx))
        fitted = fit_and_measure(model, kind, settings, x, y, train_idx, held_idx, refit=refit)
        rules = {t: confident_block(settings.model_copy(update={"confident_target": t}), kind, fitted.held_outputs,
                                    y[held_idx]) for t in args.targets}
        verdict = promotion_verdict(ctx, kind, settings, x[held_idx], y[held_idx], fitted.held_outputs, y[train_idx])
        if verdict.promote:
            serving.record = {"version": f"v{round_no}", "confident": rules,
                              "holdout_set": {"fraction": settings.holdout_fraction, "stable": True,
                                              "held_out": int(len(held_idx)), "refit_on_all": refit}}
            serving.artifact = SimpleNamespace(label_map=list(kind.labels), model=model)
        served = serving.artifact.model
        unlabeled = np.setdiff1d(np.arange(n_pool), labeled)
        probs = served.predict_proba(x_pool[unlabeled])
        common = {"seed": seed, "round": round_no, "labels": int(len(labeled)), "held_out": int(len(held_idx)),
                  "promoted": verdict.promote, "serving": serving.record["version"], "pool": int(len(unlabeled)),
                  "pool_accuracy": float((probs.argmax(axis=1) == y_pool[unlabeled]).mean()),
                  "holdout_accuracy": fitted.metrics.get("holdout_accuracy"), "seconds": time.perf_counter() - started}
        rows += [{**common, **pool_row(serving.record["confident"][t], probs, y_pool[unlabeled], t)}
                 for t in args.targets]
        if len(labeled) + args.step > args.max_labels or len(unlabeled) < args.step:
            return rows
        needs = strategy.required_inputs() | (strategy.optional_inputs() & served.provides)
        inputs = served.pool_inputs(x_pool[unlabeled], needs, x, y)
        labeled = np.concatenate([labeled, unlabeled[strategy.rank(inputs).order[:args.step]]])
    return rows


def _cell(values: list[float | None], digits: int = 3) -> str:
    """mean [min-max] of the defined values ('-' when none)."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{np.mean(v):.{digits}f} [{min(v):.{digits}f}-{max(v):.{digits}f}]"


def table(rows: list[dict[str, Any]], targets: list[float]) -> list[str]:
    """Markdown lines: one per target (in the order given) and round, over seeds."""
    header = ("target", "round", "labels", "held-out", "served", "thresholds", "threshold", "held-out precision",
              "lower bound", "pool", "pool share auto-labeled", "auto-labeled", "achieved precision",
              "achieved >= target", "pool accuracy")
    lines = []
    keys = sorted({(row["target"], row["round"]) for row in rows}, key=lambda k: (targets.index(k[0]), k[1]))
    for target, r in keys:
        at = [row for row in rows if row["round"] == r and row["target"] == target]
        ruled = [a for a in at if a["threshold"] is not None]
        judged = [a for a in at if a["met"] is not None]
        lines.append((str(target), str(r), _cell([a["labels"] for a in at], 0), _cell([a["held_out"] for a in at], 0),
                      f"{sum(a['promoted'] for a in at)}/{len(at)}", f"{len(ruled)}/{len(at)}",
                      _cell([a["threshold"] for a in ruled], 4), _cell([a["held_precision"] for a in ruled]),
                      _cell([a["lower_bound"] for a in ruled]), _cell([a["pool"] for a in at], 0),
                      _cell([a["share"] for a in at]), _cell([a["auto_labeled"] for a in at], 0),
                      _cell([a["achieved"] for a in judged], 4), f"{sum(a['met'] for a in judged)}/{len(judged)}",
                      _cell([a["pool_accuracy"] for a in at])))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return out + ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]


def verdict_line(rows: list[dict[str, Any]], target: float, seeds: list[int], primary: bool) -> str:
    """Whether the goal holds at `target`, and the worst achieved precision seen."""
    at = [row for row in rows if row["target"] == target]
    judged = [row for row in at if row["met"] is not None]
    met = len(seeds) >= 3 and {r["seed"] for r in judged} == set(seeds) and all(r["met"] for r in judged)
    worst = min((r["achieved"] for r in judged), default=None)
    what = "goal" if primary else "also measured, not the goal"
    why = "" if met else f" ({len(seeds)} seeds)" if len(seeds) < 3 else \
        " (no auto-labeled pool items in some seed)" if {r["seed"] for r in judged} != set(seeds) else ""
    return (f"{what} at target {target} ({GOAL}): {'met' if met else 'NOT met'}{why}; rounds with auto-labeled pool "
            f"items {len(judged)}/{len(at)}; worst achieved precision {'-' if worst is None else f'{worst:.4f}'}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and whether the goal was met."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--pool", type=int, default=20_000, help="pool items from the training split (0: all)")
    parser.add_argument("--start", type=int, default=1000, help="random labels before the first round")
    parser.add_argument("--step", type=int, default=500, help="labels the strategy adds per round")
    parser.add_argument("--max-labels", type=int, default=4000)
    parser.add_argument("--target", type=float, default=0.99, help="the precision the goal is judged at")
    parser.add_argument("--also", default="0.95", help="more targets, reported separately ('' for none)")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--holdout", type=float, default=0.2, help="the project's holdout_fraction")
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--model", default="logistic", choices=("logistic", "cnn"),
                        help="logistic (committee 1, the fast settings) or the small CNN (slow on a CPU)")
    parser.add_argument("--no-gate", action="store_true", help="promotion gate off: every version serves, refit on all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="digits, 300 labels +100 per round up to 500")
    parser.add_argument("--out", type=Path, help="write the raw rows to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.targets = [args.target] + [float(t) for t in args.also.split(",") if t and float(t) != args.target]
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    started = time.perf_counter()
    data = load_dataset(args.dataset)
    print(f"confident pre-labels: {args.dataset}, pool {args.pool or len(data.y_train)}, {args.start} random "
          f"labels then +{args.step} by {args.strategy} up to {args.max_labels}, {args.model}, "
          f"holdout {args.holdout}, promotion gate {'off' if args.no_gate else 'on'}, targets {args.targets} at "
          f"level {args.level}, seeds {seeds}; mean [min-max] over seeds")
    rows = [row for seed in seeds for row in run_seed(data, args, seed)]
    print("\n".join(table(rows, args.targets)))
    for target, r in sorted({(row["target"], row["round"]) for row in rows if row["reason"]},
                            key=lambda k: (args.targets.index(k[0]), k[1])):
        why = [row for row in rows if row["target"] == target and row["round"] == r and row["reason"]]
        print(f"target {target}, round {r}: no threshold in {len(why)} seeds; seed {why[0]['seed']}: "
              f"{why[0]['reason']}")
    for k, target in enumerate(args.targets):
        print(verdict_line(rows, target, seeds, primary=k == 0))
    print(f"wall time {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
