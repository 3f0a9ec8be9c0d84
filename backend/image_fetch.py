"""Task images: from Label Studio (uploads, local files, with the token) or allow-listed hosts, size-capped."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np

from backend.config import Settings
from backend.ls_client import LabelStudioClient, read_capped
from plugins.images import ImageLoadError, decode_image, resize


@dataclass(frozen=True)
class Skipped:
    """A task left out of training or scoring, with the reason `lsal status` shows."""

    task: int
    reason: str
    detail: str


def _host(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


class ImageFetcher:
    """Fetches and decodes task images; only Label Studio's host and LSAL_IMAGE_HOSTS are reachable."""

    def __init__(self, settings: Settings, ls: LabelStudioClient | None) -> None:
        self.settings, self.ls = settings, ls
        self._ls_host = _host(settings.label_studio_url)
        self._allowed = {self._ls_host} | {h if ":" in h else f"{h}:80" for h in settings.image_hosts} | {
            f"{h}:443" for h in settings.image_hosts if ":" not in h}
        self._http = httpx.Client(timeout=settings.image_timeout_s, follow_redirects=False)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Release connections and the download threads."""
        self._http.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        """One pool of download threads for the fetcher's life (a pool per call grew the heap under load)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lsal-image")
            return self._pool

    def fetch(self, url: str) -> bytes:
        """The bytes behind a task's image URL; ImageLoadError (reason 'not_allowed', 'not_found', ...)."""
        if not isinstance(url, str) or not url:
            raise ImageLoadError("no_image", repr(url), "the task has no image URL in its data")
        max_bytes, timeout = self.settings.image_max_bytes, self.settings.image_timeout_s
        try:
            if url.startswith("/"):  # /data/upload/..., /data/local-files/?d=...: served by Label Studio
                if self.ls is None:
                    raise ImageLoadError("not_allowed", url, "a Label Studio path, but no Label Studio client")
                return self.ls.file_bytes(url, max_bytes, timeout)
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https"):
                raise ImageLoadError("unsupported_url", url, f"{scheme or 'no'} scheme; http(s) URLs and "
                                     "Label Studio paths are supported")
            host = _host(url)
            if host == self._ls_host and self.ls is not None:
                return self.ls.file_bytes(url, max_bytes, timeout)
            if host not in self._allowed:
                raise ImageLoadError("not_allowed", url, f"host {host} is not Label Studio's and not in "
                                     "LSAL_IMAGE_HOSTS")
            with self._http.stream("GET", url) as response:
                response.raise_for_status()
                return read_capped(response, max_bytes)
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            raise ImageLoadError("not_found" if code in (404, 410) else "http_error", url,
                                 f"HTTP {code}") from None
        except httpx.HTTPError as exc:
            raise ImageLoadError("unreachable", url, f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            if isinstance(exc, ImageLoadError):
                raise
            raise ImageLoadError("too_large", url, str(exc)) from None

    def load(self, url: str, size: int, channels: int) -> np.ndarray:
        """The task image as a (size, size, channels) uint8 array."""
        image = decode_image(self.fetch(url), mode="L" if channels == 1 else "RGB", source=url)
        image = resize(image, (size, size))
        return image[..., None] if image.ndim == 2 else image

    def load_many(self, items: list[tuple[int, str]], size: int, channels: int,
                  workers: int = 8) -> tuple[list[int], np.ndarray, list[Skipped]]:
        """Load (task id, url) pairs concurrently: (ids loaded, (N, size, size, C) uint8, skipped tasks)."""

        def one(item: tuple[int, str]) -> np.ndarray | Skipped:
            try:
                return self.load(item[1], size, channels)
            except ImageLoadError as exc:
                return Skipped(item[0], exc.reason, exc.detail)

        ids, images, skipped = [], [], []
        for (task, _), out in zip(items, self._executor(workers).map(one, items)):
            if isinstance(out, Skipped):
                skipped.append(out)
            else:
                ids.append(task)
                images.append(out)
        array = np.stack(images) if images else np.zeros((0, size, size, channels), dtype=np.uint8)
        return ids, array, skipped
