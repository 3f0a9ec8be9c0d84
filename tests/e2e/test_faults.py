"""Faults injected into the real stack: a worker SIGKILLed mid-training or mid-publish, Label Studio answering
5xx during publish, two workers on one project. Nothing half-written is ever served or made live."""

from __future__ import annotations

import http.server
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from stack.settings import FAST_SETTINGS

TRUTH_SIZE = 60
SLOW_CNN = {"name": "cnn", "params": {"mc_samples": 2, "train": {"epochs": 10000, "min_epoch_items": 4096}}}
DEFAULTS = {**FAST_SETTINGS, "image_size": 16}


class FaultProxy:
    """A real HTTP proxy in front of Label Studio that fails or holds chosen requests."""

    def __init__(self, target: str) -> None:
        self.target, self.rules, self.seen = target, [], []
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append(f"{self.command} {self.path}")
                for method, pattern, action in list(proxy.rules):
                    if method == self.command and re.search(pattern, self.path):
                        if action == "hang":
                            proxy.release.wait(120)
                        self._reply(500, b'{"detail": "injected fault"}', "application/json")
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(proxy.target + self.path, data=body, headers=headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        self._reply(r.status, r.read(), r.headers.get("content-type", ""))
                except urllib.error.HTTPError as e:
                    self._reply(e.code, e.read(), e.headers.get("content-type", ""))

            def _reply(self, code: int, data: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("content-type", ctype or "application/octet-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args):  # noqa: D102
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(label_studio):
    p = FaultProxy(label_studio.url)
    yield p
    p.close()


def _first_version(stack, digit_images) -> dict:
    """Project with 60 tasks, 10 labeled in /next order, v1 published; the truth map."""
    stack.create_project(digit_images.urls[:TRUTH_SIZE])
    truth = dict(zip(digit_images.urls, digit_images.labels))
    stack.label_next(10, truth)
    stack.wait(lambda: stack.status()["published"], 120, "v1 to publish")
    return truth


def _consistent(stack) -> dict:
    """The live publication is Label Studio's model_version and covers every unlabeled task."""
    status = stack.status()
    live = status["published"]["model_version"]
    assert stack.ls_model_version() == live
    assert stack.prediction_counts()[live] == status["unlabeled"], (stack.prediction_counts(), status["unlabeled"])
    return status


def _kill(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.proc.wait(10)


def test_worker_killed_mid_training_loses_nothing_and_the_retry_publishes(stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS, LSAL_LOCK_LEASE_S="5")
    _first_version(stack, digit_images)
    live = _consistent(stack)["published"]["model_version"]
    stack.admin(f"{stack.project}/settings", "PATCH", {"model": SLOW_CNN})
    job = stack.admin(f"{stack.project}/train", "POST")["job"]
    stack.wait(lambda: any(j["id"] == job and str(j.get("phase", "")).startswith("train")
                           for j in stack.status()["queue"]["running"]), 120, "training to start")
    time.sleep(1)
    _kill(stack.worker)
    killed_at = time.time()

    # the previous version keeps serving; nothing partial was written or made live
    status = stack.status()
    assert status["current_version"] == "v1" and stack.ls_model_version() == live
    assert sorted(p.name for p in (stack.model_dir / f"project-{stack.project}").iterdir()
                  if p.suffix in (".pt", ".tmp")) == ["v1.pt"]

    # our abandoned-job handling: the dead job's project lock lapses (its lease), reconciliation re-runs it
    stack.admin(f"{stack.project}/settings", "PATCH", {"model": DEFAULTS["model"]})  # fast model for the rerun
    redis = Redis.from_url(stack.env["REDIS_URL"])
    deadline = time.monotonic() + 60
    while redis.exists(f"lsal:p:{stack.project}:lock") and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(max(0.0, 16 - (time.time() - killed_at)))
    out = stack.lsal("reconcile", "--project", str(stack.project))
    assert out.returncode == 0 and job in out.stdout and "retrain queued" in out.stdout, out.stdout
    stack.start_worker()
    status = stack.wait(lambda: (s := stack.status())["published"]["model_version"] != live and s, 180,
                        "the retried job to publish", fail_fast=False)
    assert status["current_version"] not in (None, "v1") and int(status["current_version"][1:]) >= 2
    _consistent(stack)


def test_label_studio_5xx_during_publish_never_goes_half_live(stack_factory, digit_images, proxy):
    stack = stack_factory(ls_url=proxy.url, defaults=DEFAULTS)
    _first_version(stack, digit_images)
    live = _consistent(stack)["published"]["model_version"]
    proxy.rules.append(("PATCH", rf"^/api/projects/{stack.project}/?$", "500"))
    stack.admin(f"{stack.project}/rescore", "POST")
    status = stack.wait(lambda: ((s := stack.status()).get("last_rescore") or {}).get("status") == "failed" and s,
                        120, "the rescore to fail", fail_fast=False)
    assert "HTTP 500" in status["last_rescore"]["error"]  # a readable reason in lsal status
    assert stack.ls_model_version() == live
    assert set(stack.prediction_counts()) == {live}  # the half-imported version was deleted
    proxy.rules.clear()  # Label Studio recovers: the retry (10 s later) publishes a consistent order
    status = stack.wait(lambda: (s := stack.status())["published"]["model_version"] != live and s, 120,
                        "the retry to publish", fail_fast=False)
    _consistent(stack)


def test_worker_killed_mid_publish_leaves_the_old_order_live_and_the_orphan_is_pruned(stack_factory, digit_images,
                                                                                       proxy):
    stack = stack_factory(ls_url=proxy.url, defaults=DEFAULTS, LSAL_LOCK_LEASE_S="5")
    _first_version(stack, digit_images)
    live = _consistent(stack)["published"]["model_version"]
    proxy.rules.append(("PATCH", rf"^/api/projects/{stack.project}/?$", "hang"))
    proxy.seen.clear()
    stack.admin(f"{stack.project}/rescore", "POST")
    deadline = time.monotonic() + 60
    while not any(s.startswith("PATCH /api/projects/") for s in proxy.seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    _kill(stack.worker)  # the predictions are imported; the switch to them was in flight
    proxy.release.set()
    orphans = [v for v in stack.prediction_counts() if v != live and v.startswith("lsal-")]
    assert len(orphans) == 1 and stack.ls_model_version() == live
    proxy.rules.clear()
    stack.start_worker()
    StartedJobRegistry(queue=Queue("lsal", connection=Redis.from_url(stack.env["REDIS_URL"]))).cleanup(
        timestamp=time.time() + 3600 + 120)  # RQ's maintenance, clock past the dead SimpleWorker's entry
    stack.admin(f"{stack.project}/rescore", "POST")
    stack.wait(lambda: (stack.status().get("last_rescore") or {}).get("model_version") not in (None, live, orphans[0]),
               180, "a new publication, pruned", fail_fast=False)
    status = _consistent(stack)
    assert orphans[0] not in stack.prediction_counts()  # pruned: never live, not kept
    assert status["published"]["model_version"] != orphans[0]


def test_two_workers_never_train_one_project_at_once_and_versions_increase(stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS)
    stack.start_worker()
    _first_version(stack, digit_images)
    stack.admin(f"{stack.project}/settings", "PATCH",  # a training of several seconds: long enough to overlap
                {"model": {"name": "cnn", "params": {"mc_samples": 2, "train": {"epochs": 15,
                                                                                 "min_epoch_items": 2048}}}})
    jobs = [stack.admin(f"{stack.project}/train", "POST")["job"]]
    stack.wait(lambda: (q := stack.status()["queue"]) and "retrain" not in q["pending"] and
               any(j["id"] == jobs[0] for j in q["running"]), 60, "the first retrain to hold the lock",
               fail_fast=False)
    jobs.append(stack.admin(f"{stack.project}/train", "POST")["job"])
    assert jobs[0] != jobs[1]
    from core.queueing import fetch_job

    redis = Redis.from_url(stack.env["REDIS_URL"])
    # a job's result is stored after it returns, a moment after it switched the version: wait for both
    stack.wait(lambda: all(fetch_job(redis, j).get_status() == "finished" for j in jobs), 180, "both retrains",
               fail_fast=False)
    assert stack.status()["current_version"] == "v3"
    results = [fetch_job(redis, j).return_value() for j in jobs]
    assert [r["version"] for r in results] == ["v2", "v3"]
    assert results[1]["locked_at"] >= results[0]["finished_at"]  # the second waited for the project lock


def test_redis_restarted_with_its_data_lost_the_worker_reconnects_and_versions_keep_increasing(
        stack_factory, digit_images, redis_server):
    stack = stack_factory(defaults=DEFAULTS)
    truth = _first_version(stack, digit_images)
    redis_server.restart()  # no persistence here: everything Redis held is gone (the worst case)
    time.sleep(2)
    assert stack.worker.running and stack.backend.running
    stack.label_next(10, truth)  # the webhooks reach the backend again; the counters say 20 labeled, 0 trained
    # with Redis's memory gone, the first events after the restart find no version and retrain at once
    stack.wait(lambda: (s := stack.status())["published"] and s["published"]["version"] == s["current_version"],
               180, "a publication after the restart", fail_fast=False)
    stack.admin(f"{stack.project}/train", "POST")  # and a retrain now reads every annotation Label Studio holds
    status = stack.wait(lambda: (s := stack.status())["versions"][-1]["labeled"] == 20 and
                        s["published"]["version"] == s["current_version"] and s, 180,
                        "a publication trained on all 20 labels", fail_fast=False)
    numbers = [int(v["version"][1:]) for v in status["versions"]]
    assert min(numbers) >= 2 and numbers == sorted(numbers)  # numbered after the artifact on disk, not v1 again
    # the worker registered itself again at its first heartbeat after the loss: listed for status and dashboards
    assert status["queue"]["workers"] == 1, status["queue"]
    assert "Redis lost this worker's record" in stack.worker.log_tail(10**6)
    assert (stack.model_dir / f"project-{stack.project}" / "v1.pt").exists()
    _consistent(stack)
