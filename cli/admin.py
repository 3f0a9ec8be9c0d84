"""Admin commands (`lsal strategy`, `settings`, `train`, `rescore`, `versions`, `rollback`, `status`, `doctor`).

They run the same code as the admin HTTP API (core.admin) against the same Redis (REDIS_URL).
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime
from typing import Annotated, Any

import typer
from redis import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from core import admin
from core.config import get_settings
from core.project_settings import InvalidSettingsError
from core.store import ProjectStore

console = Console()
Project = Annotated[int, typer.Option("--project", "-p", min=1, help="Label Studio project id")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
strategy_app = typer.Typer(help="Show or switch a project's acquisition strategy.", no_args_is_help=True)


def _actor() -> str:
    """Who runs this CLI, for the audit record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"lsal CLI as {user}@{socket.gethostname()}"


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _store(project: int) -> tuple[Redis, ProjectStore]:
    settings = get_settings()
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        redis.ping()
    except RedisError as exc:
        raise _fail(f"cannot reach Redis at REDIS_URL ({type(exc).__name__}: {exc})") from None
    return redis, ProjectStore(redis, project)


def parse_extra(args: list[str]) -> dict[str, Any]:
    """['--mc-samples', '20', '--flag'] -> {'mc_samples': 20, 'flag': True}; values parsed as JSON if they can."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ValueError(f"expected --name value, got {arg!r}")
        key, _, value = arg[2:].partition("=")
        if not value:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
        i += 1
    return out


@strategy_app.command("set", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def strategy_set(ctx: typer.Context, name: Annotated[str, typer.Argument(help="strategy name (lsal strategies)")],
                 project: Project, now: Annotated[bool, typer.Option(help="rescore at once")] = False) -> None:
    """Switch the project's strategy; extra --options are its parameters (or the model's, e.g. --mc-samples)."""
    try:
        params = parse_extra(ctx.args)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    redis, store = _store(project)
    try:
        new = admin.set_strategy(store, get_settings().defaults, name, params, get_settings().weights_dir)
    except InvalidSettingsError as exc:
        raise _fail(str(exc)) from None
    admin.record_audit(store, _actor(), "strategy", {"name": name, "params": params, "now": now})
    console.print(f"project {project}: strategy {new.strategy.name} {json.dumps(new.strategy.params)}, "
                  f"model {new.model.name} {json.dumps(new.model.params)}")
    if now:
        job = admin.trigger(redis, get_settings().queue, project, "rescore", "strategy changed",
                            get_settings().job_timeout_s)
        console.print(f"rescore job {job.job_id} ({'queued' if job.created else 'already pending'})")
    else:
        console.print("the next rescore uses it (add --now to rescore at once)")


@strategy_app.command("get")
def strategy_get(project: Project) -> None:
    """Print the project's strategy and parameters."""
    _, store = _store(project)
    s = store.settings(get_settings().defaults)
    console.print_json(json.dumps({"strategy": s.strategy.model_dump(), "batch_size": s.batch_size}))


def settings_cmd(project: Project,
                 set_: Annotated[list[str] | None, typer.Option("--set", help="key=value (JSON value), repeatable")]
                 = None) -> None:
    """Show the project's settings, or change some with --set key=value."""
    _, store = _store(project)
    defaults = get_settings().defaults
    if set_:
        patch = {}
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep:
                raise _fail(f"--set takes key=value, got {item!r}")
            try:
                patch[key.strip().replace("-", "_")] = json.loads(value)
            except ValueError:
                patch[key.strip().replace("-", "_")] = value
        try:
            admin.update_settings(store, defaults, patch, get_settings().weights_dir)
        except InvalidSettingsError as exc:
            raise _fail(str(exc)) from None
        admin.record_audit(store, _actor(), "settings", {"changed": patch})
    console.print_json(store.settings(defaults).model_dump_json())


def _trigger(project: int, kind: str) -> None:
    redis, store = _store(project)
    s = get_settings()
    job = admin.trigger(redis, s.queue, project, kind, "cli", s.job_timeout_s)
    admin.record_audit(store, _actor(), kind, {"job": job.job_id})
    console.print(f"{kind} job {job.job_id} ({'queued' if job.created else 'already pending: coalesced'})")


def train(project: Project) -> None:
    """Retrain the project's model now (then rescore and publish)."""
    _trigger(project, "retrain")


def rescore(project: Project) -> None:
    """Rescore and publish the order now with the serving model."""
    _trigger(project, "rescore")


def versions(project: Project, as_json: AsJson = False) -> None:
    """List the project's model versions with their metrics."""
    _, store = _store(project)
    records = store.versions()
    if as_json:
        console.print_json(json.dumps(records))
        return
    current = store.current_version()
    table = Table("version", "created", "labels", "held-out acc", "macro-F1", "serving")
    for r in records:
        m = r.get("metrics") or {}
        table.add_row(r["version"], _when(r.get("created_at")), str(r.get("labeled")),
                      _num(m.get("holdout_accuracy")), _num(m.get("holdout_macro_f1")),
                      "*" if r["version"] == current else "")
    console.print(table if records else f"project {project} has no model versions yet")


def rollback_cmd(project: Project, version: Annotated[str, typer.Argument(help="e.g. v3")]) -> None:
    """Serve an earlier model version and republish its order."""
    redis, store = _store(project)
    try:
        admin.rollback(store, version)
    except KeyError as exc:
        raise _fail(exc.args[0]) from None
    admin.record_audit(store, _actor(), "rollback", {"version": version})
    console.print(f"project {project} now serves {version}")
    _trigger(project, "rescore")


def status_cmd(project: Project, as_json: AsJson = False) -> None:
    """Strategy, model versions, labeled/unlabeled counts, queue state and the last round's timings."""
    redis, store = _store(project)
    s = get_settings()
    st = admin.status(redis, store, s.defaults, s.queue)
    if as_json:
        console.print_json(json.dumps(st, default=str))
        return
    cfg = st["settings"]
    console.print(f"[bold]project {project}[/bold]  strategy [cyan]{cfg['strategy']['name']}[/cyan] "
                  f"{json.dumps(cfg['strategy']['params'])}  model {cfg['model']['name']}  batch {cfg['batch_size']}"
                  f"  retrain every {cfg['retrain_every']}  min labels {cfg['min_labels']}")
    console.print(f"labeled {st['labeled']}  unlabeled {st['unlabeled']}  changes since last training "
                  f"{st['changes_since_training']}  events {st['events']}")
    pub = st["published"]
    console.print(f"serving {st['current_version'] or '-'}; live in Label Studio: "
                  f"{pub['model_version'] if pub else '- (nothing published yet)'}"
                  + (f", first tasks {pub['top'][:5]}" if pub else ""))
    q = st["queue"]
    console.print(f"queue {q['queue']}: {q['queued']} waiting, {q['workers']} worker(s); pending {q['pending'] or '-'};"
                  f" running {[(j['id'], j.get('phase')) for j in q['running']] or '-'}; failed {q['failed']}")
    if q.get("last_failed"):
        console.print(f"[red]last failure[/red] {q['last_failed']['id']}: {q['last_failed']['error']}")
    for kind in ("last_retrain", "last_rescore"):
        last = st.get(kind)
        if last:
            console.print(f"{kind.replace('_', ' ')}: {last.get('status')} at {_when(last.get('at'))} in "
                          f"{last.get('duration_s', '-')} s; timings {last.get('timings', {})}"
                          + (f"; error: {last['error']}" if last.get("error") else ""))
    stopping = st.get("stopping")
    if stopping:
        if stopping.get("fired"):
            console.print(f"[yellow]stopping criterion fired[/yellow] ({stopping['criterion']}) after "
                          f"{stopping.get('after')}: {stopping['reason']}", highlight=False)
        else:
            console.print(f"stopping: no criterion fired after {stopping.get('after')} "
                          f"({stopping.get('labels')} labels; rule {json.dumps(stopping.get('rule'))})")
    if st["versions"]:
        versions(project)
    if st["skipped"]:
        console.print(f"{len(st['skipped'])} task(s) skipped, e.g. {st['skipped'][:3]}")
    for record in st.get("audit") or []:
        console.print(f"changed {_when(record.get('at'))}: {record.get('action')} by {record.get('actor')} "
                      f"{json.dumps(record.get('detail'), default=str)[:200]}", highlight=False, markup=False)


def reconcile_cmd(project: Annotated[int | None, typer.Option("--project", "-p", min=1,
                                                              help="one project (default: every known one)")]
                  = None) -> None:
    """Compare Label Studio's annotation counts with the trained ones; enqueue the retrains lost events missed."""
    from core.ls_client import LabelStudioError
    from core.reconciler import reconcile_all, reconcile_project

    redis, _ = _store(project or 1)
    try:
        results = [reconcile_project(get_settings(), redis, project)] if project else \
            reconcile_all(get_settings(), redis)
    except LabelStudioError as exc:
        raise _fail(str(exc)) from None
    for r in results:
        action = r.get("retrain") and f"retrain queued ({r['retrain']})" or r.get("rescore") and \
            f"rescore queued ({r['rescore']})" or r.get("error") or "up to date"
        dead = f"; re-running jobs of a dead worker {r['abandoned']}" if r.get("abandoned") else ""
        hook = f"; webhook re-registered with the new secret ({r['webhook']})" if r.get("webhook") else ""
        console.print(f"project {r['project']}: Label Studio has {r.get('labeled')} annotated tasks, newest version "
                      f"trained on {r.get('trained_on')}: {action}{dead}{hook}")


def doctor() -> None:
    """Check Redis, Label Studio (URL and token), the model directory and the workers; say what is wrong."""
    from rq import Worker

    from core.ls_client import LabelStudioClient, LabelStudioError
    from core.queueing import queue_for

    s = get_settings()
    checks: list[tuple[str, bool, str]] = []
    redis = Redis.from_url(s.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        redis.ping()
        workers = Worker.all(queue=queue_for(redis, s.queue))
        checks.append(("Redis", True, "reachable at REDIS_URL"))
        checks.append(("workers", bool(workers), f"{len(workers)} on queue {s.queue!r}" if workers else
                       f"no worker on queue {s.queue!r}: start one with `lsal worker`"))
    except RedisError as exc:
        checks.append(("Redis", False, f"cannot reach REDIS_URL: {type(exc).__name__}: {exc}"))
    if s.label_studio_api_key is None:
        checks.append(("Label Studio", False, "LABEL_STUDIO_API_KEY is not set (Account & Settings -> "
                       "Personal Access Token, or a legacy token)"))
    else:
        client = LabelStudioClient.from_settings(s)
        try:
            user = client.whoami()
            checks.append(("Label Studio", True, f"{s.label_studio_url} answers; token of "
                           f"{user.get('email') or user.get('username')}"))
        except LabelStudioError as exc:
            hint = " (the token is wrong or expired)" if "401" in str(exc) else ""
            checks.append(("Label Studio", False, f"{exc}{hint}"))
        finally:
            client.close()
    try:
        s.model_dir.mkdir(parents=True, exist_ok=True)
        probe = s.model_dir / ".lsal-write-test"
        probe.write_text("ok")
        probe.unlink()
        checks.append(("model dir", True, f"{s.model_dir} is writable"))
    except OSError as exc:
        checks.append(("model dir", False, f"{s.model_dir}: {exc}"))
    checks.append(("secret", s.secret is not None, "LSAL_SECRET is set" if s.secret else
                   "LSAL_SECRET is not set: /webhook and /admin refuse every call"))
    checks.append(("webhook URL", True, f"{s.public_url}/webhook (LSAL_PUBLIC_URL)" if s.public_url else
                   "LSAL_PUBLIC_URL is not set: webhooks go to the ML backend URL connected in each project "
                   "(set it when a project has several ML backends)"))
    table = Table("check", "ok", "detail")
    for name, ok, detail in checks:
        table.add_row(name, "[green]yes[/green]" if ok else "[red]NO[/red]", detail)
    console.print(table)
    if not all(ok for _, ok, _ in checks):
        raise typer.Exit(1)


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if isinstance(ts, (int, float)) else "-"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def register(app: typer.Typer) -> None:
    """Add the admin and service commands to the `lsal` app."""
    from cli.service import serve, worker

    app.add_typer(strategy_app, name="strategy")
    app.command("settings")(settings_cmd)
    app.command()(train)
    app.command()(rescore)
    app.command()(versions)
    app.command("rollback")(rollback_cmd)
    app.command("status")(status_cmd)
    app.command()(doctor)
    app.command("reconcile")(reconcile_cmd)
    app.command()(serve)
    app.command()(worker)
