"""The HTTP face: Label Studio's ML-backend protocol (/health, /setup, /predict, /webhook), /metrics, /admin."""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from redis import Redis
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry
from starlette.concurrency import run_in_threadpool

from backend.admin import rollback, set_strategy, status, trigger, update_settings
from backend.auth import OPEN_PATHS, basic_auth_ok, require_secret, webhook_outdated
from backend.config import Settings, get_settings
from backend.credentials import remember_setup_credentials
from backend.curves import learning_curve_png
from backend.ls_client import LabelStudioClient, LabelStudioError
from backend.metrics import Metrics
from backend.model_api import LabelStudioModel, Services, load_model_class
from backend.model_cache import ModelCache
from backend.predictor import Predictor
from backend.project_settings import InvalidSettingsError, strategy_param_help
from backend.queueing import enqueue, queue_for
from backend.reconciler import Reconciler, reconcile_project
from backend.store import ProjectStore, known_projects
from plugins.strategies import STRATEGIES

log = logging.getLogger("lsal.backend")
# every action Label Studio can send; the ones we do not act on are acknowledged and ignored
LS_ACTIONS = frozenset({
    "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "TASKS_CREATED",
    "TASKS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED", "START_TRAINING",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "REVIEW_CREATED", "REVIEW_UPDATED",
    "REVIEWS_DELETED", "ANNOTATION_DRAFT_CREATED", "ANNOTATION_DRAFT_UPDATED", "ANNOTATION_DRAFT_DELETED",
})


def project_id(value: Any) -> int:
    """A project id from Label Studio's forms: 7, "7", "7.1700000000" or {"id": 7}; 400 otherwise."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        value = value.split(".", 1)[0]
        value = int(value) if value.isdigit() else None
    if not isinstance(value, int) or value < 1:
        raise HTTPException(400, "project must be a positive project id (7, \"7.<timestamp>\" or {\"id\": 7})")
    return value


class StrategyBody(BaseModel):
    """POST /admin/projects/{id}/strategy."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    now: bool = Field(False, description="enqueue a rescore at once")


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str


def create_app(settings: Settings | None = None) -> FastAPI:
    """The backend application for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reconciler = Reconciler(settings, redis, settings.reconcile_s) if settings.reconcile_s > 0 else None
        if reconciler is not None:
            reconciler.start()
        yield
        if reconciler is not None:
            reconciler.stop()

    app = FastAPI(title="Label Studio Active Learning backend", version="0.1.0", lifespan=lifespan,
                  description="Label Studio ML backend protocol plus the admin API of lsal.")
    metrics = Metrics()
    models = ModelCache(settings.model_dir)
    ls = LabelStudioClient.from_settings(settings) if settings.label_studio_api_key else None
    predictor = Predictor(settings, models, redis)
    services = Services(settings, redis, predictor, metrics)
    model_class = load_model_class(settings.model_class)
    app.state.settings, app.state.redis, app.state.metrics, app.state.models = settings, redis, metrics, models

    def store(project: int) -> ProjectStore:
        return ProjectStore(redis, project)

    def secret(request: Request) -> None:
        require_secret(settings, request)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path if request.url.path in _ROUTES else "other"
        if request.url.path.startswith("/admin/"):
            route = "/admin"
        if request.url.path not in OPEN_PATHS and not basic_auth_ok(settings, request):
            response = JSONResponse({"detail": "basic auth required"}, 401, {"WWW-Authenticate": "Basic"})
        else:
            length = request.headers.get("content-length")
            if length and (not length.isdigit() or int(length) > settings.max_body_bytes):
                response = JSONResponse({"detail": f"request body over {settings.max_body_bytes} bytes"}, 413)
            else:
                try:
                    response = await call_next(request)
                except RedisError as exc:
                    response = JSONResponse({"detail": f"Redis unavailable ({type(exc).__name__}); retry later"},
                                            503, {"Retry-After": "5"})
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(errors)}, 422)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis unavailable ({type(exc).__name__}); retry later"}, 503,
                            {"Retry-After": "5"})

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            raise HTTPException(413, f"request body over {settings.max_body_bytes} bytes")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return body

    # -- Label Studio's ML backend protocol ----------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "lsal", "version": app.version}

    def model_for(project: int, label_config: Any) -> LabelStudioModel:
        if label_config is not None and not isinstance(label_config, str):
            raise HTTPException(400, "label_config must be a string")
        return model_class(project, label_config, services)

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        project = project_id(body.get("project"))
        model_version = model_for(project, body.get("schema")).setup()
        delivered = settings.label_studio_api_key is None and remember_setup_credentials(
            redis, project, body.get("hostname"), body.get("access_token"))
        if settings.secret is not None and (ls is not None or delivered):
            hook = f"{(settings.public_url or str(request.base_url)).rstrip('/')}/webhook"
            # Label Studio calls /setup often: register only a new URL or a rotated secret
            if webhook_outdated(store(project).info(), hook, settings.secret.get_secret_value()):
                enqueue(redis, settings.queue, "connect", project, hook, timeout=300, reason="setup")
        return {"model_version": model_version}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise HTTPException(400, "tasks must be a list of task objects")
        project = project_id(body.get("project") or (tasks[0].get("project") if tasks else None))
        model = model_for(project, body.get("label_config"))
        context = body.get("context") if isinstance(body.get("context"), dict) else None
        return await run_in_threadpool(model.predict, tasks, context)

    @app.post("/webhook", dependencies=[Depends(secret)])
    async def webhook(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        action = body.get("action")
        if not isinstance(action, str) or action not in LS_ACTIONS:
            raise HTTPException(400, f"unknown action {action!r}; Label Studio actions are "
                                     f"{', '.join(sorted(LS_ACTIONS))}")
        metrics.webhooks.labels(action).inc()
        project = project_id(body.get("project"))
        return model_for(project, None).fit(action, body)

    @app.get("/metrics")
    def prometheus() -> Response:
        try:
            queue = queue_for(redis, settings.queue)
            metrics.queue_depth.set(queue.count)
            metrics.failed_jobs.set(FailedJobRegistry(queue=queue).count)
            for project in known_projects(redis):
                current = store(project).current_version()
                if current:
                    metrics.model_version.labels(str(project)).set(int(current.lstrip("v")))
                for kind in ("retrain", "rescore"):
                    last = store(project).info().get(f"last_{kind}")
                    if isinstance(last, dict) and "duration_s" in last:
                        metrics.last_round.labels(str(project), kind).set(last["duration_s"])
        except RedisError:
            pass  # metrics still answer with what the process knows
        metrics.model_loads._value.set(models.loads)  # noqa: SLF001 (mirror the cache's counter)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- admin API ------------------------------------------------------------------------------------------
    admin = dict(dependencies=[Depends(secret)])

    @app.get("/admin/strategies", **admin)
    def list_strategies() -> list[dict[str, Any]]:
        return [{"name": n, "params": strategy_param_help(n),
                 "summary": (STRATEGIES.get(n).__doc__ or "").strip().splitlines()[0]} for n in STRATEGIES.names()]

    @app.get("/admin/projects", **admin)
    def list_projects() -> list[int]:
        return known_projects(redis)

    @app.get("/admin/projects/{project}/settings", **admin)
    def get_project_settings(project: int) -> dict[str, Any]:
        return store(project).settings(settings.defaults).model_dump(mode="json")

    @app.patch("/admin/projects/{project}/settings", **admin)
    async def patch_project_settings(project: int, request: Request) -> dict[str, Any]:
        body = await json_body(request)
        try:
            return update_settings(store(project), settings.defaults, body).model_dump(mode="json")
        except InvalidSettingsError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/admin/projects/{project}/strategy", **admin)
    def post_strategy(project: int, body: StrategyBody) -> dict[str, Any]:
        try:
            new = set_strategy(store(project), settings.defaults, body.name, body.params)
        except InvalidSettingsError as exc:
            raise HTTPException(422, str(exc)) from None
        out: dict[str, Any] = {"settings": new.model_dump(mode="json")}
        if body.now:
            out["job"] = trigger(redis, settings.queue, project, "rescore", "strategy changed",
                                 settings.job_timeout_s).job_id
        return out

    @app.post("/admin/projects/{project}/train", **admin)
    def post_train(project: int) -> dict[str, Any]:
        job = trigger(redis, settings.queue, project, "retrain", "admin", settings.job_timeout_s)
        return {"job": job.job_id, "created": job.created}

    @app.post("/admin/projects/{project}/rescore", **admin)
    def post_rescore(project: int) -> dict[str, Any]:
        job = trigger(redis, settings.queue, project, "rescore", "admin", settings.job_timeout_s)
        return {"job": job.job_id, "created": job.created}

    @app.post("/admin/projects/{project}/reconcile", **admin)
    def post_reconcile(project: int) -> dict[str, Any]:
        try:
            return reconcile_project(settings, redis, project)
        except LabelStudioError as exc:
            raise HTTPException(502, str(exc)) from None

    @app.get("/admin/projects/{project}/learning-curve.png", **admin)
    def get_learning_curve(project: int) -> Response:
        return Response(learning_curve_png(project, store(project).versions()), media_type="image/png")

    @app.get("/admin/projects/{project}/versions", **admin)
    def get_versions(project: int) -> dict[str, Any]:
        s = store(project)
        return {"current": s.current_version(), "versions": s.versions(), "publications": s.publications()}

    @app.post("/admin/projects/{project}/rollback", **admin)
    def post_rollback(project: int, body: RollbackBody) -> dict[str, Any]:
        try:
            record = rollback(store(project), body.version)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None
        job = trigger(redis, settings.queue, project, "rescore", f"rollback to {body.version}", settings.job_timeout_s)
        return {"current": record["version"], "job": job.job_id}

    @app.get("/admin/projects/{project}/status", **admin)
    def get_status(project: int) -> dict[str, Any]:
        return status(redis, store(project), settings.defaults, settings.queue)

    @app.get("/admin/projects/{project}/ranking", **admin)
    def get_ranking(project: int, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 10_000:
            raise HTTPException(422, "limit must be between 1 and 10000")
        s = store(project)
        return {"published": s.published(), "head": s.ranking_head(limit)}

    _ROUTES = {r.path for r in app.routes}
    return app

