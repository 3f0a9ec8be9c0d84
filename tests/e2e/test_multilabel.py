"""Multi-label image classification end to end: a real Label Studio project whose <Choices choice="multiple">
lets annotators tick several labels; our backend and worker train independent per-label outputs, the
pre-annotations tick several labels, and Label Studio's /next serves the strategy's first task."""

from __future__ import annotations

import base64
import json

from stack.annotator import choices_config
from stack.http import Client

LABELS = ("even", "large", "loop")  # properties of the digit in the image: several hold at once
MULTI = choices_config(LABELS, name="props", to_name="img", multiple=True)
DEFAULTS = {"strategy": {"name": "entropy"}, "model": {"name": "logistic", "params": {"committee": 2}},
            "image_size": 16, "channels": 1, "retrain_every": 10, "min_labels": 10}


def _properties(digit: str) -> list[str]:
    d = int(digit)
    return [name for name, holds in zip(LABELS, (d % 2 == 0, d >= 5, d in (0, 6, 8, 9))) if holds]


def test_a_multi_label_project_trains_pre_annotates_several_labels_and_serves_the_strategys_first_task(
        stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS)
    tasks = stack.create_project(digit_images.urls[:80], title="defects, several per image", label_config=MULTI)
    truth = {url: _properties(digit) for url, digit in zip(digit_images.urls, digit_images.labels)}
    assert any(len(v) >= 2 for v in truth.values()) and any(not v for v in truth.values())
    labeled = stack.label_next(10, truth)

    status = stack.first_of_order_is_next()
    version = status["versions"][-1]
    assert version["version"] == "v1" and version["labeled"] == 10
    assert sum(version["class_counts"].values()) == sum(len(truth[tasks[t]]) for t in labeled)  # per label
    assert status["published"]["strategy"]["name"] == "entropy"

    # every unlabeled task has a prediction of the live version that ticks the labels over the threshold
    live = status["published"]["model_version"]
    assert stack.prediction_counts()[live] == len(tasks) - len(labeled)
    ticked = []
    for task in [t for t in tasks if t not in labeled][:30]:
        prediction = next(p for p in stack.annotator.predictions(task) if p["model_version"] == live)
        (region,) = prediction["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == ("props", "img", "choices")
        assert set(region["value"]["choices"]) <= set(LABELS)
        ticked.append(len(region["value"]["choices"]))
    assert max(ticked) >= 2, ticked  # several labels ticked in the pre-annotations

    # /predict, as Label Studio calls it, answers with several choices too, and says the label entropy
    backend = Client(stack.url, {"Authorization": "Basic " + base64.b64encode(
        ":".join(stack.ml_auth).encode()).decode()})
    unlabeled = [t for t in tasks if t not in labeled][:20]
    body = backend.call("POST", "/predict", "predict", json={
        "tasks": [{"id": t, "data": {"image": tasks[t]}} for t in unlabeled], "project": f"{stack.project}.1",
        "label_config": MULTI})
    results = body["results"]
    assert len(results) == len(unlabeled) and max(len(r["result"][0]["value"]["choices"]) for r in results) >= 2

    # the next round, with class-conditional augmentation: a stained copy of every 'even' image joins the
    # training side; labels in /next order retrain, and the new order is what /next serves
    stack.admin(f"{stack.project}/settings", "PATCH",
                {"augment": [{"augmentation": "stain", "source": ["even"], "per_item": 1.0}]})
    labeled += stack.label_next(10, truth)
    stack.wait(lambda: stack.status()["current_version"] == "v2", 180, "v2")
    status = stack.first_of_order_is_next()
    assert status["versions"][-1]["labeled"] == 20 and status["versions"][-1]["kind"] == "image_multilabel"
    augmentation = status["versions"][-1]["augmentation"]
    # the served model trains on the training side of the stable held-out split (the promotion gate)
    sides = json.loads(stack.redis().get(f"lsal:p:{stack.project}:holdout"))["sides"]
    trained = [t for t in labeled if not sides[str(t)]]
    evens = sum("even" in truth[tasks[t]] for t in trained)
    assert augmentation["real"] == len(trained) < 20 and augmentation["synthetic"] == [evens] and evens > 0, \
        augmentation
    metrics = status["versions"][-1]["metrics"]
    assert {"holdout_micro_f1", "holdout_macro_f1", "holdout_recall[even]"} <= set(metrics), metrics


def test_setup_accepts_both_classification_kinds_and_refuses_a_config_no_kind_serves(stack_factory):
    stack = stack_factory(defaults=DEFAULTS)
    stack.new_project("kinds", MULTI)
    backend = Client(stack.url, {"Authorization": "Basic " + base64.b64encode(
        ":".join(stack.ml_auth).encode()).decode()})
    for config in (MULTI, choices_config(LABELS)):
        r = backend.post("/setup", {"project": f"{stack.project}.1", "schema": config})
        assert r.status == 200, r.text
    boxes = ('<View><Image name="img" value="$image"/><TextArea name="t" toName="img"/></View>')
    r = backend.post("/setup", {"project": f"{stack.project}.1", "schema": boxes})
    assert r.status == 422 and "image_multilabel" in r.text and "image_classification" in r.text, r.text
