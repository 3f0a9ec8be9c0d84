"""The `lsal` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Label Studio Active Learning: strategies, backend and worker.", no_args_is_help=True)
console = Console()

DEMO_STRATEGIES = "random,margin,badge,coreset,typiclust"


@app.command()
def strategies(as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False) -> None:
    """List the registered acquisition strategies with their inputs and parameters."""
    from core.project_settings import strategy_summary
    from plugins.strategies import STRATEGIES

    rows = []
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        params = {k: f.default for k, f in cls.Params.model_fields.items()}
        rows.append({"name": name, "needs": sorted(i.value for i in cls.needs),
                     "summary": strategy_summary(name), "params": params})
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table("strategy", "needs", "what it does")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["needs"]) or "-", row["summary"])
    console.print(table)


@app.command()
def demo(
    offline: Annotated[bool, typer.Option("--offline", help="the offline simulation only: strategies against "
                                          "random, no Label Studio")] = False,
    strategy: Annotated[str, typer.Option(help="acquisition strategy of the demo project")] = "margin",
    tasks: Annotated[int, typer.Option(min=20, max=2000, help="surface images uploaded into Label Studio (300 "
                                       "more, of other textures, are the held-out test set)")] = 200,
    rounds: Annotated[int | None, typer.Option(min=1, help="rounds of labels (default 5; --offline: 10)")] = None,
    batch: Annotated[int, typer.Option(min=1, help="labels per round (the project retrains after each)")] = 10,
    workdir: Annotated[Path, typer.Option(help="data dir: Label Studio's database (kept between runs), "
                                          "models, images, logs")] = Path("lsal-data/demo"),
    port: Annotated[int | None, typer.Option(help="port of `lsal serve` (default: a free one)")] = None,
    ls_port: Annotated[int | None, typer.Option(help="port of Label Studio (default: a free one)")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running/--exit", help="after the rounds, keep the stack up "
                                               "for you to label in Label Studio until Ctrl-C (--exit: stop "
                                               "it after the rounds)")] = True,
    strategy_names: Annotated[str | None, typer.Option(
        "--strategies", help=f"--offline: comma-separated strategies (default: {DEMO_STRATEGIES})")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="--offline: repetitions with different seeds "
                                              "(default 3)")] = None,
    initial: Annotated[int | None, typer.Option(min=1, help="--offline: labels before the first round "
                                                "(default 20)")] = None,
    out: Annotated[Path | None, typer.Option(help="--offline: output folder (default: runs/demo)")] = None,
) -> None:
    """The whole stack on this machine: Label Studio, the lsal backend and a worker, a private Redis; a
    simulated annotator labels synthetic surface images with defects in Label Studio's order, the model's
    accuracy is printed per round, and the stack stays up for you to label until Ctrl-C. With --offline: the active-learning loop simulated without Label Studio, strategies against random."""
    offline_only = {"--strategies": strategy_names, "--seeds": seeds, "--initial": initial, "--out": out}
    if offline:
        full_only = {"--strategy": strategy != "margin", "--tasks": tasks != 200, "--port": port,
                     "--ls-port": ls_port, "--exit": not keep_running,
                     "--workdir": workdir != Path("lsal-data/demo")}
        given = [k for k, v in full_only.items() if v]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} only apply without --offline")
        _offline_demo(strategy_names or DEMO_STRATEGIES, seeds or 3, initial or 20, batch, rounds or 10,
                      out or Path("runs/demo"))
        return
    given = [k for k, v in offline_only.items() if v is not None]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} only apply with --offline")
    from stack.demo import DemoError, DemoOptions, run_demo

    options = DemoOptions(workdir=workdir, tasks=tasks, rounds=rounds or 5, batch=batch, strategy=strategy,
                          port=port, ls_port=ls_port, keep_running=keep_running)
    try:
        run_demo(options, console)
    except DemoError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted: everything the demo started is stopped")
        raise typer.Exit(130) from None
    console.print("done: everything the demo started is stopped")


def _offline_demo(strategy_names: str, seeds: int, initial: int, batch: int, rounds: int, out: Path) -> None:
    """Offline demo: the active-learning loop on scikit-learn's bundled digits, strategies against random."""
    from plugins.simulation import SimulationConfig, curves

    config = SimulationConfig(
        dataset="digits", model="logistic", model_params={"committee": 1},
        strategies=[{"name": n.strip()} for n in strategy_names.split(",") if n.strip()],
        seeds=seeds, initial=initial, batch=batch, budget=initial + rounds * batch,
    )
    console.print(f"digits (1,797 real 8x8 images): {initial} initial labels, +{batch} per round, {rounds} rounds, "
                  f"{seeds} seeds, logistic regression")
    result = _run_with_progress(config, out)
    table = Table("strategy", *[str(initial + r * batch) for r in range(rounds + 1)], "vs random",
                  title="test accuracy (mean over seeds) by number of labels")
    all_curves = curves(result.results)
    baseline = all_curves.get("random")
    for name, (_, acc) in all_curves.items():
        mean = acc.mean(axis=0)
        gain = "" if baseline is None else f"{100 * (mean[-1] - baseline[1].mean(axis=0)[-1]):+.1f} pt"
        table.add_row(name, *[f"{v:.3f}" for v in mean], gain)
    console.print(table)
    console.print(f"learning curves: {result.png_path}")


def _run_with_progress(config, out: Path):
    """run_simulation with a progress bar (one log line per round when not on a terminal); errors exit 2."""
    from plugins.simulation import run_simulation
    from plugins.strategies import StrategyError

    total = len(config.strategies) * config.seeds * (config.rounds + 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("simulating", total=total)

        def advance(result) -> None:
            line = f"{result.strategy} seed {result.seed}: {result.labels} labels, acc {result.accuracy:.3f}"
            progress.update(task, advance=1, description=line)
            if not console.is_terminal:  # a log file gets one line per round instead of a live bar
                console.print(f"[{progress.tasks[0].completed:.0f}/{total}] {line} ({result.seconds:.1f} s)")

        try:
            return run_simulation(config, out, on_round=advance)
        except (StrategyError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None


def _key_values(pairs: list[str], option: str) -> dict:
    """['k=v', ...] -> {k: json(v) or the string v}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(
        help="digits, mnist, folder, defects or fortunes (texts: with --encoder minilm); detection_defects (boxes: "
             "use --model detector)")] = "digits",
    model: Annotated[str, typer.Option(help="model plugin: logistic, cnn, ensemble or detector")] = "logistic",
    strategy_names: Annotated[str, typer.Option("--strategies", help="comma-separated strategy names")] = (
        "random,margin,entropy,bald,badge"),
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    first_seed: Annotated[int, typer.Option(min=0, help="run seeds first_seed .. first_seed + seeds - 1")] = 0,
    initial: Annotated[int, typer.Option(min=1, help="labels before the first round")] = 20,
    batch: Annotated[int, typer.Option(min=1, help="labels added per round")] = 10,
    budget: Annotated[int, typer.Option(min=1, help="total labels")] = 100,
    target: Annotated[float, typer.Option(help="accuracy for the labels-to-target table")] = 0.9,
    pool_subsample: Annotated[int | None, typer.Option(help="score a random subset of the pool per round")] = None,
    dataset_param: Annotated[list[str], typer.Option(help="loader argument key=value (repeatable)")] = [],
    model_param: Annotated[list[str], typer.Option(help="model parameter key=value (repeatable)")] = [],
    encoder: Annotated[str | None, typer.Option(help="a frozen encoder whose cached embeddings the model trains "
                                                     "on: mobilenet_v2 (images) or minilm (text)")] = None,
    encoder_param: Annotated[list[str], typer.Option(help="encoder parameter key=value, e.g. size=64 "
                                                          "(repeatable)")] = [],
    stopping: Annotated[str | None, typer.Option(
        help='a stopping rule as JSON, e.g. \'{"target": 0.9}\' or \'{"min_gain": 0.005, "patience": 3}\'')] = None,
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="the service's promotion gate: a stable 20% of "
                                       "the labels held out, a round's model served only when not worse")] = True,
    config: Annotated[Path | None, typer.Option(help="a SimulationConfig JSON file; replaces the options")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/simulate"),
) -> None:
    """Offline active-learning simulation: results.csv, learning_curve.png and summary.md in --out."""
    from pydantic import ValidationError

    from plugins.simulation import SimulationConfig

    try:
        if config is not None:
            cfg = SimulationConfig.model_validate_json(config.read_text())
        else:
            cfg = SimulationConfig(
                dataset=dataset, dataset_params=_key_values(dataset_param, "--dataset-param"), model=model,
                model_params=_key_values(model_param, "--model-param"), encoder=encoder,
                encoder_params=_key_values(encoder_param, "--encoder-param"),
                strategies=[{"name": n.strip()} for n in strategy_names.split(",") if n.strip()],
                seeds=seeds, first_seed=first_seed, initial=initial, batch=batch, budget=budget, target=target,
                pool_subsample=pool_subsample, stopping=json.loads(stopping) if stopping else {}, gate=gate,
            )
    except (ValidationError, OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    result = _run_with_progress(cfg, out)
    console.print(result.table_path.read_text())
    console.print(f"wrote {result.csv_path}, {result.png_path}, {result.table_path}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="folders (or results.csv files) of earlier simulations")],
    target: Annotated[float, typer.Option(help="accuracy for the labels-to-target table")] = 0.9,
    title: Annotated[str, typer.Option(help="plot title")] = "",
    metric: Annotated[str, typer.Option(help="what the runs measured (detection: 'test map_50')")] = "test accuracy",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/report"),
) -> None:
    """Merge the results of several `lsal simulate` runs into one CSV, PNG and summary table."""
    from plugins.simulation import read_csv, write_report

    results, names = [], []
    for run in runs:
        path = run / "results.csv" if run.is_dir() else run
        if not path.is_file():
            raise typer.BadParameter(f"{path} does not exist", param_hint="RUNS")
        rows, names = read_csv(path)
        results += rows
    if not results:
        raise typer.BadParameter("no results in the given runs", param_hint="RUNS")
    result = write_report(results, names, target, out, title=title, metric=metric)
    console.print(result.table_path.read_text())
    console.print(f"wrote {result.csv_path}, {result.png_path}, {result.table_path}")


from cli.admin import register as _register_admin  # noqa: E402

_register_admin(app)

if __name__ == "__main__":
    app()
