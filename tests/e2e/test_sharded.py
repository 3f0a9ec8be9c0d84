"""Sharded rescoring across several real RQ workers publishes the order of the unsharded path."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry

from stack.settings import FAST_SETTINGS

FAST = {**FAST_SETTINGS, "strategy": {"name": "badge", "params": {"batch_size": 10}},
        "model": {"name": "logistic", "params": {"committee": 3}}, "shard_size": 50}


def test_shards_on_several_workers_merge_into_the_unsharded_order(stack_factory, digit_images):
    stack = stack_factory(defaults=FAST)
    stack.start_worker()
    stack.start_worker()  # three workers share the shard jobs
    tasks = stack.create_project(digit_images.urls)
    images = dict(zip(digit_images.urls, digit_images.paths))
    labeled = set(stack.label_next(10, stack.labels))
    for strategy in ({"name": "badge", "params": {"batch_size": 10}}, {"name": "bald"}, {"name": "coreset"}):
        if strategy["name"] != "badge":
            stack.admin(f"{stack.project}/strategy", "POST", {**strategy, "now": True})
        status = stack.wait(lambda: (s := stack.status())["published"] and
                            s["published"]["strategy"]["name"] == strategy["name"] and s, 180,
                            f"the sharded {strategy['name']} rescore to publish")
        expected = stack.direct_order("v1", {**FAST, "strategy": strategy}, tasks, labeled, images)
        head = [r["task"] for r in stack.admin(f"{stack.project}/ranking?limit=200")["head"]]
        assert head == expected, strategy
        assert stack.next_task()["id"] == expected[0]
        assert stack.prediction_counts()[status["published"]["model_version"]] == len(tasks) - len(labeled)
    done = FinishedJobRegistry(queue=Queue("lsal", connection=Redis.from_url(stack.env["REDIS_URL"]))).get_job_ids()
    shards = [j for j in done if j.startswith(f"lsal-shard-p{stack.project}-")]
    assert len(shards) == 3 * 4  # 190 unlabeled tasks in shards of 50, for each of the three strategies
    workers = {r for r in (p.log_tail(10**7) for p in stack.workers) if "lsal-shard-" in r}
    assert len(workers) >= 2  # the shards really were spread over several workers
