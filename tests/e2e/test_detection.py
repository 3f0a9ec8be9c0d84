"""Object detection end to end: a real Label Studio project whose <RectangleLabels> lets annotators draw
boxes on defect images; our worker trains a torchvision detector on the boxes drawn through the REST API,
the pre-annotations are boxes with their own region scores, and Label Studio's /next serves the first task
of the detection strategy's order."""

from __future__ import annotations

import base64

import pytest

from stack.annotator import rectangles_config
from stack.defects import write_defect_images
from stack.http import Client

# a small, fast detector: 64 px images, from scratch, 2 epochs. It learns little (tests/models/test_detector.py
# checks that the detector learns); here every box it reports is shown (a tiny floor and threshold), so the
# test checks what reaches Label Studio: boxes of the config, each with its score
THRESHOLD = 0.001
DEFAULTS = {"strategy": {"name": "box_uncertainty"},
            "model": {"name": "detector", "params": {"pretrained": "none", "epochs": 2, "batch_size": 4,
                                                     "box_floor": THRESHOLD / 2, "max_boxes": 5}},
            "image_size": 64, "channels": 3, "retrain_every": 8, "min_labels": 8, "label_threshold": THRESHOLD}


@pytest.fixture
def defect_images(digit_images):
    """40 synthetic defect images beside the digits, served by the same allow-listed image server."""
    data = write_defect_images(digit_images.dir, 40, size=64, seed=3)
    urls = [f"{digit_images.base_url}/{p.name}" for p in data.paths]
    return urls, {url: boxes for url, boxes in zip(urls, data.boxes)}, data.labels


def test_a_detection_project_trains_on_drawn_boxes_pre_annotates_boxes_with_scores_and_serves_the_strategys_first(
        stack_factory, defect_images):
    urls, truth, labels = defect_images
    config = rectangles_config(labels, name="defect", to_name="img")
    stack = stack_factory(defaults=DEFAULTS)
    tasks = stack.create_project(urls, title="defects as boxes", label_config=config)
    labeled = stack.label_next(8, truth)
    assert any(truth[tasks[t]] for t in labeled)

    status = stack.first_of_order_is_next(300)
    version = status["versions"][-1]
    assert version["version"] == "v1" and version["labeled"] == 8 and version["kind"] == "image_detection"
    assert sum(version["class_counts"].values()) == sum(len(truth[tasks[t]]) for t in labeled)  # boxes
    assert version["primary_metric"] == "holdout_map_50"
    assert status["published"]["strategy"]["name"] == "box_uncertainty"

    # every unlabeled task has a prediction of the live version: boxes of the config, each with a score
    live = status["published"]["model_version"]
    assert stack.prediction_counts()[live] == len(tasks) - len(labeled)
    regions = []
    for task in [t for t in tasks if t not in labeled]:
        prediction = next(p for p in stack.annotator.predictions(task) if p["model_version"] == live)
        regions += prediction["result"]
    assert regions, "the detector showed no box above the threshold on any unlabeled image"
    for region in regions:
        assert (region["from_name"], region["to_name"], region["type"]) == ("defect", "img", "rectanglelabels")
        assert region["value"]["rectanglelabels"][0] in labels and THRESHOLD <= region["score"] <= 1.0
        v = region["value"]
        assert 0 <= v["x"] <= v["x"] + v["width"] <= 100.0001 and 0 <= v["y"] <= v["y"] + v["height"] <= 100.0001

    # /predict, as Label Studio calls it, answers with boxes and scores too
    backend = Client(stack.url, {"Authorization": "Basic " + base64.b64encode(
        ":".join(stack.ml_auth).encode()).decode()})
    unlabeled = [t for t in tasks if t not in labeled][:10]
    body = backend.call("POST", "/predict", "predict", json={
        "tasks": [{"id": t, "data": {"image": tasks[t]}} for t in unlabeled], "project": f"{stack.project}.1",
        "label_config": config})
    assert len(body["results"]) == len(unlabeled)
    assert all(r["type"] == "rectanglelabels" and "score" in r for res in body["results"] for r in res["result"])

    # the next round: labels drawn in /next order retrain, and the new order is what /next serves
    stack.label_next(8, truth)
    stack.wait(lambda: stack.status()["current_version"] == "v2", 300, "v2")
    status = stack.first_of_order_is_next(300)
    assert status["versions"][-1]["labeled"] == 16
    assert {"holdout_map_50", "holdout_map", "holdout_image_recall"} <= set(status["versions"][-1]["metrics"])


def test_setup_of_a_detection_project_seeds_a_detector_and_a_box_strategy(stack_factory, defect_images):
    """A project whose defaults fit classification only gets the detector and a box strategy at /setup."""
    urls, truth, labels = defect_images
    stack = stack_factory()  # the fast classification defaults
    stack.new_project("boxes", rectangles_config(labels, name="defect", to_name="img"))
    backend = Client(stack.url, {"Authorization": "Basic " + base64.b64encode(
        ":".join(stack.ml_auth).encode()).decode()})
    r = backend.post("/setup", {"project": f"{stack.project}.1", "schema": rectangles_config(labels)})
    assert r.status == 200, r.text
    settings = stack.admin(f"{stack.project}/settings")
    assert settings["model"]["name"] == "detector" and settings["strategy"]["name"] == "box_uncertainty", settings
