"""Shared fixtures: synthetic but internally consistent pools for the acquisition engine."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from plugins.strategies import PoolInputs


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def build_pool(n: int = 120, c: int = 4, k: int = 8, d: int = 16, n_labeled: int = 20, seed: int = 0,
               dropout: float = 0.3, dtype: type = np.float64) -> PoolInputs:
    """A pool whose inputs agree with each other: class clusters in embedding space, a linear head,
    MC-dropout samples from that head, their mean as probabilities, labeled items from every class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(c, d))
    y_pool = rng.integers(0, c, size=n)
    emb = centers[y_pool] + rng.normal(size=(n, d))
    y_lab = np.arange(n_labeled) % c
    lab_emb = centers[y_lab] + rng.normal(size=(n_labeled, d))
    weight = rng.normal(scale=0.5, size=(c, d))
    bias = rng.normal(scale=0.1, size=c)
    masks = rng.random((k, n, d)) > dropout
    logits = np.einsum("knd,cd->nkc", masks * emb[None] / (1 - dropout), weight) + bias
    samples = _softmax(logits)
    probs = samples.mean(axis=1)
    w_t, b_t = torch.as_tensor(weight), torch.as_tensor(bias)

    def head(z: torch.Tensor) -> torch.Tensor:
        return z @ w_t.to(z).T + b_t.to(z)

    return PoolInputs(
        probs=probs.astype(dtype), samples=samples.astype(dtype), embeddings=emb.astype(dtype),
        labeled_embeddings=lab_emb.astype(dtype), labeled_labels=y_lab,
        predicted_loss=rng.gamma(2.0, size=n).astype(dtype), head=head,
    )


@pytest.fixture
def make_pool() -> Callable[..., PoolInputs]:
    """Factory for consistent synthetic pools (see build_pool)."""
    return build_pool


# ---------------------------------------------------------------------------------------------------------
# Redis: a private redis-server per test session (never the system one on 6379), flushed before each test.
# ---------------------------------------------------------------------------------------------------------

import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _free_tcp_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server child process on 127.0.0.1:<port>, no persistence, data dir in a temp folder.

    `stop()`, `start()` and `restart()` (same port, empty data) let fault tests take Redis away and bring it
    back; `client()` returns a fresh `redis.Redis` for the server's db 0."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None, startup_timeout: float = 10.0):
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = port or _free_tcp_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.workdir / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs):
        import redis

        kwargs.setdefault("socket_timeout", 5)
        return redis.Redis.from_url(self.url, **kwargs)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
               "--logfile", str(self.log_path), "--protected-mode", "yes"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                self.proc = None
                raise RuntimeError(f"redis-server on port {self.port} exited at startup:\n{log}")
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                                 socket_connect_timeout=1) as probe:
                    if probe.ping():
                        return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                   f"within {self.startup_timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: nothing is persisted)."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server for the session: `.url`, `.port`, `.client()`, `.stop()`, `.start()`,
    `.restart()`. Skips when the redis-server binary or the `redis` package is missing."""
    pytest.importorskip("redis", reason="the `redis` package is not installed (pip install redis rq)")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found on PATH (apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    server = None
    for attempt in range(3):  # another process may grab the port between picking and binding
        server = RedisServer(binary, workdir)
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """URL of the session's private Redis, emptied (FLUSHALL) before the test; restarts it if a test
    left it stopped."""
    if not redis_server.running:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def review_record() -> dict:
    """What the review job stores (worker/review.py): two of three labels flagged."""
    items = [{"task": 11, "rank": 1, "given": "ok", "predicted": "scratch", "confidence": 0.97,
              "given_probability": 0.02, "quality": 0.02, "issue_score": 0.98, "flagged": True},
             {"task": 12, "rank": 2, "given": "dent", "predicted": "stain", "confidence": 0.8,
              "given_probability": 0.1, "quality": 0.1, "issue_score": 0.9, "flagged": True},
             {"task": 13, "rank": 3, "given": "ok", "predicted": "ok", "confidence": 0.9,
              "given_probability": 0.9, "quality": 0.9, "issue_score": 0.1, "flagged": False}]
    return {"version": "v3", "created_at": 1.7e9, "kind": "image_classification", "model": "logistic",
            "labeled": 3, "reviewed": 3, "flagged": 2, "folds": 2, "method": "confident learning",
            "multilabel": False, "not_reviewed": [], "skipped": 0, "items": items}


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A real S3-compatible server (moto's, over HTTP on 127.0.0.1) with a bucket "lsal"; its endpoint URL."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is part of the test extra")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lsal")
    yield endpoint
    server.stop()
