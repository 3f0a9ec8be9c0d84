"""A folder of images served over HTTP from 127.0.0.1: quiet, threaded, started and stopped by the harness.

`ImageServer(folder).start()` serves from a daemon thread of this process; `ImageServer(folder,
in_process=False, log_path=...)` from a child process of its own (own GIL, stopped by PID: the load
benchmark's clients would otherwise compete with it). Either way HTTP/1.1 keep-alive, TCP_NODELAY and a
listen backlog of 256: with http.server's defaults (HTTP/1.0, backlog 5) 64 concurrent fetches overflow
the backlog and wait for TCP's 1 s SYN retransmit, and keep-alive without TCP_NODELAY waits ~40 ms per
image for a delayed ACK (headers and body leave in two writes).

    python -m stack.images PORT FOLDER      # what the child process runs
"""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from stack.processes import REPO, ManagedProcess, free_port


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no access log, HTTP/1.1 keep-alive (idle connections closed after a minute)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


class FolderServer(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


def make_server(folder: Path, port: int = 0, host: str = "127.0.0.1") -> FolderServer:
    return FolderServer((host, port), partial(QuietHandler, directory=str(folder)))


class ImageServer:
    """`folder` over HTTP on 127.0.0.1:`port` (a free one when None); `.host`, `.base_url`, `.url(path)`."""

    def __init__(self, folder: Path, port: int | None = None, *, in_process: bool = True,
                 log_path: Path | None = None) -> None:
        self.folder = Path(folder)
        self.in_process = in_process
        self.server: FolderServer | None = None
        self.thread: threading.Thread | None = None
        self.process: ManagedProcess | None = None
        if in_process:
            self.server = make_server(self.folder, port or 0)
            self.port = self.server.server_address[1]
        else:
            self.port = port or free_port()
            self.process = ManagedProcess("image server", [sys.executable, "-m", "stack.images", str(self.port),
                                                           str(self.folder)],
                                          Path(log_path) if log_path else self.folder.parent / "images.log",
                                          cwd=REPO)

    @property
    def host(self) -> str:
        """host:port, as LSAL_IMAGE_HOSTS wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def url(self, path: Path | str) -> str:
        """The URL of a file in the folder (by its name)."""
        return f"{self.base_url}/{Path(path).name}"

    def urls(self, paths: Iterable[Path | str]) -> list[str]:
        return [self.url(p) for p in paths]

    def start(self, timeout: float = 30.0) -> ImageServer:
        """Serve; a child process is waited for until it answers."""
        if self.server is not None:
            self.thread = threading.Thread(target=self.server.serve_forever, name=f"images-{self.port}", daemon=True)
            self.thread.start()
        else:
            self.process.start()
            self.process.wait_http(f"{self.base_url}/", timeout=timeout)
        return self

    def stop(self) -> None:
        if self.server is not None:
            if self.thread is not None and self.thread.is_alive():
                self.server.shutdown()
            self.server.server_close()
            if self.thread is not None:
                self.thread.join(timeout=5)
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    port, folder = int(argv[0]), Path(argv[1])
    make_server(folder, port).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
