"""The Label Studio REST client: what the worker and `lsal doctor` need, on top of label-studio-sdk."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from core.config import Settings

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
# what Label Studio sends to /webhook; ours are handled, the rest acknowledged and ignored
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
WEBHOOK_ACTIONS = (*ANNOTATION_ACTIONS, "TASKS_CREATED", "PROJECT_UPDATED")


class LabelStudioError(RuntimeError):
    """Label Studio refused or failed a request; the message says which request and why (never the token)."""


class NoTokenError(LabelStudioError):
    """There is no Label Studio token for a project; the message says what to set."""


def _describe(exc: Exception, what: str) -> LabelStudioError:
    """A LabelStudioError for `exc` raised while doing `what`."""
    if isinstance(exc, ApiError):
        body = str(exc.body)[:300] if exc.body is not None else ""
        return LabelStudioError(f"{what}: Label Studio answered HTTP {exc.status_code} {body}".strip())
    if isinstance(exc, httpx.HTTPStatusError):
        return LabelStudioError(f"{what}: Label Studio answered HTTP {exc.response.status_code} "
                                f"{exc.response.text[:300]}")
    if isinstance(exc, httpx.HTTPError):
        return LabelStudioError(f"{what}: cannot reach Label Studio ({type(exc).__name__}: {exc})")
    return LabelStudioError(f"{what}: {type(exc).__name__}: {exc}")


class LabelStudioClient:
    """Typed access to one Label Studio instance with one API token."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.5) -> None:
        if not api_key:
            raise LabelStudioError("no Label Studio API token: set LABEL_STUDIO_API_KEY")
        self.url = url.rstrip("/")
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        self._max_retries, self.backoff_s = max_retries, backoff_s
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient:
        """A client for LABEL_STUDIO_URL with LABEL_STUDIO_API_KEY."""
        key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else ""
        return cls(settings.label_studio_url, key)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    def _headers(self) -> dict[str, str]:
        return {k: v for k, v in self.sdk._client_wrapper.get_headers().items() if k.lower() == "authorization"}

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """One REST call with the token; JSON (or None) back, LabelStudioError on failure.

        Connection errors, 429 and 5xx are retried `max_retries` times with exponential backoff
        (0.5 s, 1 s, 2 s, ...); other errors fail at once.
        """
        for attempt in range(self._max_retries + 1):
            try:
                response = self._http.request(method, path, headers=self._headers(), **kwargs)
                response.raise_for_status()
                return response.json() if response.content else None
            except httpx.HTTPStatusError as exc:
                retryable = exc.response.status_code == 429 or exc.response.status_code >= 500
                if not retryable or attempt == self._max_retries:
                    raise _describe(exc, what) from None
            except httpx.HTTPError as exc:
                if attempt == self._max_retries:
                    raise _describe(exc, what) from None
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    # -- reads ------------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to (checks URL and token)."""
        return self.request("GET", "/api/current-user/whoami", "check the API token")

    def project(self, project: int) -> dict[str, Any]:
        """The project's fields (label_config, model_version, sampling, ...)."""
        return self.request("GET", f"/api/projects/{project}", f"read project {project}")

    def tasks(self, project: int, page_size: int = 500,
              ids: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every task of the project with its annotations, page by page; only the tasks `ids` names, when
        given (asked for in chunks of `page_size`, through the Data Manager's selectedItems query)."""
        if ids is None:
            yield from self._task_pages(project, page_size, {})
            return
        wanted = sorted({int(i) for i in ids})
        for start in range(0, len(wanted), page_size):
            chunk = wanted[start:start + page_size]
            query = {"selectedItems": {"all": False, "included": chunk}}
            yield from self._task_pages(project, page_size, {"query": json.dumps(query)})

    def _task_pages(self, project: int, page_size: int, extra: dict[str, str]) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            try:
                body = self.request("GET", "/api/tasks", f"list tasks of project {project}",
                                    params={"project": project, "page": page, "page_size": page_size,
                                            "fields": "all", **extra})
            except LabelStudioError as exc:
                if "HTTP 404" in str(exc) and page > 1:  # past the last page
                    return
                raise
            items = body.get("tasks", []) if isinstance(body, dict) else body
            yield from items
            total = body.get("total") if isinstance(body, dict) else None
            if not items or len(items) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def file_bytes(self, path_or_url: str, max_bytes: int, timeout: float, deadline: float | None = None) -> bytes:
        """Bytes of a file Label Studio serves (uploads, local-files storage), with the token, size-capped;
        `timeout` per read, `deadline` (time.monotonic) for the whole download."""
        with self._http.stream("GET", path_or_url, headers=self._headers(), timeout=timeout) as response:
            response.raise_for_status()
            return read_capped(response, max_bytes, deadline)

    def model_versions(self, project: int) -> dict[str, int]:
        """{model_version: number of predictions} in the project."""
        body = self.request("GET", f"/api/projects/{project}/model-versions/", "list model versions")
        if isinstance(body, dict):
            return {str(k): int(v) for k, v in body.items()}
        return {str(row.get("model_version")): int(row.get("count", 0)) for row in body or []}

    # -- writes -----------------------------------------------------------------------------------------
    def import_predictions(self, project: int, predictions: list[dict[str, Any]], chunk: int = 1000) -> int:
        """Create predictions in bulk, `chunk` per request; return how many were created."""
        created = 0
        for start in range(0, len(predictions), chunk):
            part = predictions[start:start + chunk]
            what = f"import {len(part)} predictions into project {project}"
            body = self.request("POST", f"/api/projects/{project}/import/predictions", what, json=part)
            done = body.get("created") if isinstance(body, dict) else None
            if done != len(part):  # Label Studio drops predictions it finds invalid without failing the request
                raise LabelStudioError(f"{what}: Label Studio created {done} of them")
            created += len(part)
        return created

    def delete_model_version(self, project: int, model_version: str) -> int:
        """Delete every prediction of `model_version` in the project; return how many went."""
        body = self.request("DELETE", f"/api/projects/{project}/model-versions/",
                            f"delete predictions of {model_version!r}", json={"model_version": model_version})
        return int(body.get("deleted_predictions", 0)) if isinstance(body, dict) else 0

    def update_project(self, project: int, **fields: Any) -> dict[str, Any]:
        """PATCH project fields (model_version, sampling, ...)."""
        return self.request("PATCH", f"/api/projects/{project}", f"update project {project}", json=fields)

    def update_task_data(self, task: int, data: dict[str, Any]) -> None:
        """Replace one task's data (PATCH /api/tasks/<id>/): Label Studio keeps no other copy, so `data` must
        hold every field the task had."""
        self.request("PATCH", f"/api/tasks/{task}/", f"update the data of task {task}", json={"data": data})

    def create_annotation(self, task: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Save an annotation of `task` with `result` (POST /api/tasks/<id>/annotations/); the annotation."""
        return self.request("POST", f"/api/tasks/{task}/annotations/", f"annotate task {task}",
                            json={"result": result, "lead_time": 0, "ground_truth": False})

    def views(self, project: int) -> list[dict[str, Any]]:
        """The project's Data Manager tabs (views)."""
        body = self.request("GET", "/api/dm/views/", "list the Data Manager views", params={"project": project})
        return body if isinstance(body, list) else []

    def save_view(self, project: int, data: dict[str, Any], view: int | None = None) -> dict[str, Any]:
        """Create a Data Manager tab with `data` (title, ordering, filters, hiddenColumns), or replace tab `view`'s."""
        body = {"project": project, "data": data}
        if view is None:
            return self.request("POST", "/api/dm/views/", "create a Data Manager view", json=body)
        return self.request("PUT", f"/api/dm/views/{view}/", f"update Data Manager view {view}", json=body)

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The ML backends connected to the project (Label Studio calls each one's /health and /setup)."""
        body = self.request("GET", "/api/ml", "list the ML backends", params={"project": project})
        return body if isinstance(body, list) else []

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        """The webhooks registered for the project."""
        return self.request("GET", "/api/webhooks/", "list webhooks", params={"project": project}) or []

    def ensure_webhook(self, project: int, url: str, headers: dict[str, str]) -> dict[str, Any]:
        """Register (or refresh) the project's webhook to `url` for the actions the backend handles."""
        body = {"project": project, "url": url, "send_payload": True, "send_for_all_actions": False,
                "actions": list(WEBHOOK_ACTIONS), "headers": headers, "is_active": True}
        for hook in self.webhooks(project):
            if hook.get("url") == url and hook.get("project") == project:
                return self.request("PATCH", f"/api/webhooks/{hook['id']}/", "update the webhook", json=body)
        return self.request("POST", "/api/webhooks/", "register the webhook", json=body)


def read_capped(response: httpx.Response, max_bytes: int, deadline: float | None = None) -> bytes:
    """The body of a streamed response, refusing more than `max_bytes` (ValueError) or reading past
    `deadline` (a time.monotonic value; TimeoutError)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdecimal() and len(declared) < 20 and int(declared) > max_bytes:
        raise ValueError(f"{int(declared)} bytes is over the {max_bytes}-byte limit")
    data = bytearray()
    for block in response.iter_bytes():
        data += block
        if len(data) > max_bytes:
            raise ValueError(f"more than the {max_bytes}-byte limit")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("the download ran past its deadline")
    return bytes(data)
