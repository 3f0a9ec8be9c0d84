"""Label Studio's REST API as an admin and an annotator use it: the one harness of the demo, the benchmarks
and the end-to-end tests.

* `choices_config` / `DIGITS_LABEL_CONFIG`: labeling configs (an Image and a Choices tag, single or
  multiple choice); `LabelingInterface.parse` reads the names a result needs back out of any such config.
* `Annotator(url, token)`: create a project, import tasks by URL or upload files, list tasks, connect an
  ML backend (basic auth, as an admin does in Settings -> Model), ask for the next task (/next), submit an
  annotation with one or several choices, read predictions, the project's model version and the model
  versions of its predictions, webhooks.
* `LabelStudio`: a local Label Studio process (`stack.processes.LabelStudioServer`) with its REST API at
  hand (`get` / `post` / `patch` / `delete` answer a `stack.http.Response`) and an `annotator()`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.http import Client, HttpError, Response, Verbs, token_auth, upload_files
from stack.processes import LabelStudioServer

ML_TITLE = "lsal"
UPLOAD_CHUNK = 100  # files per upload request: Label Studio refuses more (DATA_UPLOAD_MAX_NUMBER_FILES)


def choices_config(values: Iterable[str], *, name: str = "label", to_name: str = "image", data_key: str = "image",
                   multiple: bool = False, inline: bool = False, object_tag: str = "Image") -> str:
    """A labeling config: one Image (or `object_tag`, e.g. Text) of `$data_key` and one Choices tag over
    `values` (checkboxes when `multiple`, radio buttons in one line when `inline`)."""
    choices = "".join(f'<Choice value="{v}"/>' for v in values)
    attrs = ' choice="multiple"' if multiple else (' choice="single-radio" showInLine="true"' if inline else "")
    return (f'<View><{object_tag} name="{to_name}" value="${data_key}"/>'
            f'<Choices name="{name}" toName="{to_name}"{attrs}>'
            f"{choices}</Choices></View>")


DIGITS = [str(d) for d in range(10)]
DIGITS_LABEL_CONFIG = choices_config(DIGITS)  # the digits projects of the tests and the benchmarks
DIGITS_DEMO_CONFIG = choices_config(DIGITS, inline=True)  # the demo's: radio buttons in one line


def rectangles_config(values: Iterable[str], *, name: str = "label", to_name: str = "image",
                      data_key: str = "image") -> str:
    """A labeling config: one Image (`$data_key`) and one RectangleLabels tag over `values` (boxes)."""
    labels = "".join(f'<Label value="{v}"/>' for v in values)
    return (f'<View><Image name="{to_name}" value="${data_key}"/><RectangleLabels name="{name}" '
            f'toName="{to_name}">{labels}</RectangleLabels></View>')


# a box an annotator draws: (label, x0, y0, x1, y1), corners relative to the image (0..1)
Box = tuple[str, float, float, float, float]


@dataclass(frozen=True)
class LabelingInterface:
    """What an annotation of a Choices- or RectangleLabels-over-Image config names: its control tag
    (`from_name`, `control`), the Image it labels (`to_name`), the task field of the image (`data_key`), the
    labels and whether several choices may be ticked."""

    from_name: str = "label"
    to_name: str = "image"
    data_key: str = "image"
    choices: tuple[str, ...] = tuple(DIGITS)
    multiple: bool = False
    control: str = "choices"  # or "rectanglelabels"

    @classmethod
    def parse(cls, config: str) -> LabelingInterface:
        """The first Choices or RectangleLabels tag of `config` and the Image it labels; ValueError when there
        is none."""
        root = ET.fromstring(config)
        tag = next((el for el in root.iter() if el.tag in ("Choices", "RectangleLabels")), None)
        if tag is None:
            raise ValueError("the label config has no Choices or RectangleLabels tag")
        to_name = tag.get("toName", "")
        image = next((el for el in root.iter() if el.get("name") == to_name), None)
        value = image.get("value", "") if image is not None else ""
        return cls(from_name=tag.get("name", ""), to_name=to_name, data_key=value.lstrip("$") or "image",
                   choices=tuple(c.get("value", "") for c in tag.iter() if c.tag in ("Choice", "Label")),
                   multiple=tag.get("choice") == "multiple", control=tag.tag.lower())

    def result(self, answer: str | Sequence[str] | Sequence[Box]) -> list[dict[str, Any]]:
        """An annotation result: ticking `answer` (one label, or a list of them), or for a RectangleLabels
        config drawing the boxes `answer` lists (an empty list: nothing here)."""
        if self.control == "rectanglelabels":
            return [{"from_name": self.from_name, "to_name": self.to_name, "type": "rectanglelabels",
                     "value": {"x": 100 * x0, "y": 100 * y0, "width": 100 * (x1 - x0), "height": 100 * (y1 - y0),
                               "rotation": 0, "rectanglelabels": [label]}}
                    for label, x0, y0, x1, y1 in answer]  # type: ignore[misc]
        picked = [answer] if isinstance(answer, str) else list(answer)
        return [{"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                 "value": {"choices": picked}}]


DIGITS_INTERFACE = LabelingInterface()


class Annotator:
    """One Label Studio's REST API with an API token; failed calls raise `error` (HttpError by default)
    naming the step."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, error: type[Exception] = HttpError) -> None:
        self.client = Client(url, token_auth(token), name="Label Studio", timeout=timeout, error=error)

    def call(self, method: str, path: str, what: str, json: Any = None, **kw: Any) -> Any:
        return self.client.call(method, path, what, json=json, **kw)

    # -- the admin ----------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self.call("GET", "/api/current-user/whoami", "read the current user")

    def create_project(self, title: str, label_config: str = DIGITS_LABEL_CONFIG, description: str = "") -> int:
        """A new project; its id."""
        body = {"title": title, "label_config": label_config, "description": description}
        return self.call("POST", "/api/projects/", "create the project", body)["id"]

    def project(self, project: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{project}", "read the project")

    def import_urls(self, project: int, urls: Iterable[str], data_key: str = "image") -> dict[str, Any]:
        """One task per URL (`{data_key: url}`); Label Studio's import answer (`task_count`, ...)."""
        return self.call("POST", f"/api/projects/{project}/import", "import the tasks",
                         [{data_key: u} for u in urls])

    def upload(self, project: int, paths: Iterable[Path], content_type: str = "image/png") -> int:
        """One task per file, uploaded into Label Studio (the tasks point at /data/upload/...), at most
        UPLOAD_CHUNK files per request (Label Studio's DATA_UPLOAD_MAX_NUMBER_FILES is 100); the task count."""
        paths = list(paths)
        created = 0
        for start in range(0, len(paths), UPLOAD_CHUNK):
            answer = self.call("POST", f"/api/projects/{project}/import", "upload the files",
                               files=upload_files(paths[start:start + UPLOAD_CHUNK], content_type), timeout=120)
            created += int(answer.get("task_count", 0))
        return created

    def tasks(self, project: int, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every task of the project, page by page."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.call("GET", "/api/tasks/", "list the tasks",
                               params={"project": project, "page": page, "page_size": page_size})
            out += answer["tasks"]
            if not answer["tasks"] or len(out) >= answer.get("total", len(out)):
                return out
            page += 1

    def connect_ml_backend(self, project: int, url: str, user: str, password: str,
                           title: str = ML_TITLE) -> dict[str, Any]:
        """Connect an ML backend as an admin does in Settings -> Model (basic auth: Start Training works too);
        the ML backend's record (`id`, ...)."""
        return self.call("POST", "/api/ml", "connect the ML backend to the project", {
            "project": project, "url": url, "title": title, "auth_method": "BASIC_AUTH", "basic_auth_user": user,
            "basic_auth_pass": password})

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        return self.call("GET", "/api/webhooks/", "list the webhooks", params={"project": project})

    # -- the annotator ------------------------------------------------------------------------------------
    def next_task(self, project: int) -> dict[str, Any] | None:
        """The task Label Studio hands out next (/next: the lowest prediction score first); None when nothing
        is left to label."""
        task = self.call("GET", f"/api/projects/{project}/next", "ask for the next task", allow=(404,))
        return None if task == 404 else task

    def annotate(self, task: int | dict[str, Any], choices: str | Sequence[str],
                 interface: LabelingInterface = DIGITS_INTERFACE, lead_time: float = 1.0) -> dict[str, Any]:
        """Submit an annotation of `task` (its id or the task) ticking `choices` (one label or several, for
        a multi-label project); the annotation (`id`, ...)."""
        task_id = task["id"] if isinstance(task, dict) else int(task)
        return self.call("POST", f"/api/tasks/{task_id}/annotations/", f"annotate task {task_id}",
                         {"result": interface.result(choices), "lead_time": lead_time})

    def label_next(self, project: int, count: int, truth: dict[str, str | Sequence[str]],
                   interface: LabelingInterface = DIGITS_INTERFACE) -> list[dict[str, Any]]:
        """Label up to `count` tasks in Label Studio's /next order with `truth[task data]`; the tasks labeled
        (fewer when none is left)."""
        done = []
        for _ in range(count):
            task = self.next_task(project)
            if task is None:
                break
            self.annotate(task, truth[task["data"][interface.data_key]], interface)
            done.append(task)
        return done

    # -- what the model did -------------------------------------------------------------------------------
    def predictions(self, task: int) -> list[dict[str, Any]]:
        """The predictions of one task (every model version)."""
        return self.call("GET", "/api/predictions/", f"read the predictions of task {task}", params={"task": task})

    def model_version(self, project: int) -> str:
        """The model version whose predictions Label Studio serves (and orders /next by)."""
        return self.project(project)["model_version"]

    def model_versions(self, project: int) -> dict[str, int]:
        """{model version: predictions of it} of the project's predictions."""
        return self.call("GET", f"/api/projects/{project}/model-versions/", "read the model versions")


class LabelStudio(LabelStudioServer, Verbs):
    """A local Label Studio process with its REST API at hand: `request(method, path, json=None)`, `get`,
    `post`, `patch`, `delete` answer a `stack.http.Response` whatever its status; `annotator()` is the
    `Annotator` of its admin (with the token as it is now)."""

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.url, self.headers, name="Label Studio", timeout=timeout)

    def annotator(self, error: type[Exception] = HttpError, timeout: float = 60.0) -> Annotator:
        return Annotator(self.url, self.token, timeout=timeout, error=error)

    def request(self, method: str, path: str, json: Any = None, **kw: Any) -> Response:
        return self.client().request(method, path, json=json, **kw)

    def start(self, timeout: float = 90.0) -> LabelStudio:
        super().start(timeout)
        return self
