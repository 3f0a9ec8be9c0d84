"""Benchmark: our Label Studio REST client (`core/ls_client.py`) against label-studio-sdk 2.x (docs/architecture.md,
"The Label Studio REST client").

Starts its own Label Studio on 127.0.0.1 (a fresh data dir in a temporary folder, ~40-60 s of migrations; the
admin user and its token as the end-to-end tests get them, `stack.annotator.LabelStudio`) and stops it by PID at
the end (also on Ctrl-C, SIGTERM or an error). Setup: a project of --tasks tasks (`data.image` URLs that nothing
serves), --annotated of them annotated through the REST API, and a second project with one uploaded file (for
the download).

Every measurement runs in a fresh interpreter (so import cost and peak RSS are each client's own), the two
clients interleaved (ours, sdk, ours, sdk, ...) --repeats times:

* import: `import core.ls_client` + a client, vs `from label_studio_sdk.client import LabelStudio` + a client (and
  `import httpx` alone, the floor of an httpx-only client), in-process wall time and peak RSS after the import;
* the small endpoints (whoami, project get / update, model versions, ML backends, webhooks list, the webhook
  register-or-refresh, one file download), --calls calls each, the median call;
* every task of the project with its annotations (page_size 500, fields=all), wall time, peak RSS and the
  RSS growth over the post-import peak, and a digest of (task id, image, annotation ids and results);
* --tasks predictions (one `choices` result per task, a score, a model version) imported 1,000 per request,
  then deleted by model version.

Then the failure behaviour of each client with its default settings (the ones `LabelStudioClient.from_settings`
and `LabelStudio(...)` use), against a local server that fails on purpose and against Label Studio: connection
refused, HTTP 503 (GET and POST), 409, 503 with Retry-After, a read timeout, a 404 on the first page of a
listing, a download over a byte cap and one past a deadline.

    .venv/bin/python bench/ls_client.py                           # 5,000 tasks, 5 repeats (~10 min on 2 cores)
    .venv/bin/python bench/ls_client.py --tasks 500 --repeats 3   # a smoke run
"""

from __future__ import annotations

# Only the standard library at the top: a child (`--child`) times its client's import from a bare interpreter.
import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CHUNK = 1000  # predictions per request (our client's default)
PAGE_SIZE = 500  # tasks per page (our client's default; the SDK is given the same)
MAX_BYTES = 10 * 2**20
# core.ls_client.WEBHOOK_ACTIONS (checked equal in the parent; the SDK child must not import our client)
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_CREATED",
                   "PROJECT_UPDATED")
CLIENTS = ("ours", "sdk")
IMPORT_REFERENCES = {  # import-only children, for the import row
    "floor": "httpx + core.config alone (ours without its SDK import)",
    "sdk-base": "label_studio_sdk.base_client.LabelStudioBase",
    "label_config": "core.label_config (backend and worker import it anyway)",
}


# --------------------------------------------------------------------------------------------------------
# Children: one measurement in a fresh interpreter, one JSON line on stdout
# --------------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, which starts over at exec (ru_maxrss would carry the parent's
    peak over from the fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dump(obj: Any) -> Any:
    """A pydantic model of the SDK as plain JSON values (dicts stay dicts)."""
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


def _make_client(kind: str, url: str, token: str) -> Any:
    if kind == "ours":
        from core.ls_client import LabelStudioClient

        return LabelStudioClient(url, token)
    if kind == "sdk":
        from label_studio_sdk.client import LabelStudio

        return LabelStudio(base_url=url, api_key=token)
    if kind == "sdk-base":  # the generated client without the extensions (no tasks pager 404 fix, no pandas)
        from label_studio_sdk.base_client import LabelStudioBase

        return LabelStudioBase(base_url=url, api_key=token)
    if kind == "label_config":  # what the backend and the worker import anyway (core/label_config.py)
        import core.label_config

        return core.label_config
    import httpx  # "floor": what our client would import without its label-studio-sdk import

    import core.config  # noqa: F401

    return httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"})


def _count_requests(kind: str, client: Any) -> list[int]:
    """A counter of the HTTP requests the client sends (an httpx event hook on its connection pool)."""
    http = client._http if kind == "ours" else client._client_wrapper.httpx_client.httpx_client
    counter = [0]
    http.event_hooks = {"request": [lambda request: counter.__setitem__(0, counter[0] + 1)], "response": []}
    return counter


def _sdk_raw(client: Any, method: str, path: str, **kw: Any) -> Any:
    """An endpoint the SDK has no typed method for, through the SDK's own HTTP client (its retries and auth)."""
    response = client._client_wrapper.httpx_client.request(path, method=method, **kw)
    response.raise_for_status()
    return response.json() if response.content else None


def _timed(fn: Callable[[], Any], calls: int) -> tuple[float, Any]:
    """The median seconds of `calls` calls of `fn`, and its last answer."""
    times, out = [], None
    for _ in range(calls):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def child_import(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    _make_client(spec["client"], spec["url"], spec["token"])
    return {"import_s": time.perf_counter() - t0, "import_rss_mb": _rss_mb(), "modules": len(sys.modules)}


def child_small(spec: dict[str, Any]) -> dict[str, Any]:
    kind, p, calls = spec["client"], spec["project"], spec["calls"]
    out = child_import(spec)
    c = _make_client(kind, spec["url"], spec["token"])
    hook_url = f"http://127.0.0.1:9/hook-{kind}"
    hook_headers = {"X-Bench": kind}
    sampling = "Uncertainty sampling"  # what the worker sets (core.ls_client.UNCERTAINTY_SAMPLING)
    if kind == "ours":
        ops: dict[str, Callable[[], Any]] = {
            "whoami": lambda: c.whoami()["email"],
            "project get": lambda: (lambda r: [r["id"], r["title"], r["label_config"]])(c.project(p)),
            "update project": lambda: c.update_project(p, sampling=sampling)["sampling"],
            "model versions": lambda: c.model_versions(p),
            "ml backends list": lambda: len(c.ml_backends(p)),
            "webhook create/update": lambda: (lambda h: [h["url"].rsplit("-", 1)[0], sorted(h["actions"]),
                                                         h["send_payload"]])(
                c.ensure_webhook(p, hook_url, hook_headers)),
            "webhooks list": lambda: sorted({h["project"] for h in c.webhooks(p)}),
            "file download": lambda: _digest(c.file_bytes(spec["file_path"], MAX_BYTES, 10.0,
                                                          time.monotonic() + 30)),
        }
    else:
        def ensure_webhook() -> Any:
            body = {"url": hook_url, "send_payload": True, "send_for_all_actions": False,
                    "actions": list(WEBHOOK_ACTIONS), "headers": hook_headers, "is_active": True}
            for hook in c.webhooks.list(project=str(p)):
                if hook.url == hook_url and hook.project == p:
                    return c.webhooks.update(id=hook.id, **body)
            return c.webhooks.create(project=p, **body)

        ops = {
            "whoami": lambda: c.users.whoami().email,
            "project get": lambda: (lambda r: [r.id, r.title, r.label_config])(c.projects.get(id=p)),
            "update project": lambda: c.projects.update(id=p, sampling=sampling).sampling,
            "model versions": lambda: {str(k): int(v) for k, v in
                                       _sdk_raw(c, "GET", f"api/projects/{p}/model-versions/").items()},
            "ml backends list": lambda: len(c.ml.list(project=p)),
            "webhook create/update": lambda: (lambda h: [h.url.rsplit("-", 1)[0], sorted(h.actions),
                                                         h.send_payload])(ensure_webhook()),
            "webhooks list": lambda: sorted({h.project for h in c.webhooks.list(project=str(p))}),
            "file download": lambda: _digest(c.files.with_raw_response.download(
                spec["file_path"].removeprefix("/data/upload/")).response.content),
        }
    out["ops"] = {}
    for name, fn in ops.items():
        seconds, answer = _timed(fn, calls)
        out["ops"][name] = {"s": seconds, "digest": _digest(answer)}
    return out


def child_listing(spec: dict[str, Any]) -> dict[str, Any]:
    kind, p = spec["client"], spec["project"]
    c = _make_client(kind, spec["url"], spec["token"])
    requests = _count_requests(kind, c)
    before = _rss_mb()
    t0 = time.perf_counter()
    if kind == "ours":
        tasks = list(c.tasks(p, page_size=PAGE_SIZE))
    else:
        tasks = list(c.tasks.list(project=p, fields="all", page_size=PAGE_SIZE))
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    rows = []
    for t in tasks:
        t = _dump(t)
        anns = sorted(t.get("annotations") or [], key=lambda a: a["id"])
        rows.append([t["id"], t["data"].get("image"), [[a["id"], a["result"]] for a in anns]])
    rows.sort()
    return {"s": seconds, "rss_mb": peak, "delta_mb": peak - before, "requests": requests[0],
            "tasks": len(rows), "annotated": sum(1 for r in rows if r[2]), "digest": _digest(rows)}


def child_predictions(spec: dict[str, Any]) -> dict[str, Any]:
    kind, p, version = spec["client"], spec["project"], spec["model_version"]
    c = _make_client(kind, spec["url"], spec["token"])
    requests = _count_requests(kind, c)
    ids = spec["task_ids"]
    preds = [{"task": t, "model_version": version, "score": round((t % 97) / 97, 4),
              "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                          "value": {"choices": [str(t % 10)]}}]} for t in ids]
    before = _rss_mb()
    t0 = time.perf_counter()
    if kind == "ours":
        created = c.import_predictions(p, preds, chunk=CHUNK)
    else:
        created = 0
        for start in range(0, len(preds), CHUNK):
            part = preds[start:start + CHUNK]
            answer = c.projects.import_predictions(id=p, request=part)
            if answer.created != len(part):
                raise RuntimeError(f"the SDK's import created {answer.created} of {len(part)}")
            created += answer.created
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    n_requests = requests[0]
    if kind == "ours":
        counted = c.model_versions(p).get(version, 0)
        t1 = time.perf_counter()
        deleted = c.delete_model_version(p, version)
    else:
        counted = int(_sdk_raw(c, "GET", f"api/projects/{p}/model-versions/").get(version, 0))
        t1 = time.perf_counter()
        deleted = int(_sdk_raw(c, "DELETE", f"api/projects/{p}/model-versions/",
                               json={"model_version": version})["deleted_predictions"])
    delete_s = time.perf_counter() - t1
    return {"s": seconds, "rss_mb": peak, "delta_mb": peak - before, "requests": n_requests, "created": created,
            "counted": counted, "deleted": deleted, "delete_s": delete_s}


CHILDREN = {"import": child_import, "small": child_small, "listing": child_listing, "predictions": child_predictions}


def child_main(raw: str) -> int:
    sys.path.insert(0, str(REPO))
    spec = json.loads(raw)
    print(json.dumps(CHILDREN[spec["kind"]](spec)), flush=True)
    return 0


def run_child(spec: dict[str, Any], timeout: float = 1200.0) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its JSON answer (BenchError when it failed)."""
    from stack.runs import BenchError

    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        raise BenchError(f"{spec['kind']} / {spec['client']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------
# A server that fails on purpose (the failure behaviour)
# --------------------------------------------------------------------------------------------------------


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes = b'{"detail": "fault"}', headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        srv: FaultServer = self.server  # type: ignore[assignment]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with srv.lock:
            srv.hits += 1
        mode = srv.mode
        try:
            if mode == "503":
                self._send(503)
            elif mode == "409":
                self._send(409)
            elif mode == "retry-after":
                self._send(503, headers={"Retry-After": "2"})
            elif mode == "slow":
                time.sleep(1.5)
                self._send(200, b"{}")
            elif mode == "trickle":  # 20 bytes, one every 0.25 s: no single read times out, the whole takes 5 s
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", "20")
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.25)
            else:
                self._send(200, b"{}")
        except OSError:  # the client gave up
            pass

    do_GET = do_POST = do_PATCH = do_DELETE = _answer


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FaultHandler)
        self.lock = threading.Lock()
        self.hits = 0
        self.mode = "ok"
        self.thread = threading.Thread(target=self.serve_forever, name="fault-server", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _outcome(fn: Callable[[], Any]) -> tuple[float, str]:
    t0 = time.monotonic()
    try:
        value = fn()
        text = f"returned {value}"
    except Exception as exc:  # noqa: BLE001 (what each client raises is the measurement)
        if hasattr(exc, "status_code") and hasattr(exc, "body"):  # the SDK's ApiError (its str starts with headers)
            detail = f"status_code={exc.status_code} body={str(exc.body)[:60]}"
        else:
            detail = str(exc).replace("\n", " ")
        text = f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}: {detail[:90]}"
    return time.monotonic() - t0, text


def behaviour(ls_url: str, token: str, missing_project: int, big_file: str, stops: Any) -> list[list[Any]]:
    """Each client, default settings, against each fault: [case, client, requests, seconds, outcome]."""
    from label_studio_sdk.client import LabelStudio

    from core.ls_client import LabelStudioClient
    from stack.processes import free_port

    server = FaultServer()
    stops.add("the fault server", server.stop)
    refused = f"http://127.0.0.1:{free_port()}"
    pred = [{"task": 1, "result": [], "model_version": "x"}]
    rows: list[list[Any]] = []

    def case(name: str, mode: str, ours: Callable[[], Any], sdk: Callable[[], Any]) -> None:
        for client, fn in (("ours", ours), ("sdk", sdk)):
            server.mode, server.hits = mode, 0
            seconds, text = _outcome(fn)
            hits = "-" if mode == "refused" else server.hits
            rows.append([name, client, hits, f"{seconds:.2f}", text])

    fault, ours_f, sdk_f = server.url, LabelStudioClient(server.url, "x"), LabelStudio(base_url=server.url, api_key="x")
    case("connection refused (GET whoami)", "refused", lambda: LabelStudioClient(refused, "x").whoami(),
         lambda: LabelStudio(base_url=refused, api_key="x").users.whoami())
    case("HTTP 503 (GET whoami)", "503", ours_f.whoami, sdk_f.users.whoami)
    case("HTTP 503 (POST import predictions)", "503", lambda: ours_f.import_predictions(1, pred),
         lambda: sdk_f.projects.import_predictions(id=1, request=pred))
    case("HTTP 409 (POST import predictions)", "409", lambda: ours_f.import_predictions(1, pred),
         lambda: sdk_f.projects.import_predictions(id=1, request=pred))
    case("HTTP 503 + Retry-After: 2 (GET)", "retry-after", ours_f.whoami, sdk_f.users.whoami)
    case("read timeout (0.5 s client, 1.5 s server)", "slow",
         lambda: LabelStudioClient(fault, "x", timeout=0.5).whoami(),
         lambda: LabelStudio(base_url=fault, api_key="x", timeout=0.5).users.whoami())
    case("download, 1 s deadline, server trickles 5 s", "trickle",
         lambda: len(ours_f.file_bytes("/data/upload/1/x.png", MAX_BYTES, 1.0, time.monotonic() + 1.0)),
         lambda: len(LabelStudio(base_url=fault, api_key="x", timeout=1.0).files.with_raw_response.download(
             "1/x.png").response.content))
    ours_ls, sdk_ls = LabelStudioClient(ls_url, token), LabelStudio(base_url=ls_url, api_key=token)
    server.mode = "ok"
    for name, ours, sdk in (
            (f"list tasks of a missing project ({missing_project})",
             lambda: f"{len(list(ours_ls.tasks(missing_project)))} tasks",
             lambda: f"{len(list(sdk_ls.tasks.list(project=missing_project, fields='all')))} tasks"),
            (f"download {big_file.rsplit('/', 1)[-1]} (256 KiB) with a 64 KiB cap",
             lambda: f"{len(ours_ls.file_bytes(big_file, 64 * 1024, 10.0))} bytes",
             lambda: f"{len(sdk_ls.files.with_raw_response.download(big_file.removeprefix('/data/upload/')).response.content)} bytes (no cap option)")):
        for client, fn in (("ours", ours), ("sdk", sdk)):
            seconds, text = _outcome(fn)
            rows.append([name, client, "-", f"{seconds:.2f}", text])
    for c in (ours_f, ours_ls):
        c.close()
    return rows


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def _ratio(ours: list[float], sdk: list[float]) -> str:
    pairs = [s / o for o, s in zip(ours, sdk) if o > 0]
    return _fmt(pairs, 2) if pairs else "-"


def setup_projects(ls: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from stack.annotator import DIGITS_LABEL_CONFIG, DIGITS_INTERFACE
    from stack.runs import BenchError, say

    an = ls.annotator(timeout=600)
    project = an.create_project("bench ls_client", DIGITS_LABEL_CONFIG)
    urls = [f"http://127.0.0.1:9/images/{i:05d}.png" for i in range(args.tasks)]
    t0 = time.monotonic()
    for start in range(0, len(urls), 5000):
        an.import_urls(project, urls[start:start + 5000])
    tasks = an.tasks(project)
    if len(tasks) != args.tasks:
        raise BenchError(f"imported {args.tasks} tasks, Label Studio lists {len(tasks)}")
    say(f"project {project}: {len(tasks)} tasks imported in {time.monotonic() - t0:.1f} s")
    ids = sorted(t["id"] for t in tasks)
    n_ann = min(args.annotated, len(ids))
    step = max(1, len(ids) // max(1, n_ann))
    chosen = ids[::step][:n_ann]
    t0 = time.monotonic()
    for i, task in enumerate(chosen):
        an.annotate(task, str(task % 10), DIGITS_INTERFACE)
        if (i + 1) % 50 == 0:
            say(f"  annotated {i + 1}/{n_ann}")
    say(f"{n_ann} tasks annotated in {time.monotonic() - t0:.1f} s")
    files_project = an.create_project("bench ls_client files", DIGITS_LABEL_CONFIG)
    blob = workdir / "blob.png"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256 * 1024 - 8))
    an.upload(files_project, [blob])
    file_path = an.tasks(files_project)[0]["data"]["image"]
    say(f"uploaded file {file_path}")
    return {"project": project, "ids": ids, "annotated": n_ann, "file_path": file_path,
            "missing_project": files_project + 1000}


def run(args: argparse.Namespace, stops: Any, workdir: Path) -> int:
    from core.ls_client import WEBHOOK_ACTIONS as OURS_ACTIONS
    from stack.annotator import LabelStudio
    from stack.processes import DEFAULT_LS_BIN
    from stack.runs import BenchError, say, table

    assert tuple(OURS_ACTIONS) == WEBHOOK_ACTIONS, "WEBHOOK_ACTIONS changed in core/ls_client.py"
    say(f"workdir {workdir}")
    ls = LabelStudio(workdir / "label-studio", ls_bin=DEFAULT_LS_BIN, log_path=workdir / "logs" / "label-studio.log",
                     log_level="WARNING")
    stops.add("Label Studio", ls.stop)
    fresh = not (ls.data_dir / "label_studio.sqlite3").exists()
    say("starting Label Studio" + (" (fresh data dir: migrations take ~40-60 s)" if fresh else ""))
    ls.start(timeout=600 if fresh else 180)
    if not ls.token_works():
        raise BenchError(f"Label Studio refuses the local admin token ({ls.data_dir}); use a fresh --workdir")
    say(f"Label Studio pid {ls.pid} at {ls.url}")
    setup = setup_projects(ls, args, workdir)
    base = {"url": ls.url, "token": ls.token, "project": setup["project"]}

    res: dict[str, dict[str, list[dict[str, Any]]]] = {k: {c: [] for c in (*CLIENTS, *IMPORT_REFERENCES)}
                                                       for k in ("small", "listing", "predictions", "import")}
    for r in range(args.repeats):
        for ref in IMPORT_REFERENCES:
            res["import"][ref].append(run_child({**base, "kind": "import", "client": ref}))
        for kind in ("small", "listing", "predictions"):
            for client in CLIENTS:
                spec = {**base, "kind": kind, "client": client, "calls": args.calls, "file_path": setup["file_path"]}
                if kind == "predictions":
                    spec.update(task_ids=setup["ids"], model_version=f"bench-{client}-{r}")
                out = run_child(spec)
                res[kind][client].append(out)
                if kind == "small":
                    say(f"repeat {r + 1}/{args.repeats} {kind:<11} {client:<4}: import {out['import_s']:.3f} s, "
                        f"{out['import_rss_mb']:.0f} MB, {out['modules']} modules")
                elif kind == "listing":
                    say(f"repeat {r + 1}/{args.repeats} {kind:<11} {client:<4}: {out['s']:.2f} s, {out['tasks']} "
                        f"tasks ({out['annotated']} annotated), {out['requests']} requests, peak {out['rss_mb']:.0f} MB")
                else:
                    say(f"repeat {r + 1}/{args.repeats} {kind:<11} {client:<4}: {out['s']:.2f} s for "
                        f"{out['created']} ({out['requests']} requests), delete {out['delete_s']:.2f} s")

    say("failure behaviour (default settings of each client)")
    faults = behaviour(ls.url, ls.token, setup["missing_project"], setup["file_path"], stops)

    # -- the table ----------------------------------------------------------------------------------------
    o, s = res["small"]["ours"], res["small"]["sdk"]
    rows = []
    imp_o, imp_s = [x["import_s"] for x in o], [x["import_s"] for x in s]
    rows.append(["import + construct (fresh interpreter)", _fmt(imp_o), _fmt(imp_s), _ratio(imp_o, imp_s),
                 f"{statistics.median(x['import_rss_mb'] for x in o):.0f}",
                 f"{statistics.median(x['import_rss_mb'] for x in s):.0f}", "-"])
    for ref, label in IMPORT_REFERENCES.items():
        hx = res["import"][ref]
        rows.append([f"  reference: import {label}", _fmt([x["import_s"] for x in hx]), "", "",
                     f"{statistics.median(x['import_rss_mb'] for x in hx):.0f}", "", "-"])
    for name in o[0]["ops"]:
        to, ts = [x["ops"][name]["s"] for x in o], [x["ops"][name]["s"] for x in s]
        same = {x["ops"][name]["digest"] for x in o} == {x["ops"][name]["digest"] for x in s}
        label = name + (" (sdk: raw http)" if name == "model versions" else "")
        rows.append([f"{label}, per call", _fmt(to, 4), _fmt(ts, 4), _ratio(to, ts), "-", "-",
                     "yes" if same else "NO"])
    lo, lsd = res["listing"]["ours"], res["listing"]["sdk"]
    digests = {x["digest"] for x in lo + lsd}
    ok = (len(digests) == 1 and all(x["tasks"] == args.tasks and x["annotated"] == setup["annotated"]
                                    for x in lo + lsd))
    rows.append([f"list {args.tasks} tasks + annotations (page {PAGE_SIZE}; requests {lo[0]['requests']} / "
                 f"{lsd[0]['requests']})", _fmt([x["s"] for x in lo]), _fmt([x["s"] for x in lsd]),
                 _ratio([x["s"] for x in lo], [x["s"] for x in lsd]),
                 f"{statistics.median(x['rss_mb'] for x in lo):.0f} (+{statistics.median(x['delta_mb'] for x in lo):.0f})",
                 f"{statistics.median(x['rss_mb'] for x in lsd):.0f} (+{statistics.median(x['delta_mb'] for x in lsd):.0f})",
                 "yes" if ok else "NO"])
    po, ps = res["predictions"]["ours"], res["predictions"]["sdk"]
    ok = all(x["created"] == x["counted"] == x["deleted"] == args.tasks for x in po + ps)
    rows.append([f"import {args.tasks} predictions ({CHUNK}/request)", _fmt([x["s"] for x in po]),
                 _fmt([x["s"] for x in ps]), _ratio([x["s"] for x in po], [x["s"] for x in ps]),
                 f"{statistics.median(x['rss_mb'] for x in po):.0f} (+{statistics.median(x['delta_mb'] for x in po):.0f})",
                 f"{statistics.median(x['rss_mb'] for x in ps):.0f} (+{statistics.median(x['delta_mb'] for x in ps):.0f})",
                 "yes" if ok else "NO"])
    rows.append([f"delete model version ({args.tasks} predictions; sdk: raw http)",
                 _fmt([x["delete_s"] for x in po]), _fmt([x["delete_s"] for x in ps]),
                 _ratio([x["delete_s"] for x in po], [x["delete_s"] for x in ps]), "-", "-", "yes" if ok else "NO"])

    print()
    print(f"Label Studio {ls.url}, {args.tasks} tasks ({setup['annotated']} annotated), {args.repeats} repeats, "
          f"ours and sdk interleaved, each in a fresh interpreter; median [min-max]; ratio = median of the "
          f"per-repeat sdk/ours ratios; peak = peak RSS (VmHWM) MB of the child (+ growth over its post-import peak); "
          f"small endpoints: median of {args.calls} calls per repeat")
    print()
    print(table(["endpoint", "ours median (s)", "sdk median (s)", "ratio sdk/ours", "peak MB ours", "peak MB sdk",
                 "same results"], rows))
    print()
    print("Failure behaviour, default settings (ours: LabelStudioClient(url, key): 3 retries, 0.5 s backoff, 30 s "
          "timeout; sdk: LabelStudio(...): 2 retries, 1 s backoff, 60 s timeout):")
    print()
    print(table(["case", "client", "requests", "seconds", "outcome"], faults))
    print()
    return 0 if all(r[-1] != "NO" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    sys.path.insert(0, str(REPO))
    from stack.runs import run_main

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks in the project (and predictions imported)")
    parser.add_argument("--annotated", type=int, default=200, help="tasks annotated through the REST API")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per client (interleaved)")
    parser.add_argument("--calls", type=int, default=10, help="calls per small endpoint per repeat")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep Label Studio's data and logs here (default: a temporary dir, removed at the end)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1 or args.calls < 1 or args.annotated < 0:
        parser.error("--tasks, --repeats and --calls must be >= 1, --annotated >= 0")
    return run_main(run, args, (args.workdir or Path(tempfile.mkdtemp(prefix="lsal-ls-client-"))).resolve())


if __name__ == "__main__":
    sys.exit(main())
