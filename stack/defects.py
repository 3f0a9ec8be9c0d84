"""Synthetic surface images with scratch / stain / dent defects as PNG files: what the demo, the detection
tests and the browser tests label.

The images and boxes come from `plugins.detection_data.detection_defects` (defects drawn on textured
backgrounds, about a third of the images defect-free). `write_defect_images` keeps the boxes (a box is a
`stack.annotator.Box`, the way an annotator draws it); `prepare_defect_classes` gives each image one class
(normal, or its largest defect's) for the demo's classification project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stack.annotator import Box


@dataclass
class DefectImages:
    paths: list[Path]  # the task images, in import order
    boxes: list[list[Box]]  # each image's true boxes (empty: defect-free)
    labels: tuple[str, ...]  # the defect classes, in label-config order


def write_defect_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> DefectImages:
    """Write `n` synthetic defect images (size x size RGB PNGs) into `folder`; their paths and true boxes."""
    from PIL import Image

    from plugins.detection_data import detection_defects

    data = detection_defects(n_train=n, n_test=0, size=size, seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, boxes = [], []
    for i, (image, rows) in enumerate(zip(data.x_train, data.y_train)):
        path = folder / f"defect_{i:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
        boxes.append([(data.class_names[int(c)], float(x0), float(y0), float(x1), float(y1))
                      for c, x0, y0, x1, y1 in rows])
    return DefectImages(paths, boxes, tuple(data.class_names))


NORMAL = "normal"  # the class of a defect-free image in the demo's classification project


@dataclass
class DefectClasses:
    """The demo's data: task images with their true class, and a held-out test set prepared as the worker
    prepares images."""

    files: list[Path]  # the task images, in import order
    labels: list[str]  # the true class of each file: NORMAL or the class of its largest defect
    classes: tuple[str, ...]  # NORMAL first, then the defect classes (the labeling config's order)
    test_x: np.ndarray  # (N, image_size, image_size, 3) uint8
    test_y: np.ndarray  # (N,) int, indices into `classes`


def image_class(rows: np.ndarray) -> int:
    """The class index of an image with boxes `rows` (class, x0, y0, x1, y1): 0 when it has none, else 1 + the
    class of its largest box."""
    if len(rows) == 0:
        return 0
    areas = (rows[:, 3] - rows[:, 1]) * (rows[:, 4] - rows[:, 2])
    return 1 + int(rows[int(np.argmax(areas)), 0])


def prepare_defect_classes(folder: Path, n_tasks: int, n_test: int, size: int = 128, image_size: int = 32,
                           seed: int = 0) -> DefectClasses:
    """Write `n_tasks` synthetic surface images (size x size RGB PNGs, about a third defect-free) into `folder`
    (emptied first); a test set of `n_test` more, from other textures, prepared at `image_size`."""
    import shutil

    from PIL import Image

    from plugins.detection_data import detection_defects
    from plugins.models.classifier import prepare_images

    data = detection_defects(n_train=n_tasks, n_test=n_test, size=size, seed=seed)
    classes = (NORMAL, *data.class_names)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files, labels = [], []
    for i, (image, rows) in enumerate(zip(data.x_train, data.y_train)):
        path = folder / f"surface_{i:04d}.png"
        Image.fromarray(image).save(path)
        files.append(path)
        labels.append(classes[image_class(np.asarray(rows))])
    test_y = np.array([image_class(np.asarray(rows)) for rows in data.y_test], dtype=np.int64)
    return DefectClasses(files, labels, classes, prepare_images(data.x_test, image_size, 3), test_y)
