"""A project's labeling config -> its task kind (plugins.kinds), parsed with label-studio-sdk."""

from __future__ import annotations

from functools import lru_cache
from xml.etree import ElementTree

from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.label_interface.interface import (
    LabelStudioValidationErrorSentryIgnored,
    LabelStudioXMLSyntaxErrorSentryIgnored,
    LSConfigParseException,
)

from plugins.kinds import LabelConfig, Tag, TaskKind, UnsupportedConfigError, kind_for

__all__ = ["UnsupportedConfigError", "kind_of", "parse_config"]


def parse_config(label_config: str) -> LabelConfig:
    """The control and object tags of a labeling config; UnsupportedConfigError for a missing or broken one."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise UnsupportedConfigError("the project has no labeling config")
    try:
        interface = LabelInterface(label_config)
        values = _label_values(label_config)
    except (LabelStudioXMLSyntaxErrorSentryIgnored, LabelStudioValidationErrorSentryIgnored, LSConfigParseException,
            ElementTree.ParseError, ValueError, KeyError) as exc:
        raise UnsupportedConfigError(f"the labeling config is not valid XML: {exc}") from None
    controls = tuple(Tag(c.tag.lower(), str(c.name), tuple(str(t) for t in c.to_name or ()), None,
                         values.get(str(c.name), tuple(str(label) for label in c.labels)), dict(c.attr or {}))
                     for c in interface.controls)
    objects = tuple(Tag(o.tag.lower(), str(o.name), (), str(o.value), (), dict(o.attr or {}))
                    for o in interface.objects)
    return LabelConfig(controls, objects)


def _label_values(label_config: str) -> dict[str, tuple[str, ...]]:
    """Each named tag's children's `value`s in config order, duplicates kept (the SDK folds them into one)."""
    root = ElementTree.fromstring(label_config)
    return {str(tag.get("name")): tuple(str(child.get("value")) for child in tag if child.get("value") is not None)
            for tag in root.iter() if tag.get("name") and len(tag)}


@lru_cache(maxsize=256)
def kind_of(label_config: str) -> TaskKind:
    """The task kind a labeling config is served as (cached: /predict asks for every request)."""
    return kind_for(parse_config(label_config))
