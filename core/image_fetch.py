"""Task images: from Label Studio (uploads, local files, with the token) or allow-listed hosts, bounded.

Bounds: a download has LSAL_IMAGE_TIMEOUT_S from connecting to the last byte and at most
LSAL_IMAGE_MAX_BYTES; an image has at most LSAL_IMAGE_MAX_PIXELS (read from its header, before decoding) and
is shrunk while decoding when it is large; a /predict request decodes at most LSAL_REQUEST_MAX_PIXELS; each
call downloads at most LSAL_IMAGE_THREADS images at once from a pool shared by all calls, so one request's
slow images never hold up another's; at most two large images are decoded at once in a process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np

from core.config import Settings
from core.ls_client import LabelStudioClient, read_capped
from plugins.images import ImageLoadError, decode_image, header_pixels, resize

LARGE_PIXELS = 4_000_000  # decodes above this take the process-wide gate
_DECODE_GATE = threading.BoundedSemaphore(2)
_POOL_THREADS = 64
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


@dataclass(frozen=True)
class Skipped:
    """A task left out of training or scoring, with the reason `lsal status` shows."""

    task: int
    reason: str
    detail: str


def check_url(url: object) -> str:
    """`url` if it is a usable image reference; ImageLoadError ('no_image', 'bad_url', 'unsupported_url')."""
    if not isinstance(url, str) or not url:
        raise ImageLoadError("no_image", repr(url)[:80], "the task has no image URL in its data")
    if len(url) > 8192 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ImageLoadError("bad_url", repr(url[:80]), "the URL holds control characters or is over 8 KiB")
    if url.startswith("/"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageLoadError("unsupported_url", url[:200], f"{parts.scheme or 'no'} scheme; http(s) URLs and "
                             "Label Studio paths are supported")
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0..65535)
    except ValueError as exc:
        raise ImageLoadError("bad_url", url[:200], f"bad port: {exc}") from None
    if not parts.hostname:
        raise ImageLoadError("bad_url", url[:200], "the URL names no host")
    return url


def _host(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


def _trim_heap() -> None:
    """Give freed memory back to the OS after a large decode (glibc keeps it in its arenas otherwise)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


class ImageFetcher:
    """Fetches and decodes task images; only Label Studio's host and LSAL_IMAGE_HOSTS are reachable."""

    def __init__(self, settings: Settings, ls: LabelStudioClient | None) -> None:
        self.settings, self.ls = settings, ls
        self._ls_host = _host(settings.label_studio_url)
        self._allowed = {self._ls_host} | {h if ":" in h else f"{h}:80" for h in settings.image_hosts} | {
            f"{h}:443" for h in settings.image_hosts if ":" not in h}
        timeout = settings.image_timeout_s
        # one read may take a quarter of the deadline; the deadline itself is checked between reads
        self._http = httpx.Client(timeout=httpx.Timeout(timeout / 4, connect=min(timeout, 5.0)),
                                  follow_redirects=False)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Release connections and the download threads."""
        self._http.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        """One pool of download threads for the fetcher's life (a pool per call grew the heap under load)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=_POOL_THREADS, thread_name_prefix="lsal-image")
            return self._pool

    def fetch(self, url: str) -> bytes:
        """The bytes behind a task's image URL; ImageLoadError (reason 'not_allowed', 'timeout', ...)."""
        url = check_url(url)
        max_bytes, timeout = self.settings.image_max_bytes, self.settings.image_timeout_s
        deadline = time.monotonic() + timeout
        try:
            if url.startswith("/"):  # /data/upload/..., /data/local-files/?d=...: served by Label Studio
                if self.ls is None:
                    raise ImageLoadError("not_allowed", url, "a Label Studio path, but no Label Studio client")
                return self.ls.file_bytes(url, max_bytes, timeout / 4, deadline)
            host = _host(url)
            if host == self._ls_host and self.ls is not None:
                return self.ls.file_bytes(url, max_bytes, timeout / 4, deadline)
            if host not in self._allowed:
                raise ImageLoadError("not_allowed", url, f"host {host} is not Label Studio's and not in "
                                     "LSAL_IMAGE_HOSTS")
            with self._http.stream("GET", url) as response:
                response.raise_for_status()
                return read_capped(response, max_bytes, deadline)
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            raise ImageLoadError("not_found" if code in (404, 410) else "http_error", url,
                                 f"HTTP {code}") from None
        except httpx.TimeoutException:
            raise ImageLoadError("timeout", url, f"no complete answer within {timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ImageLoadError("unreachable", url, f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise ImageLoadError("timeout", url, f"the download took longer than {timeout:g} s") from None
        except ValueError as exc:
            if isinstance(exc, ImageLoadError):
                raise
            raise ImageLoadError("too_large", url, str(exc)) from None

    def decode(self, data: bytes, size: int, channels: int, source: str) -> np.ndarray:
        """Downloaded bytes as a (size, size, channels) uint8 array (ImageLoadError when unusable)."""
        mode = "L" if channels == 1 else "RGB"
        pixels = header_pixels(data) or 0
        max_pixels = self.settings.image_max_pixels
        if pixels > LARGE_PIXELS:
            with _DECODE_GATE:
                try:
                    image = decode_image(data, mode=mode, source=source, max_pixels=max_pixels, target=(size, size))
                finally:
                    _trim_heap()
        else:
            image = decode_image(data, mode=mode, source=source, max_pixels=max_pixels, target=(size, size))
        image = resize(image, (size, size))
        return image[..., None] if image.ndim == 2 else image

    def load(self, url: str, size: int, channels: int) -> np.ndarray:
        """The task image as a (size, size, channels) uint8 array."""
        return self.decode(self.fetch(url), size, channels, url)

    def load_many(self, items: list[tuple[int, str]], size: int, channels: int,
                  pixel_budget: int | None = None) -> tuple[list[int], np.ndarray, list[Skipped]]:
        """Load (task id, url) pairs, LSAL_IMAGE_THREADS at a time: (ids loaded, (N, size, size, C) uint8,
        skipped tasks). With `pixel_budget`, images past that many decoded source pixels are skipped."""
        budget = [pixel_budget]
        budget_lock = threading.Lock()

        def one(item: tuple[int, str]) -> np.ndarray | Skipped:
            try:
                data = self.fetch(item[1])
                if budget[0] is not None:
                    pixels = header_pixels(data) or 0
                    with budget_lock:
                        if pixels > budget[0]:
                            return Skipped(item[0], "too_large", f"the request's pixel budget "
                                           f"(LSAL_REQUEST_MAX_PIXELS={pixel_budget}) is spent")
                        budget[0] -= pixels
                return self.decode(data, size, channels, item[1])
            except ImageLoadError as exc:
                return Skipped(item[0], exc.reason, exc.detail)

        results: dict[int, np.ndarray | Skipped] = {}
        window = self.settings.image_threads
        pool = self._executor()
        running: dict[Future, int] = {}
        queued = iter(enumerate(items))
        for index, item in queued:  # at most `window` of this call's downloads in flight at a time
            running[pool.submit(one, item)] = index
            if len(running) >= window:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
        for future in running:
            results[running[future]] = future.result()
        ids, images, skipped = [], [], []
        for index, (task, _) in enumerate(items):
            out = results[index]
            if isinstance(out, Skipped):
                skipped.append(out)
            else:
                ids.append(task)
                images.append(out)
        array = np.stack(images) if images else np.zeros((0, size, size, channels), dtype=np.uint8)
        return ids, array, skipped
