"""Images uploaded into Label Studio (/data/upload/...) are fetched by the worker with the API token."""

from __future__ import annotations

from stack.settings import FAST_SETTINGS

FAST = {**FAST_SETTINGS, "strategy": {"name": "entropy"}}


def test_uploaded_images_train_and_get_ranked(stack_factory, digit_images):
    stack = stack_factory(defaults=FAST, LSAL_IMAGE_HOSTS="")  # no other host allowed: only Label Studio's own
    paths = digit_images.paths[:30]
    tasks = stack.create_project_from_files(paths)
    assert len(tasks) == 30 and all(url.startswith("/data/upload/") for url in tasks.values())
    # Label Studio renames uploads (a random prefix + the original name): map back by the original name
    label_of = {p.name: digit_images.labels[i] for i, p in enumerate(digit_images.paths)}
    truth = {url: label_of[url.rsplit("-", 1)[-1]] for url in tasks.values()}
    stack.label_next(10, truth)
    status = stack.wait(lambda: (s := stack.status())["published"] and s, 120, "a publication")
    assert status["skipped"] == [] and status["versions"][0]["labeled"] == 10
    assert stack.prediction_counts()[status["published"]["model_version"]] == 20
