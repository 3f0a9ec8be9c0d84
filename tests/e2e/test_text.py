"""Text classification end to end: a real Label Studio project of real quotations (<Text> + <Choices>), whose
tasks the frozen MiniLM encoder embeds once into the per-task cache; the worker trains the logistic head on
the cached embeddings, the pre-annotations name a category, /next serves the strategy's first task, and a
retrain or a rescore embeds nothing twice (a task whose text changed is embedded again)."""

from __future__ import annotations

import base64
import io

import numpy as np

from plugins.datasets import fortunes
from stack.annotator import choices_config
from stack.http import Client

CATEGORIES = ("computers", "food", "startrek")
TEXT = choices_config(CATEGORIES, name="topic", to_name="quote", data_key="text", object_tag="Text")
DEFAULTS = {"strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 2}},
            "retrain_every": 10, "min_labels": 10}


def _cached_rows(stack) -> tuple[int, int]:
    """(rows, distinct task ids) over every segment of the project's embedding cache (the model directory)."""
    files = sorted(stack.model_dir.rglob("embeddings/*/project-*/seg-*.npz"))
    ids = [np.load(io.BytesIO(f.read_bytes()), allow_pickle=False)["ids"] for f in files]
    joined = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    return len(joined), len(np.unique(joined))


def test_a_text_project_embeds_each_task_once_trains_on_the_cache_and_serves_the_strategys_first_task(
        stack_factory):
    data = fortunes(categories=CATEGORIES)
    rng = np.random.default_rng(0)
    per_topic = [rng.choice(np.flatnonzero(data.y_train == c), 20, replace=False) for c in range(len(CATEGORIES))]
    picked = [int(p[k]) for k in range(20) for p in per_topic]  # imported in turn: the first 10 cover the topics
    texts = [str(data.x_train[i]) for i in picked]
    truth = {t: CATEGORIES[int(data.y_train[i])] for t, i in zip(texts, picked)}
    assert len(set(truth)) == len(texts) and len({truth[t] for t in texts[:10]}) == len(CATEGORIES)
    stack = stack_factory(defaults=DEFAULTS)
    tasks = stack.create_project(texts, title="quotations by topic", label_config=TEXT)
    settings = stack.admin(f"{stack.project}/settings")
    assert settings["encoder"]["name"] == "minilm" and settings["model"]["name"] == "logistic", settings

    labeled = stack.label_next(10, truth)
    status = stack.first_of_order_is_next()
    version = status["versions"][-1]
    assert version["version"] == "v1" and version["kind"] == "text_classification" and version["labeled"] == 10
    live = status["published"]["model_version"]
    assert stack.prediction_counts()[live] == len(tasks) - len(labeled)
    right = 0
    unlabeled = [t for t in tasks if t not in labeled]
    for task in unlabeled:
        prediction = next(p for p in stack.annotator.predictions(task) if p["model_version"] == live)
        (region,) = prediction["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == ("topic", "quote", "choices")
        right += region["value"]["choices"] == [truth[tasks[task]]]
    # MiniLM separates these topics from 8 trained labels (0.65-0.9 offline; a guess or the majority class is
    # right about a third of the time, and so are embeddings paired with the wrong tasks)
    assert right / len(unlabeled) > 0.5, right / len(unlabeled)
    rows, distinct = _cached_rows(stack)
    assert rows == distinct == len(tasks), (rows, distinct)  # every task embedded, once

    # /predict, as Label Studio calls it, reads the cached embeddings and names a category
    backend = Client(stack.url, {"Authorization": "Basic " + base64.b64encode(
        ":".join(stack.ml_auth).encode()).decode()})
    body = backend.call("POST", "/predict", "predict", json={
        "tasks": [{"id": t, "data": {"text": tasks[t]}} for t in unlabeled[:5]], "project": f"{stack.project}.1",
        "label_config": TEXT})
    assert [r["result"][0]["value"]["choices"][0] in CATEGORIES for r in body["results"]] == [True] * 5, body

    # a text edited in Label Studio is embedded again at the next retrain; nothing else is
    edited = unlabeled[-1]
    stack.annotator.call("PATCH", f"/api/tasks/{edited}", "edit a task's text",
                         {"data": {"text": tasks[edited] + " (edited)"}})
    labeled += stack.label_next(10, truth)
    stack.wait(lambda: stack.status()["current_version"] == "v2", 180, "v2")
    stack.first_of_order_is_next()
    rows, distinct = _cached_rows(stack)
    assert (rows, distinct) == (len(tasks) + 1, len(tasks)), (rows, distinct)
