"""Admin commands (`lsal strategy`, `settings`, `train`, `rescore`, `versions`, `rollback`, `review`, `status`,
`doctor`).

They run the same code as the admin HTTP API (core.admin) against the same Redis (REDIS_URL).
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from redis import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from core import admin
from core.config import get_settings
from core.project_settings import InvalidSettingsError, ProjectSettings
from core.store import ProjectStore
from core.tokens import SECRET_HEADER

console = Console()
Project = Annotated[int, typer.Option("--project", "-p", min=1, help="Label Studio project id")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
ServiceUrl = Annotated[str | None, typer.Option(
    "--url", envvar="LSAL_URL", show_default=False,
    help="the backend's URL (default: LSAL_PUBLIC_URL): the settings in force of a project with none stored "
         "are the service's own defaults, read from its admin API with LSAL_SECRET")]
SERVICE_TIMEOUT_S = 5.0
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


def _service_client(url: str) -> httpx.Client:
    """An HTTP client for the backend at `url` (a function, so tests can hand in the app's test client)."""
    return httpx.Client(base_url=url, timeout=SERVICE_TIMEOUT_S)


def _from_service(url: str | None, path: str) -> tuple[Any, str | None]:
    """GET `path` of the backend's admin API at `url` (else LSAL_PUBLIC_URL) with LSAL_SECRET: (the JSON
    answer, None), or (None, why not)."""
    s = get_settings()
    url = (url or s.public_url or "").rstrip("/")
    if not url:
        return None, "no service URL: pass --url or set LSAL_URL (or LSAL_PUBLIC_URL) to the backend's URL"
    if s.secret is None:
        return None, f"LSAL_SECRET is not set, so the admin API at {url} cannot be asked"
    try:
        with _service_client(url) as client:
            response = client.get(path, headers={SECRET_HEADER: s.secret.get_secret_value()})
    except httpx.HTTPError as exc:
        return None, f"the service at {url} did not answer ({type(exc).__name__}: {exc})"
    if response.status_code != 200:
        return None, f"the service at {url} answered HTTP {response.status_code} to {path}"
    try:
        return response.json(), None
    except ValueError:
        return None, f"the service at {url} answered {path} with something other than JSON"


def _settings_in_force(project: int, store: ProjectStore, url: str | None) -> tuple[ProjectSettings | None, str]:
    """The project's settings in force and where they come from: the stored ones; else the service's
    (its LSAL_DEFAULTS, as its admin API resolves them); else (None, why they cannot be read from here).
    Never this CLI process's own defaults: the workers do not use them."""
    if store.stored_settings() is not None:
        return store.settings(get_settings().defaults), "stored"
    answer, why = _from_service(url, f"/admin/projects/{project}/settings")
    if answer is not None:
        try:
            return ProjectSettings.model_validate(answer), "the service's defaults (LSAL_DEFAULTS)"
        except ValueError as exc:
            why = f"the service's settings do not parse here ({exc})"
    return None, why or "unknown"


def _unknown_settings_note(project: int, why: str) -> str:
    return (f"project {project} has no stored settings, so the service's own defaults (its LSAL_DEFAULTS) are "
            f"in force; this CLI cannot read them: {why}. (`lsal settings --project {project} --set ...` "
            "stores settings)")


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
                 project: Project, now: Annotated[bool, typer.Option(help="rescore at once")] = False,
                 url: ServiceUrl = None) -> None:
    """Switch the project's strategy; extra --options are its parameters (or the model's, e.g. --mc-samples)."""
    try:
        params = parse_extra(ctx.args)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    redis, store = _store(project)
    base, note = _change_base(project, store, url)
    try:
        new = admin.set_strategy(store, base, name, params, get_settings().weights_dir)
    except InvalidSettingsError as exc:
        raise _fail(str(exc)) from None
    admin.record_audit(store, _actor(), "strategy", {"name": name, "params": params, "now": now})
    if note:
        console.print(note, highlight=False, markup=False)
    console.print(f"project {project}: strategy {new.strategy.name} {json.dumps(new.strategy.params)}, "
                  f"model {new.model.name} {json.dumps(new.model.params)}")
    if now:
        job = admin.trigger(redis, get_settings().queue, project, "rescore", "strategy changed",
                            get_settings().job_timeout_s)
        console.print(f"rescore job {job.job_id} ({'queued' if job.created else 'already pending'})")
    else:
        console.print("the next rescore uses it (add --now to rescore at once)")


def _change_base(project: int, store: ProjectStore, url: str | None) -> tuple[ProjectSettings, str | None]:
    """What a change merges into: the settings in force; for a project with none stored whose service
    cannot be asked, this CLI's defaults, with a note saying so (the change stores them whole)."""
    in_force, why = _settings_in_force(project, store, url)
    if in_force is not None:
        return in_force, None
    return get_settings().defaults, (
        f"note: project {project} had no stored settings and the service's defaults could not be read ({why}); "
        "the change was merged into this CLI's defaults (its LSAL_DEFAULTS), which are now stored and in force")


@strategy_app.command("get")
def strategy_get(project: Project, url: ServiceUrl = None) -> None:
    """Print the project's strategy and parameters (those in force: stored, else the service's defaults)."""
    _, store = _store(project)
    s, why = _settings_in_force(project, store, url)
    if s is None:
        console.print(_unknown_settings_note(project, why), highlight=False, markup=False)
        return
    console.print_json(json.dumps({"strategy": s.strategy.model_dump(), "batch_size": s.batch_size}))


def settings_cmd(project: Project,
                 set_: Annotated[list[str] | None, typer.Option("--set", help="key=value (JSON value), repeatable")]
                 = None, url: ServiceUrl = None) -> None:
    """Show the project's settings in force (stored, else the service's defaults), or change some with --set."""
    _, store = _store(project)
    if not set_:
        shown, why = _settings_in_force(project, store, url)
        if shown is None:
            console.print(_unknown_settings_note(project, why), highlight=False, markup=False)
        else:
            console.print_json(shown.model_dump_json())
        return
    defaults, note = _change_base(project, store, url)
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
    if note:
        console.print(note, highlight=False, markup=False)


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
    """List the project's model versions with their metrics: held-out accuracy with the number of held-out
    items and a Wilson 95% interval, from admin.MIN_HOLDOUT held-out items on."""
    _, store = _store(project)
    records = store.versions()
    if as_json:
        console.print_json(json.dumps([{**r, "holdout": admin.holdout_view(r.get("metrics"))} for r in records]))
        return
    _print_versions(project, records, store.current_version())


def _print_versions(project: int, records: list[dict[str, Any]], current: str | None) -> None:
    if not records:
        console.print(f"project {project} has no model versions yet")
        return
    table = Table("version", "created", "labels", "held-out items", "held-out acc (95% interval)", "macro-F1",
                  "serving", caption=f"held-out figures are shown from {admin.MIN_HOLDOUT} held-out items on; "
                                     "the interval is Wilson's 95%")
    for r in records:
        m = r.get("metrics") or {}
        view = r.get("holdout") or admin.holdout_view(m)
        table.add_row(r["version"], _when(r.get("created_at")), str(r.get("labeled")),
                      "?" if view["n"] is None else str(view["n"]), _holdout_cell(view, m),
                      _num(m.get("holdout_macro_f1")) if view["shown"] else "-",
                      "*" if r["version"] == current else "" if r.get("promoted", True) else "held back")
    console.print(table)
    for r in records:  # the gate's verdicts on versions it held back: why, with both figures
        if r.get("promoted") is False:
            console.print(f"{r['version']} {(r.get('promotion') or {}).get('reason')}; `lsal rollback --project "
                          f"{project} {r['version']}` serves it anyway", highlight=False, markup=False)


def _holdout_cell(view: dict[str, Any], metrics: dict[str, Any]) -> str:
    """'0.750 (0.588-0.864)'; '- (n < 20)' below the minimum; 'n unknown' for records that did not count."""
    if view["shown"]:
        low_high = view.get("interval95")
        return f"{view['accuracy']:.3f} " + (f"({low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else
                                             "(n unknown)")
    if view["n"] is not None and metrics.get("holdout_accuracy") is not None:
        return f"- (n < {view['min_n']})"
    return "-"


def review_cmd(project: Project, as_json: AsJson = False,
               limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="rows to show")] = 50,
               all_tasks: Annotated[bool, typer.Option("--all", help="every reviewed task, not only the flagged")]
               = False) -> None:
    """The labels the model doubts (label-noise review after each retrain): given label, model's label,
    its confidence, quality score; most doubtful first. Nothing an annotator wrote is changed."""
    _, store = _store(project)
    view = admin.review_view(store, limit, everything=all_tasks)
    if as_json:
        console.print_json(json.dumps(view, default=str))
        return
    record = view["review"]
    if record is None:
        console.print(f"project {project}: {view['reason']}")
        return
    title = (f"project {project}: {record['flagged']} of {record['reviewed']} labels flagged "
             f"({record['folds']}-fold out-of-fold {record['model']}, model {record.get('version') or '-'}, "
             f"{_when(record.get('created_at'))})")
    table = Table("#", "task", "given label", "model's label", "confidence", "quality", "flagged", title=title,
                  caption=f"{record['method']}; quality 0 = surely wrong, 1 = surely right; showing "
                          f"{len(view['items'])} of {view['total']}")
    for item in view["items"]:
        table.add_row(str(item["rank"]), str(item["task"]), item["given"], item["predicted"],
                      _num(item["confidence"]), _num(item["quality"]), "yes" if item["flagged"] else "")
    console.print(table)


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


def status_cmd(project: Project, as_json: AsJson = False, url: ServiceUrl = None) -> None:
    """Strategy, model versions, labeled/unlabeled counts, queue state and the last round's timings.

    The settings shown are those in force: the stored ones, else the service's own defaults, read from its
    admin API (--url / LSAL_URL / LSAL_PUBLIC_URL); never this CLI's LSAL_DEFAULTS."""
    redis, store = _store(project)
    s = get_settings()
    st = admin.status(redis, store, None, s.queue)
    why = None
    if st["settings"] is None:  # the service resolves them: its status is the same code with its defaults
        answer, why = _from_service(url, f"/admin/projects/{project}/status")
        if isinstance(answer, dict) and answer.get("settings") is not None:
            st, why = answer, None
    if as_json:
        console.print_json(json.dumps(st if why is None else {**st, "settings_unknown": why}, default=str))
        return
    cfg = st["settings"]
    if cfg is None:
        console.print(f"[bold]project {project}[/bold]  settings unknown here", highlight=False)
        console.print(_unknown_settings_note(project, why or "unknown"), highlight=False, markup=False)
        pub = st["published"] or {}
        if pub.get("strategy"):
            console.print(f"the live order was made by strategy {pub['strategy'].get('name')} "
                          f"{json.dumps(pub['strategy'].get('params', {}))} (publication "
                          f"{pub.get('model_version')})", highlight=False, markup=False)
    else:
        source = st.get("settings_source") or ("stored" if st.get("settings_stored") else "service defaults")
        console.print(f"[bold]project {project}[/bold]  strategy [cyan]{cfg['strategy']['name']}[/cyan] "
                      f"{json.dumps(cfg['strategy']['params'])}  model {cfg['model']['name']}  batch "
                      f"{cfg['batch_size']}  retrain every {cfg['retrain_every']}  min labels {cfg['min_labels']}"
                      f"  ({source})")
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
    review = st.get("review")
    if review:
        last = review.get("last_job") or {}
        console.print(f"label review: {review.get('flagged', '-')} of {review.get('reviewed', '-')} labels flagged "
                      f"(model {review.get('version') or '-'}, {_when(review.get('created_at'))}; `lsal review "
                      f"--project {project}`)" + (f"; last review job {last.get('status')}"
                                                 + (f": {last['error']}" if last.get("error") else "")
                                                 if last else ""), highlight=False, markup=False)
    confident = st.get("confident")
    if confident:
        console.print(_confident_line(confident), highlight=False, markup=False)
    stopping = st.get("stopping")
    if stopping:
        if stopping.get("fired"):
            console.print(f"[yellow]stopping criterion fired[/yellow] ({stopping['criterion']}) after "
                          f"{stopping.get('after')}: {stopping['reason']}", highlight=False)
        else:
            console.print(f"stopping: no criterion fired after {stopping.get('after')} "
                          f"({stopping.get('labels')} labels; rule {json.dumps(stopping.get('rule'))})")
    if st["versions"]:
        _print_versions(project, st["versions"], st["current_version"])
    if st["skipped"]:
        console.print(f"{len(st['skipped'])} task(s) skipped, e.g. {st['skipped'][:3]}")
    for record in st.get("audit") or []:
        console.print(f"changed {_when(record.get('at'))}: {record.get('action')} by {record.get('actor')} "
                      f"{json.dumps(record.get('detail'), default=str)[:200]}", highlight=False, markup=False)


def _confident_line(c: dict[str, Any]) -> str:
    """`lsal status`'s line on confident pre-labels (confident_view)."""
    head = f"confident pre-labels (target precision {c['target']} at {c['level']:.0%} confidence, model {c['version']}): "
    if c.get("threshold") is None:
        return head + f"no threshold set: {c.get('reason')}"
    line = (head + f"threshold {c['threshold']:.4f}; held-out precision {c['precision']:.3f} ({c['above']} of "
            f"{c['held_out']} held-out labels above it), at least {c['lower_bound']:.3f}")
    if c.get("pool") is not None:
        line += (f"; {c['pool_above']} of {c['pool']} unlabeled tasks ({c['pool_share']:.1%}) above it: "
                 f"{c['labels_saved']} labels saved")
    exported = c.get("exported")
    if exported:
        line += (f"; {exported['saved']} of {exported['of']} saved as labels without a human (confident_export)"
                 + (f", stopped by: {exported['error']}" if exported.get("error") else ""))
    return line


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
    app.command("review")(review_cmd)
    app.command("status")(status_cmd)
    app.command()(doctor)
    app.command("reconcile")(reconcile_cmd)
    app.command()(serve)
    app.command()(worker)
