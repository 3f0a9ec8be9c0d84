"""The request bodies the backend accepts, read and checked before any route logic runs.

Every body is JSON sent as `application/json` (a browser cannot send that cross-site without a preflight),
at most LSAL_MAX_BODY_BYTES (enforced while reading), received within LSAL_BODY_TIMEOUT_S, nested at most
LSAL_MAX_JSON_DEPTH deep; then it is validated by one of the pydantic models below, which are also the
request schemas of the OpenAPI document. Whatever arrives, the answer is a 4xx that says what is wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

MAX_PROJECT_ID = 2**31 - 1
_PROJECT = re.compile(r"([0-9]{1,10})(?:\.[0-9]{1,20})?")
ProjectRef = StrictInt | StrictStr | dict[str, Any]  # strict: True is no project id


def project_id(value: Any) -> int:
    """A project id from Label Studio's forms: 7, "7", "7.1700000000" (id.created_at) or {"id": 7}; 400 otherwise."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str):
        match = _PROJECT.fullmatch(value)  # ASCII digits only: "²".isdigit() is true, int("²") fails
        value = int(match.group(1)) if match else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROJECT_ID:
        raise HTTPException(400, f"project must be a project id from 1 to {MAX_PROJECT_ID} (7, \"7.<timestamp>\" "
                                 "or {\"id\": 7})")
    return value


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` (parsed JSON) nests lists/objects deeper than `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


async def read_body(request: Request, timeout_s: float) -> bytes:
    """The whole body, or 408 when the client has not sent it within `timeout_s`."""
    try:
        return await asyncio.wait_for(request.body(), timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(408, f"the request body did not arrive within {timeout_s:g} s") from None


async def json_object(request: Request, timeout_s: float, max_depth: int) -> dict[str, Any]:
    """The request's JSON object body: 415 unless application/json, 400 for bad or too deeply nested JSON."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, f"the body must be sent as application/json, not {content_type or 'untyped'}")
    raw = await read_body(request, timeout_s)
    try:
        body = json.loads(raw or b"null")
    except RecursionError:
        raise HTTPException(400, f"the JSON body nests deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    if json_depth_exceeds(body, max_depth):
        raise HTTPException(400, f"the JSON body nests deeper than {max_depth} levels")
    return body


def parse(model: type[BaseModel], body: dict[str, Any], status: int = 422) -> Any:
    """`body` validated by `model`; `status` (Label Studio's protocol routes: 400) listing the problems otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:10]]
        raise HTTPException(status, "; ".join(problems)) from None


class _Lenient(BaseModel):
    """Label Studio adds fields over its versions: unknown ones are accepted and ignored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SetupRequest(_Lenient):
    """POST /setup, as Label Studio sends it when a model is connected or its state refreshed."""

    project: ProjectRef | None = Field(None, description="'<id>.<created_at timestamp>', an id, or {\"id\": ...}")
    label_config: str | None = Field(None, alias="schema", description="the project's labeling config (XML)")
    hostname: str | None = Field(None, description="ignored: Label Studio is always LABEL_STUDIO_URL")
    access_token: str | None = Field(None, max_length=512,
                                     description="the project creator's token; kept only if it works")
    extra_params: Any = None


class Task(_Lenient):
    """One Label Studio task."""

    id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="the task's data: {field: value}")
    project: ProjectRef | None = None


class PredictRequest(_Lenient):
    """POST /predict."""

    tasks: list[Task]
    project: ProjectRef | None = None
    label_config: str | None = None
    context: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class WebhookEvent(_Lenient):
    """POST /webhook: a Label Studio webhook payload (or Start Training's)."""

    action: str | None = Field(None, max_length=100)
    project: ProjectRef | None = None


class StrategyBody(BaseModel):
    """POST /admin/projects/{id}/strategy."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    now: bool = Field(False, description="enqueue a rescore at once")


class RollbackBody(BaseModel):
    """POST /admin/projects/{id}/rollback."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(max_length=20, pattern=r"^v[1-9][0-9]{0,8}$", description="e.g. v3")


BODY_MODELS = (SetupRequest, PredictRequest, WebhookEvent, StrategyBody, RollbackBody)


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents `model` as a route's JSON request body."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_body_schemas(openapi: dict[str, Any], extra: dict[str, type[BaseModel]] | None = None) -> dict[str, Any]:
    """The OpenAPI document with the request-body models under components.schemas."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (*BODY_MODELS, *(extra or {}).values()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return openapi
