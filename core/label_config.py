"""Which part of a Label Studio labeling config this backend serves: image classification with <Choices>."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from label_studio_sdk.label_interface import LabelInterface


class UnsupportedConfigError(ValueError):
    """A labeling config this backend cannot serve; the message says what it needs."""


@dataclass(frozen=True)
class ClassificationTarget:
    """An <Image> classified by a <Choices> control: where the image URL is and which labels exist."""

    from_name: str  # the Choices control's name
    to_name: str  # the Image object's name
    value_key: str  # task["data"][value_key] holds the image URL
    labels: tuple[str, ...]

    def result(self, label: str) -> list[dict[str, Any]]:
        """A Label Studio result choosing `label`."""
        return [{"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                 "value": {"choices": [label]}}]

    def label_of(self, result: list[dict[str, Any]]) -> str | None:
        """The label an annotation's result chose for this control, or None."""
        for region in result or []:
            if not isinstance(region, dict) or region.get("from_name") != self.from_name:
                continue
            choices = (region.get("value") or {}).get("choices") or []
            if choices and isinstance(choices[0], str):
                return choices[0]
        return None


def parse_target(label_config: str) -> ClassificationTarget:
    """The first Choices control pointing at an Image object, or UnsupportedConfigError."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise UnsupportedConfigError("the project has no labeling config")
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises lxml, KeyError or its own errors for broken XML
        raise UnsupportedConfigError(f"the labeling config is not valid XML: {exc}") from None
    images = {obj.name: obj for obj in interface.objects if obj.tag.lower() == "image"}
    found = []
    for control in interface.controls:
        found.append(control.tag)
        if control.tag.lower() != "choices":
            continue
        for to_name in control.to_name or []:
            image = images.get(to_name)
            if image is None or not str(image.value).startswith("$"):
                continue
            labels = tuple(str(label) for label in control.labels)
            if len(labels) < 2:
                raise UnsupportedConfigError(f"<Choices name={control.name!r}> needs at least 2 choices, "
                                             f"has {len(labels)}")
            if len(set(labels)) != len(labels):
                raise UnsupportedConfigError(f"<Choices name={control.name!r}> has duplicate choice values")
            return ClassificationTarget(control.name, to_name, str(image.value)[1:], labels)
    raise UnsupportedConfigError(
        "this backend serves image classification: an <Image value=\"$field\"> with a <Choices> control "
        f"whose toName names it; the config has controls {sorted(set(found)) or 'none'} and "
        f"{len(images)} image object(s)")
