"""Offline simulation: several strategies and seeds through the loop, with a CSV, a PNG and a savings table."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from plugins.datasets import Dataset, load_dataset
from plugins.detection_data import DETECTION_DATASETS, DetectionDataset, load_detection_dataset
from plugins.fileio import atomic_write
from plugins.kinds.detection import ImageDetection
from plugins.loop import CLASSIFICATION, FIT_METRICS, KindTask, LoopTask, RoundResult, run_loop
from plugins.promotion import GateRule
from plugins.models import build_model
from plugins.savings import labels_to_reach, savings, savings_interval
from plugins.stopping import StoppingRule
from plugins.strategies import STRATEGIES, Strategy, StrategySpec, build_strategy, strategy_for


class SimulationConfig(BaseModel):
    """Everything one `lsal simulate` run needs; a JSON file of this shape is accepted too."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("digits", description="digits, mnist, folder, defects or fortunes (texts); detection_defects "
                                               "(boxes)")
    dataset_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the loader")
    model: str = Field("logistic", description="model plugin: logistic, cnn, ensemble or detector")
    model_params: dict[str, Any] = Field(default_factory=dict)
    encoder: str | None = Field(None, description="a frozen encoder (mobilenet_v2, minilm) whose embeddings the "
                                                  "model trains on (a text data set needs one)")
    encoder_params: dict[str, Any] = Field(default_factory=dict, description="parameters of that encoder")
    strategies: list[StrategySpec] = Field(
        default_factory=lambda: [StrategySpec(name="random"), StrategySpec(name="margin")],
        description="strategies to compare; batch methods get batch_size = batch unless set",
    )
    seeds: int = Field(3, ge=1, le=100)
    first_seed: int = Field(0, ge=0, description="seeds run are first_seed .. first_seed + seeds - 1")
    initial: int = Field(20, ge=1, description="labels before the first round, balanced over classes")
    batch: int = Field(10, ge=1, description="labels the oracle adds per round")
    budget: int = Field(100, ge=1, description="stop when this many labels are used")
    target: float = Field(0.9, gt=0, le=1, description="accuracy for the labels-to-target table")
    pool_subsample: int | None = Field(None, ge=1, description="score a random subset of the pool per round")
    gate: bool = Field(True, description="apply the service's promotion gate: a stable 20% of the labels held out, "
                                         "a round's model served only when not worse beyond noise on them")
    stopping: StoppingRule = Field(default_factory=StoppingRule,
                                   description="end a run early when a criterion fires (target and convergence "
                                               "on test accuracy); its reason is in results.csv")

    @model_validator(mode="after")
    def _budget_covers_initial(self) -> SimulationConfig:
        if self.budget < self.initial:
            raise ValueError(f"budget ({self.budget}) must be at least the initial labels ({self.initial})")
        return self

    @property
    def rounds(self) -> int:
        """Acquisition rounds needed to spend the budget."""
        return math.ceil((self.budget - self.initial) / self.batch)

    def labels(self) -> list[str]:
        """A distinct display name per strategy spec."""
        names = [spec.name if not spec.params else _describe(spec) for spec in self.strategies]
        return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _describe(spec: StrategySpec) -> str:
    base = spec.params.get("base")
    if isinstance(base, dict) and "name" in base:
        return f"{spec.name}({base['name']})"
    return spec.name


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation measured and where it wrote it."""

    results: list[RoundResult]
    summary: list[dict[str, Any]]
    csv_path: Path
    png_path: Path
    table_path: Path


def load_any_dataset(name: str, **params: Any) -> tuple[Dataset | DetectionDataset, LoopTask]:
    """A classification data set (plugins.datasets) or a detection one (plugins.detection_data) by name, and
    the loop task that measures it (a detection set: mAP@0.5 primary, mAP@[.5:.95] beside it, AP@0.5 per class)."""
    if name in DETECTION_DATASETS:
        data = load_detection_dataset(name, **params)
        kind = ImageDetection("label", "image", "image", tuple(data.class_names))
        return data, KindTask(kind, secondary_metric="holdout_map", per_class_prefix="holdout_ap_50/")
    return load_dataset(name, **params), CLASSIFICATION


def run_simulation(config: SimulationConfig, out_dir: str | Path,
                   on_round: Callable[[RoundResult], None] | None = None,
                   dataset: Dataset | None = None) -> SimulationResult:
    """Run every strategy for every seed, then write results.csv, learning_curve.png and summary.md."""
    data, task = (dataset, CLASSIFICATION) if dataset is not None else \
        load_any_dataset(config.dataset, **config.dataset_params)
    if config.encoder is not None:
        from plugins.encoders.datasets import embedded  # torch and the encoder's library: only when asked

        data = embedded(data, config.encoder, config.encoder_params, json.dumps(config.dataset_params, sort_keys=True))
    elif getattr(data, "input_type", "image") == "text":
        raise ValueError(f"data set {data.name!r} holds texts: pass an encoder (e.g. --encoder minilm)")
    specs = list(zip(config.labels(), config.strategies))
    for _, spec in specs:  # fail on a bad spec before any training starts
        strategy_for(spec, config.batch, 0)
    results: list[RoundResult] = []
    for label, spec in specs:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            results += run_loop(
                lambda: build_model(config.model, data.n_classes, **{"seed": seed, **config.model_params}),
                strategy_for(spec, config.batch, seed), data.x_train, data.y_train, data.x_test, data.y_test,
                initial=config.initial, batch=config.batch, rounds=config.rounds, seed=seed,
                pool_subsample=config.pool_subsample, label=label, on_round=on_round,
                stopping=config.stopping if config.stopping.active() else None, task=task,
                n_classes=data.n_classes, gate=GateRule() if config.gate else None,
            )
    return write_report(results, list(data.class_names), config.target, out_dir, title=_title(config, data),
                        metric=task.metric_name)


def write_report(results: list[RoundResult], class_names: list[str], target: float, out_dir: str | Path,
                 title: str = "", metric: str = "test accuracy") -> SimulationResult:
    """results.csv, learning_curve.png and summary.md for these results, in out_dir (`metric`: what the
    results' `accuracy` column measures, e.g. "test map_50" for detection)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = labels_to_target(results, target)
    csv_path = write_csv(results, class_names, out / "results.csv")
    png_path = plot_curves(results, target, out / "learning_curve.png", title=title, metric=metric)
    table_path = out / "summary.md"
    text = summary_markdown(summary, target, max(r.labels for r in results), metric) + stop_lines(results)
    atomic_write(table_path, lambda fh: fh.write(text.encode()))
    return SimulationResult(results, summary, csv_path, png_path, table_path)


def stop_lines(results: list[RoundResult]) -> str:
    """Markdown lines naming the runs a stopping criterion ended early, and why ('' when none did)."""
    stopped = [r for r in results if r.stop_reason]
    if not stopped:
        return ""
    lines = ["", "Stopped early by the stopping rule:", ""]
    lines += [f"- {r.strategy}, seed {r.seed}, at {r.labels} labels: {r.stop_reason}" for r in stopped]
    return "\n".join(lines) + "\n"


def read_csv(path: str | Path) -> tuple[list[RoundResult], list[str]]:
    """The results and class names of a results.csv written by `write_csv` (to merge or re-plot runs)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return [], []
    names = [k.removeprefix("recall_") for k in rows[0] if k.startswith("recall_")]
    results = [
        RoundResult(
            strategy=r["strategy"], seed=int(r["seed"]), round=int(r["round"]), labels=int(r["labels"]),
            accuracy=float(r["accuracy"]), macro_f1=float(r["macro_f1"]),
            max_uncertainty=float(r["max_uncertainty"]), seconds=float(r["seconds"]),
            recall=tuple(float(r[f"recall_{n}"]) for n in names),
            labeled_per_class=tuple(int(r[f"labeled_{n}"]) for n in names),
            stop_reason=r["stop_reason"] or None,
            fit=tuple(float(r.get(f"fit_{m}") or math.nan) for m in FIT_METRICS),
            promoted={"True": True, "False": False}.get(r.get("promoted") or ""),
        )
        for r in rows
    ]
    return results, names


def _title(config: SimulationConfig, data: Dataset | DetectionDataset) -> str:
    return (f"{data.name}, {config.model}: {config.initial} initial labels, +{config.batch} per round, "
            f"{config.seeds} seeds")


def curves(results: list[RoundResult]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """strategy -> (labels per round, accuracy array seeds x rounds), rounds cut to the shortest run."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in dict.fromkeys(r.strategy for r in results):
        runs: dict[int, list[RoundResult]] = {}
        for r in results:
            if r.strategy == name:
                runs.setdefault(r.seed, []).append(r)
        length = min(len(v) for v in runs.values())
        labels = np.array([r.labels for r in next(iter(runs.values()))[:length]])
        acc = np.array([[r.accuracy for r in v[:length]] for v in runs.values()])
        out[name] = (labels, acc)
    return out


def labels_to_target(results: list[RoundResult], target: float, baseline: str = "random") -> list[dict]:
    """Per strategy: mean labels to reach the target over seeds, final accuracy, savings against random
    with a 90% bootstrap interval over seeds (plugins.savings)."""
    rows = []
    all_curves = curves(results)
    for name, (labels, acc) in all_curves.items():
        per_seed = [labels_to_reach(labels, run, target) for run in acc]
        mean_curve = acc.mean(axis=0)
        rows.append({
            "strategy": name,
            "labels_to_target": float(np.mean(per_seed)),
            "seeds": len(per_seed),
            "seeds_reaching": int(np.isfinite(per_seed).sum()),
            "labels_to_target_mean_curve": labels_to_reach(labels, mean_curve, target),
            "final_labels": int(labels[-1]),
            "final_accuracy": float(mean_curve[-1]),
            "final_accuracy_std": float(acc[:, -1].std()),
            "largest_fall_mean": largest_fall(mean_curve[None, :]),
            "largest_fall_seed": largest_fall(acc),
        })
    base = next((r for r in rows if r["strategy"] == baseline), None)
    for row in rows:
        row.update(savings_vs_random=math.nan, savings_low=math.nan, savings_high=math.nan,
                   savings_paired=None)
        if base is None:
            continue
        key = "labels_to_target_mean_curve"
        row["savings_vs_random"] = savings(row[key], base[key])
        if row is not base:
            (labels, acc), (base_labels, base_acc) = all_curves[row["strategy"]], all_curves[baseline]
            interval = savings_interval(labels, acc, _seeds(results, row["strategy"]), base_labels,
                                        base_acc, _seeds(results, baseline), target)
            row.update(savings_low=interval.low, savings_high=interval.high, savings_paired=interval.paired)
    return rows


def largest_fall(curves: np.ndarray) -> float:
    """The largest fall of the metric from one round to the next in any row of `curves` (seeds x rounds); 0
    when none falls."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.shape[-1] < 2:
        return 0.0
    falls = curves[:, :-1] - curves[:, 1:]
    return float(max(np.nanmax(falls), 0.0)) if np.isfinite(falls).any() else 0.0


def _seeds(results: list[RoundResult], strategy: str) -> list[int]:
    """The strategy's seeds in the order of its rows in curves()."""
    return list(dict.fromkeys(r.seed for r in results if r.strategy == strategy))


def write_csv(results: list[RoundResult], class_names: list[str], path: Path) -> Path:
    """One row per (strategy, seed, round), with per-class recall and labels found."""
    rows = [r.as_dict(class_names) for r in results]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda fh: fh.write(text.getvalue().encode("utf-8")))


def plot_curves(results: list[RoundResult], target: float, path: Path, title: str = "",
                metric: str = "test accuracy") -> Path:
    """Learning curves: mean accuracy over seeds with a min-max band; random dashed as the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, (labels, acc) in curves(results).items():
        style = {"color": "black", "linestyle": "--"} if name == "random" else {}
        line, = ax.plot(labels, acc.mean(axis=0), label=name, linewidth=1.8, **style)
        ax.fill_between(labels, acc.min(axis=0), acc.max(axis=0), color=line.get_color(), alpha=0.12)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":", label=f"target {target:.0%}")
    ax.set_xlabel("labeled items")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    plt.close(fig)
    return path


def summary_markdown(summary: list[dict], target: float, budget: int, metric: str = "test accuracy") -> str:
    """The labels-to-target table as Markdown."""
    counts = sorted({row["seeds"] for row in summary})
    over = f"{counts[0]} seeds" if len(counts) == 1 else "each strategy's seeds"  # merged runs may differ
    final = "final accuracy" if metric == "test accuracy" else f"final {metric.removeprefix('test ')}"
    lines = [
        f"Labels needed to reach {target:.0%} {metric} (mean curve over {over}; budget {budget})",
        "",
        "| strategy | labels to target (mean curve) | mean over seeds | seeds reaching "
        f"| savings vs random (90% bootstrap interval over seeds) | {final} | largest round-to-round fall "
        "(mean curve / any seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['strategy']} | {_fmt_labels(row['labels_to_target_mean_curve'], budget)} "
            f"| {_fmt_labels(row['labels_to_target'], budget)} | {row['seeds_reaching']}/{row['seeds']} "
            f"| {_fmt_savings(row)} "
            f"| {row['final_accuracy']:.3f} ± {row['final_accuracy_std']:.3f} "
            f"| {row['largest_fall_mean']:.3f} / {row['largest_fall_seed']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _fmt_labels(value: float, budget: int) -> str:
    return f"> {budget}" if not math.isfinite(value) else f"{value:.0f}"


def _fmt_pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.0%}"


def _fmt_savings(row: dict) -> str:
    """Savings with its interval; -inf as the low end means the strategy missed the target in the tail."""
    point, low, high = row["savings_vs_random"], row["savings_low"], row["savings_high"]
    if not (math.isfinite(point) and math.isfinite(high)):
        return _fmt_pct(point)
    low_text = "-inf" if low == -math.inf else _fmt_pct(low)
    paired = "" if row["savings_paired"] else ", unpaired"
    return f"{_fmt_pct(point)} ({low_text} to {_fmt_pct(high)}{paired})"
