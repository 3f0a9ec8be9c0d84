"""One small HTTP client for the local stack's harness (the demo, the benchmarks, the end-to-end tests).

urllib only (the project's virtualenv has no `requests`): `request` answers every status with a `Response`
(no exception on 4xx/5xx; a connection failure raises OSError); `Client` is JSON over HTTP against one base
URL with fixed headers (the auth), and `Client.call` returns the JSON answer or raises an error that names
the call. `token_auth` and `secret_auth` are the two authentications the harness uses.
"""

from __future__ import annotations

import json as jsonlib
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 60.0

# a file of a multipart upload: (form field, file name, content, content type)
UploadFile = tuple[str, str, bytes, str]


class HttpError(RuntimeError):
    """A call answered with an unexpected status, or its server could not be reached."""


def token_auth(token: str) -> dict[str, str]:
    """Label Studio's header for an API token (legacy token auth)."""
    return {"Authorization": f"Token {token}"}


def secret_auth(secret: str) -> dict[str, str]:
    """The lsal backend's header for LSAL_SECRET (webhooks and the admin API)."""
    return {"X-LSAL-Secret": secret}


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None

    def expect(self, what: str, error: type[Exception] = HttpError) -> Any:
        """The JSON answer of a 2xx response; `error` naming `what` otherwise."""
        if not self.ok:
            raise error(f"{what}: HTTP {self.status} {self.text[:500]}")
        return self.json()


def encode_multipart(files: Iterable[UploadFile]) -> tuple[bytes, str]:
    """A multipart/form-data body of `files`, and its Content-Type."""
    boundary = f"lsal-{secrets.token_hex(12)}"
    parts = []
    for name, filename, content, ctype in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n")
        parts += [head.encode(), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload_files(paths: Iterable[Path], content_type: str = "image/png") -> list[UploadFile]:
    """One form field per file (`file0`, `file1`, ...: Label Studio reads one file per field name)."""
    return [(f"file{i}", p.name, Path(p).read_bytes(), content_type) for i, p in enumerate(paths)]


def request(method: str, url: str, json: Any = None, headers: Mapping[str, str] | None = None,
            timeout: float = DEFAULT_TIMEOUT_S, *, params: Mapping[str, Any] | None = None, data: bytes | None = None,
            files: Iterable[UploadFile] | None = None) -> Response:
    """One HTTP request: the response whatever its status; OSError (urllib's URLError, a timeout) when the
    server cannot be reached. `json` is sent as JSON, `files` as multipart/form-data, `data` as it is."""
    hdrs = dict(headers or {})
    if json is not None:
        data = jsonlib.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif files is not None:
        data, ctype = encode_multipart(files)
        hdrs["Content-Type"] = ctype
    if params:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method.upper())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers or {}))


class Verbs:
    """`get`, `post`, `patch` and `delete` on top of a class's `request(method, path, json=None, **kw)`."""

    def request(self, method: str, path: str, json: Any = None, **kw: Any) -> Response:
        raise NotImplementedError

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("DELETE", path, json=json, **kw)


class Client(Verbs):
    """JSON over HTTP against one base URL with fixed headers; `name` and `error` shape the errors of `call`."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, name: str = "the server",
                 timeout: float = DEFAULT_TIMEOUT_S, error: type[Exception] = HttpError) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.name, self.timeout, self.error = name, timeout, error

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, json: Any = None, *, headers: Mapping[str, str] | None = None,
                timeout: float | None = None, **kw: Any) -> Response:
        """`request` against `path` (or a whole URL) with this client's headers (plus `headers`)."""
        return request(method, self.url(path), json=json, headers={**self.headers, **(headers or {})},
                       timeout=self.timeout if timeout is None else timeout, **kw)

    def call(self, method: str, path: str, what: str, json: Any = None, allow: tuple[int, ...] = (),
             **kw: Any) -> Any:
        """The JSON answer (None when empty; the status code itself when it is in `allow`); `self.error`
        naming `what` and the server when it answers otherwise or cannot be reached."""
        try:
            r = self.request(method, path, json=json, **kw)
        except OSError as exc:
            raise self.error(f"{what}: cannot reach {self.name} ({type(exc).__name__}: {exc})") from None
        if r.status in allow:
            return r.status
        if not r.ok:
            raise self.error(f"{what}: {self.name} answered HTTP {r.status} {r.text[:500]}")
        return r.json()
