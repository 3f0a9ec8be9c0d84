"""Synthetic defect images with their exact boxes as PNG files: what the detection demo and tests label.

The images and boxes come from `plugins.detection_data.detection_defects` (defects drawn on textured
backgrounds, about a third of the images defect-free); a box is a `stack.annotator.Box`, the way an
annotator draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
