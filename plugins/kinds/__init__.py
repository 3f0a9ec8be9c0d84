"""Task kinds: one per served kind of Label Studio labeling config, chosen by predicate over the config.

A new kind is one module here that subclasses TaskKind and registers itself (docs/architecture.md says what
else, if anything, it needs: an input loader in core/inputs.py for a new input type, a model plugin).
"""

from __future__ import annotations

from plugins.kinds.base import LabelConfig, Tag, TaskKind, UnsupportedConfigError, UnusableAnswer
from plugins.kinds.registry import KINDS, kind_for, register
from plugins.kinds import classification, detection  # noqa: E402,F401  (registers the built-in kinds, in match order)

__all__ = ["KINDS", "LabelConfig", "Tag", "TaskKind", "UnsupportedConfigError", "UnusableAnswer", "kind_for",
           "register"]
