"""Label quality through a real Label Studio: a flipped label is flagged by the review and listed in its Data
Manager tab, and tasks the model is sure of get confident pre-labels, served after every other task.

An annotator labels 180 digits through Label Studio's REST API, one of them with a wrong class; the admin
starts a retrain; the worker trains, publishes (confident pre-labels marked), and reviews the labels out of
fold. The test reads what a reviewer and an annotator see in Label Studio: the review tab's tasks (Label
Studio applies its own filter on our data fields), the reasons in the tasks' data, the predictions, /next.
"""

from __future__ import annotations

from stack.settings import fast_settings

# target 0.9 at 90% confidence needs 33 held-out labels above the threshold: 54 are held out of 180
DEFAULTS = fast_settings(retrain_every=100_000, task_fields=True, review=True, review_folds=3,
                         confident_target=0.9, confident_level=0.9, holdout_fraction=0.3)
LABELED = 180


def _view_tasks(stack, title: str) -> list[dict]:
    """The tasks of the project's Data Manager tab `title`, as Label Studio filters and orders them."""
    views = [v for v in stack.ok(stack.ls.get(f"/api/dm/views/?project={stack.project}"), "views")
             if v["data"].get("title") == title]
    assert len(views) == 1, [v["data"].get("title") for v in views]
    answer = stack.ok(stack.ls.get(f"/api/tasks/?project={stack.project}&view={views[0]['id']}&page_size=500"),
                      f"the tasks of the {title!r} tab")
    return answer["tasks"]


def test_a_flipped_label_is_flagged_in_the_review_tab_and_sure_tasks_get_confident_pre_labels_served_last(
        stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS)
    tasks = stack.create_project(digit_images.urls)
    truth = dict(zip(digit_images.urls, digit_images.labels))
    ids = sorted(tasks)
    flipped = next(t for t in ids[:LABELED] if truth[tasks[t]] == "0")
    wrong = "8"
    annotations = {}
    for task in ids[:LABELED]:
        annotations[task] = stack.label({"id": task}, wrong if task == flipped else truth[tasks[task]])
    stack.wait(lambda: stack.status()["events"].get("ANNOTATION_CREATED", 0) >= LABELED, 60, "the webhooks")

    stack.admin(f"{stack.project}/train", "POST")  # (the first labels trained early versions already)

    def done(s: dict) -> bool:
        newest = s["versions"][-1] if s["versions"] else {}
        return (newest.get("labeled") == LABELED and s["published"] and s["published"]["version"] ==
                newest["version"] == s["current_version"] and
                # the job's result, not the stored review: the job writes the tasks' fields after storing it
                ((s.get("review") or {}).get("last_job") or {}).get("version") == newest["version"])

    status = stack.wait(lambda: (s := stack.status()) and done(s) and s, 240, "the 180-label version published "
                                                                               "and reviewed")

    # the review: the flipped label is flagged, shown in the review tab with its reason, and left as it was
    review = stack.admin(f"{stack.project}/review")["review"]
    assert review["reviewed"] == LABELED and review["flagged"] >= 1
    item = next(i for i in stack.admin(f"{stack.project}/review")["items"] if i["task"] == flipped)
    assert item["given"] == wrong and item["predicted"] == "0" and item["flagged"], item
    in_tab = _view_tasks(stack, "lsal review")
    assert flipped in [t["id"] for t in in_tab]
    assert len(in_tab) == review["flagged"]
    assert [t["data"]["lsal_issue_rank"] for t in in_tab] == sorted(t["data"]["lsal_issue_rank"] for t in in_tab)
    data = next(t for t in in_tab if t["id"] == flipped)["data"]
    assert data["lsal_issue_given"] == wrong and data["lsal_issue_model_label"] == "0"
    assert f"label '{wrong}' doubted" in data["lsal_issue_reason"] and "says '0'" in data["lsal_issue_reason"]
    kept = stack.ok(stack.ls.get(f"/api/annotations/{annotations[flipped]['id']}/"), "the flipped annotation")
    assert kept["result"] == annotations[flipped]["result"]  # nothing an annotator wrote is changed

    # confident pre-labels: a threshold from the held-out labels, the sure tasks marked and served last
    confident = status["confident"]
    assert confident["threshold"] is not None, confident
    assert confident["lower_bound"] >= 0.9 and confident["above"] >= confident["needed"] == 33 and confident["held_out"] == 54
    assert 0 < confident["pool_above"] < confident["pool"] == len(ids) - LABELED, confident
    live = status["published"]["model_version"]
    sure = {t["id"]: t for t in _view_tasks(stack, "lsal confident")}
    assert len(sure) == confident["pool_above"]
    unlabeled = {t["id"]: t for t in stack.annotator.tasks(stack.project) if t["id"] not in annotations}
    ranks = {t: u["data"]["lsal_rank"] for t, u in unlabeled.items()}
    unsure = len(unlabeled) - len(sure)
    assert sorted(ranks[t] for t in sure) == list(range(unsure + 1, len(unlabeled) + 1))  # after every other
    task = next(iter(sure))
    assert unlabeled[task]["data"]["lsal_confident"] == 1
    assert unlabeled[task]["data"]["lsal_reason"].startswith("lsal: confident pre-label")
    prediction = next(p for p in stack.predictions(task) if p["model_version"] == live)
    region = prediction["result"][0]
    assert region["value"]["choices"] == [unlabeled[task]["data"]["lsal_prediction"]]  # accepted in one click
    assert region["meta"]["text"][0].startswith("lsal: confident pre-label")
    assert stack.next_task()["id"] not in sure  # Label Studio serves an unsure task first

    out = stack.lsal("status", "--project", str(stack.project))
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join(out.stdout.split())  # rich wraps long lines at the terminal's width
    assert (f"held-out precision {confident['precision']:.3f} ({confident['above']} of 54 held-out labels above it)"
            in text and f"{confident['pool_above']} of {confident['pool']} unlabeled tasks" in text), out.stdout

    # the admin lets confident pre-labels become labels: the next publication saves them as marked annotations
    # that Label Studio exports, that trigger no retrain and that no version trains on
    events = stack.status()["events"].get("ANNOTATION_CREATED", 0)
    stack.admin(f"{stack.project}/settings", "PATCH", {"confident_export": True})
    stack.admin(f"{stack.project}/rescore", "POST")
    status = stack.wait(lambda: (s := stack.status())["published"]["model_version"] != live and
                        (s["confident"] or {}).get("exported") and s, 120, "the exporting publication")
    exported = status["confident"]["exported"]
    assert exported["error"] is None and exported["saved"] == exported["of"] == status["confident"]["pool_above"]
    saved = {t: stack.ok(stack.ls.get(f"/api/tasks/{t}/annotations/"), "annotations") for t in sure}
    assert all(len(a) == 1 and a[0]["result"][0]["lsal_auto"]["version"] == status["current_version"]
               for a in saved.values()), saved
    export = stack.ok(stack.ls.get(f"/api/projects/{stack.project}/export?exportType=JSON"), "the export")
    exported_labels = {t["id"]: t["annotations"][0]["result"][0]["value"]["choices"] for t in export
                       if t["id"] in sure}
    assert exported_labels == {t: [unlabeled[t]["data"]["lsal_prediction"]] for t in sure}
    stack.wait(lambda: stack.status()["events"].get("ANNOTATION_CREATED", 0) >= events + len(sure), 60,
               "the webhooks of the saved pre-labels")
    assert stack.status()["changes_since_training"] == 0 and not stack.status()["queue"]["pending"]

    # a person corrects one saved pre-label: it is a human label now, and the next version trains on it
    corrected, annotation = next(iter(saved.items()))
    other = next(c for c in map(str, range(10)) if [c] != exported_labels[corrected])
    stack.ok(stack.ls.patch(f"/api/annotations/{annotation[0]['id']}/",
                            json={"result": stack.interface.result(other)}), "correct a saved pre-label")
    stack.admin(f"{stack.project}/train", "POST")
    stack.wait(lambda: (s := stack.status())["versions"][-1]["labeled"] == LABELED + 1 and s, 120,
               "the version with the corrected label")
