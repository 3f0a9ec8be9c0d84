"""The task-kind registry and the predicate search that picks a project's kind from its labeling config."""

from __future__ import annotations

from plugins.kinds.base import LabelConfig, TaskKind, UnsupportedConfigError
from plugins.registry import Registry

KINDS: Registry[type[TaskKind]] = Registry("task kind")
register = KINDS.register


def kind_for(config: LabelConfig) -> TaskKind:
    """The first registered kind (in registration order) that matches `config`; UnsupportedConfigError naming
    the kinds served and what each needs when none does."""
    for name in KINDS.registered():
        kind = KINDS.get(name).match(config)
        if kind is not None:
            return kind
    served = "; ".join(f"{KINDS.get(n).title} ({n}): {KINDS.get(n).needs}" for n in KINDS.registered())
    controls = sorted({f"<{c.tag}>" for c in config.controls}) or ["none"]
    objects = sorted({f"<{o.tag}>" for o in config.objects}) or ["none"]
    raise UnsupportedConfigError(f"no task kind serves this labeling config (controls {', '.join(controls)}, "
                                 f"objects {', '.join(objects)}); served: {served}")
