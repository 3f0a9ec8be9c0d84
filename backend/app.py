"""The HTTP face: Label Studio's ML-backend protocol (/health, /setup, /predict, /webhook), /metrics, /admin.

Who may do what (docs/reliability.md#security): /health, /setup, /predict and /metrics are open unless
BASIC_AUTH_USER/PASS are set; /setup changes state only for a project that Label Studio (at
LABEL_STUDIO_URL, never a host the request names) confirms; /webhook needs LSAL_SECRET or the project's
webhook token; /admin needs LSAL_SECRET and leaves an audit record.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis import Redis
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.admin import record_audit, review_view, rollback, set_strategy, status, trigger, update_settings
from backend.auth import (
    OPEN_PATHS,
    SELF_AUTHENTICATED,
    actor,
    basic_auth_ok,
    has_secret,
    require_secret,
    require_webhook_auth,
)
from core.tokens import WEBHOOK_TOKEN_HEADER, webhook_outdated, webhook_token
from core.config import Settings, get_settings
from core.credentials import ProjectConfirmer, SetupRefused, remember_token
from core.curves import learning_curve_png
from core.ls_client import LabelStudioError, NoTokenError
from backend.metrics import Metrics
from backend.model_api import LabelStudioModel, Services, load_model_class
from core.model_cache import ModelCache
from backend.predictor import Predictor
from core.label_config import kind_of
from core.project_settings import InvalidSettingsError, settings_for_kind, strategy_param_help, strategy_summary
from backend.protocol import (
    MAX_PROJECT_ID,
    PredictRequest,
    RollbackBody,
    SetupRequest,
    StrategyBody,
    WebhookEvent,
    add_body_schemas,
    body_schema,
    json_object,
    parse,
    project_id,
)
from core.queueing import enqueue, queue_for
from core.reconciler import Reconciler, reconcile_project
from core.store import PROJECTS_KEY, ProjectStore, known_projects, version_number
from plugins.strategies import STRATEGIES

log = logging.getLogger("lsal.backend")
# every action Label Studio can send; the ones we do not act on are acknowledged and ignored
LS_ACTIONS = frozenset({
    "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "TASKS_CREATED",
    "TASKS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED", "START_TRAINING",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "REVIEW_CREATED", "REVIEW_UPDATED",
    "REVIEWS_DELETED", "ANNOTATION_DRAFT_CREATED", "ANNOTATION_DRAFT_UPDATED", "ANNOTATION_DRAFT_DELETED",
})
CONNECT_GRACE_S = 120.0  # a connect job asks Label Studio for the ML backend, which calls /setup again
ProjectId = Annotated[int, Path(ge=1, le=MAX_PROJECT_ID, description="Label Studio project id")]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The backend application for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    # a stuck Redis must answer 503 well within Label Studio's 1 s webhook timeout
    redis = Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                           socket_connect_timeout=settings.redis_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reconciler = Reconciler(settings, redis, settings.reconcile_s) if settings.reconcile_s > 0 else None
        if reconciler is not None:
            reconciler.start()
        yield
        if reconciler is not None:
            reconciler.stop()

    app = FastAPI(title="Label Studio Active Learning backend", version="0.1.0", lifespan=lifespan,
                  description="Label Studio ML backend protocol plus the admin API of lsal.",
                  max_body_size=settings.max_body_bytes)
    metrics = Metrics()
    models = ModelCache(settings.model_dir)
    predictor = Predictor(settings, models, redis)
    services = Services(settings, redis, predictor, metrics)
    model_class = load_model_class(settings.model_class)
    confirmer = ProjectConfirmer(settings)
    app.state.settings, app.state.redis, app.state.metrics, app.state.models = settings, redis, metrics, models

    def store(project: int) -> ProjectStore:
        return ProjectStore(redis, project)

    def secret(request: Request) -> None:
        require_secret(settings, request)

    async def body_of(request: Request) -> dict[str, Any]:
        return await json_object(request, settings.body_timeout_s, settings.max_json_depth)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        route = path if path in _ROUTES else "/admin" if path.startswith("/admin/") else "other"
        length = request.headers.get("content-length")
        if path not in OPEN_PATHS | SELF_AUTHENTICATED and not basic_auth_ok(settings, request) and \
                not has_secret(settings, request):
            response = JSONResponse({"detail": "basic auth required"}, 401, {"WWW-Authenticate": "Basic"})
        elif length and (not length.isdecimal() or not length.isascii() or int(length) > settings.max_body_bytes):
            response = JSONResponse({"detail": f"request body over {settings.max_body_bytes} bytes"}, 413)
        else:
            try:
                response = await call_next(request)
            except RedisError as exc:
                response = _redis_down(exc)
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(errors)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 413 and detail == "Content Too Large":  # Starlette's limit, while reading
            detail = f"request body over {settings.max_body_bytes} bytes"
        return JSONResponse({"detail": detail}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return _redis_down(exc)

    # -- Label Studio's ML backend protocol ----------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "lsal", "version": app.version}

    def model_for(project: int, label_config: str | None) -> LabelStudioModel:
        if label_config is not None and len(label_config.encode()) > settings.max_config_bytes:
            raise HTTPException(413, f"the labeling config is over {settings.max_config_bytes} bytes "
                                     "(LSAL_MAX_CONFIG_BYTES)")
        return model_class(project, label_config, services)

    def connect_if_needed(project: int) -> None:
        """Register the project's webhook (a worker job) unless it is current or being registered."""
        if settings.secret is None:
            return
        info = store(project).info()
        token = webhook_token(settings.secret.get_secret_value(), project)
        target = f"{settings.public_url}/webhook" if settings.public_url else None
        started = info.get("connect_started_at")
        if isinstance(started, (int, float)) and time.time() - started < CONNECT_GRACE_S:
            return
        if webhook_outdated(info, target, token):
            enqueue(redis, settings.queue, "connect", project, timeout=300, reason="setup")

    def confirmed_setup(project: int, body: SetupRequest) -> None:
        """Record a /setup that Label Studio confirmed: the project is known, its token kept, its webhook due."""
        delivered = confirmer.confirm(project, body.access_token)
        if delivered is not None:
            remember_token(redis, project, delivered)
        redis.sadd(PROJECTS_KEY, project)
        if body.label_config:  # a kind the defaults do not fit (detection) starts with a model and strategy that do
            seeded = settings_for_kind(settings.defaults, kind_of(body.label_config))
            if seeded is not settings.defaults:
                store(project).seed_settings(seeded)
        connect_if_needed(project)

    @app.post("/setup", openapi_extra=body_schema(SetupRequest))
    async def setup(request: Request) -> dict[str, Any]:
        body = parse(SetupRequest, await body_of(request), 400)
        project = project_id(body.project)
        model = model_for(project, body.label_config)
        model_version = await run_in_threadpool(model.setup)  # parses the config off the event loop
        try:
            await run_in_threadpool(confirmed_setup, project, body)
        except SetupRefused as exc:
            log.warning("setup of project %s refused: %s", project, exc)
            raise HTTPException(exc.status, str(exc)) from None
        return {"model_version": model_version}

    @app.post("/predict", openapi_extra=body_schema(PredictRequest))
    async def predict(request: Request) -> dict[str, Any]:
        raw = await body_of(request)
        if isinstance(raw.get("tasks"), list) and len(raw["tasks"]) > settings.max_predict_tasks:
            raise HTTPException(413, f"{len(raw['tasks'])} tasks in one request; at most {settings.max_predict_tasks}"
                                     " (LSAL_MAX_PREDICT_TASKS): the worker publishes predictions for the whole "
                                     "project on its own")
        body = parse(PredictRequest, raw, 400)
        tasks = [t.model_dump(exclude_unset=False) for t in body.tasks]
        project = project_id(body.project or (tasks[0].get("project") if tasks else None))
        model = model_for(project, body.label_config)
        return await run_in_threadpool(model.predict, tasks, body.context)

    def handle_event(request: Request, raw: dict[str, Any]) -> dict[str, Any]:
        event = parse(WebhookEvent, raw, 400)
        if not has_secret(settings, request):  # a project's token: check it against the body's project
            require_webhook_auth(settings, request, project_id(event.project))
        if event.action not in LS_ACTIONS:
            raise HTTPException(400, f"unknown action {event.action!r}; Label Studio actions are "
                                     f"{', '.join(sorted(LS_ACTIONS))}")
        project = project_id(event.project)
        metrics.webhooks.labels(event.action).inc()
        return model_for(project, None).fit(event.action, raw)

    @app.post("/webhook", openapi_extra=body_schema(WebhookEvent))
    async def webhook(request: Request) -> dict[str, Any]:
        if WEBHOOK_TOKEN_HEADER not in request.headers:  # no token to check against the body's project
            require_secret(settings, request)
        raw = await body_of(request)
        return await run_in_threadpool(handle_event, request, raw)  # Redis calls stay off the event loop

    @app.get("/metrics")
    def prometheus() -> Response:
        try:
            queue = queue_for(redis, settings.queue)
            metrics.queue_depth.set(queue.count)
            metrics.failed_jobs.set(FailedJobRegistry(queue=queue).count)
            for project in known_projects(redis):
                number = version_number(store(project).current_version())
                if number is not None:
                    metrics.model_version.labels(str(project)).set(number)
                for kind in ("retrain", "rescore"):
                    last = store(project).info().get(f"last_{kind}")
                    if isinstance(last, dict) and isinstance(last.get("duration_s"), (int, float)):
                        metrics.last_round.labels(str(project), kind).set(last["duration_s"])
        except RedisError:
            pass  # metrics still answer with what the process knows
        metrics.model_loads._value.set(models.loads)  # noqa: SLF001 (mirror the cache's counter)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- admin API (synchronous handlers: FastAPI runs them in its thread pool, off the event loop) ---------
    admin = dict(dependencies=[Depends(secret)])

    def audit(request: Request, project: int, action: str, **detail: Any) -> None:
        record_audit(store(project), actor(request), action, detail)

    @app.get("/admin/strategies", **admin)
    def list_strategies() -> list[dict[str, Any]]:
        return [{"name": n, "params": strategy_param_help(n),
                 "summary": strategy_summary(n)} for n in STRATEGIES.names()]

    @app.get("/admin/projects", **admin)
    def list_projects() -> list[int]:
        return known_projects(redis)

    @app.get("/admin/projects/{project}/settings", **admin)
    def get_project_settings(project: ProjectId) -> dict[str, Any]:
        return store(project).settings(settings.defaults).model_dump(mode="json")

    @app.patch("/admin/projects/{project}/settings", **admin,
               openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                   "schema": {"type": "object", "description": "settings fields to change"}}}}})
    async def patch_project_settings(project: ProjectId, request: Request) -> dict[str, Any]:
        body = await body_of(request)

        def apply() -> dict[str, Any]:
            try:
                new = update_settings(store(project), settings.defaults, body, settings.weights_dir)
            except InvalidSettingsError as exc:
                raise HTTPException(422, str(exc)) from None
            audit(request, project, "settings", changed=body)
            return new.model_dump(mode="json")

        return await run_in_threadpool(apply)

    @app.post("/admin/projects/{project}/strategy", **admin, openapi_extra=body_schema(StrategyBody))
    async def post_strategy(project: ProjectId, request: Request) -> dict[str, Any]:
        body = parse(StrategyBody, await body_of(request))

        def apply() -> dict[str, Any]:
            try:
                new = set_strategy(store(project), settings.defaults, body.name, body.params, settings.weights_dir)
            except InvalidSettingsError as exc:
                raise HTTPException(422, str(exc)) from None
            audit(request, project, "strategy", name=body.name, params=body.params, now=body.now)
            out: dict[str, Any] = {"settings": new.model_dump(mode="json")}
            if body.now:
                out["job"] = trigger(redis, settings.queue, project, "rescore", "strategy changed",
                                     settings.job_timeout_s).job_id
            return out

        return await run_in_threadpool(apply)

    @app.post("/admin/projects/{project}/train", **admin)
    def post_train(project: ProjectId, request: Request) -> dict[str, Any]:
        job = trigger(redis, settings.queue, project, "retrain", "admin", settings.job_timeout_s)
        audit(request, project, "train", job=job.job_id)
        return {"job": job.job_id, "created": job.created}

    @app.post("/admin/projects/{project}/rescore", **admin)
    def post_rescore(project: ProjectId, request: Request) -> dict[str, Any]:
        job = trigger(redis, settings.queue, project, "rescore", "admin", settings.job_timeout_s)
        audit(request, project, "rescore", job=job.job_id)
        return {"job": job.job_id, "created": job.created}

    @app.post("/admin/projects/{project}/reconcile", **admin)
    def post_reconcile(project: ProjectId) -> dict[str, Any]:
        try:
            return reconcile_project(settings, redis, project)
        except NoTokenError as exc:
            raise HTTPException(409, str(exc)) from None
        except LabelStudioError as exc:
            raise HTTPException(502, str(exc)) from None

    @app.get("/admin/projects/{project}/learning-curve.png", **admin)
    def get_learning_curve(project: ProjectId) -> Response:
        return Response(learning_curve_png(project, store(project).versions()), media_type="image/png")

    @app.get("/admin/projects/{project}/versions", **admin)
    def get_versions(project: ProjectId) -> dict[str, Any]:
        s = store(project)
        return {"current": s.current_version(), "versions": s.versions(), "publications": s.publications()}

    @app.post("/admin/projects/{project}/rollback", **admin, openapi_extra=body_schema(RollbackBody))
    async def post_rollback(project: ProjectId, request: Request) -> dict[str, Any]:
        body = parse(RollbackBody, await body_of(request))

        def apply() -> dict[str, Any]:
            try:
                record = rollback(store(project), body.version)
            except KeyError as exc:
                raise HTTPException(404, exc.args[0]) from None
            job = trigger(redis, settings.queue, project, "rescore", f"rollback to {body.version}",
                          settings.job_timeout_s)
            audit(request, project, "rollback", version=body.version, job=job.job_id)
            return {"current": record["version"], "job": job.job_id}

        return await run_in_threadpool(apply)

    @app.get("/admin/projects/{project}/status", **admin)
    def get_status(project: ProjectId) -> dict[str, Any]:
        return status(redis, store(project), settings.defaults, settings.queue)

    @app.get("/admin/projects/{project}/audit", **admin)
    def get_audit(project: ProjectId, limit: int = 100) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be between 1 and 1000")
        return store(project).audit_log(limit)

    @app.get("/admin/projects/{project}/ranking", **admin)
    def get_ranking(project: ProjectId, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 10_000:
            raise HTTPException(422, "limit must be between 1 and 10000")
        s = store(project)
        return {"published": s.published(), "head": s.ranking_head(limit)}

    @app.get("/admin/projects/{project}/review", **admin)
    def get_review(project: ProjectId, limit: int = 50, all_tasks: bool = False) -> dict[str, Any]:
        """The newest label-noise review: its flagged tasks (every reviewed task with all_tasks=true), most
        doubtful first, each with the given label, the model's label, its confidence and the quality score."""
        if not 1 <= limit <= 100_000:
            raise HTTPException(422, "limit must be between 1 and 100000")
        return review_view(store(project), limit, everything=all_tasks)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_body_schemas(get_openapi(title=app.title, version=app.version,
                                                              description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi
    _ROUTES = {r.path for r in app.routes}
    return app


def _redis_down(exc: RedisError) -> JSONResponse:
    return JSONResponse({"detail": f"Redis unavailable ({type(exc).__name__}); retry later"}, 503, {"Retry-After": "5"})
