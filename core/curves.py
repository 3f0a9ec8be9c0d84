"""A project's learning curve: held-out accuracy and macro-F1 of each model version against its labels."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve_png(project: int, versions: list[dict[str, Any]]) -> bytes:
    """PNG bytes of labels (x) vs held-out accuracy and macro-F1 (y), one point per version, annotated."""
    points = [(v.get("labeled"), (v.get("metrics") or {}).get("holdout_accuracy"),
               (v.get("metrics") or {}).get("holdout_macro_f1"), v.get("version")) for v in versions]
    points = [p for p in points if isinstance(p[0], int) and isinstance(p[1], (int, float))]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        if points:
            labels, acc, f1, names = zip(*points)
            ax.plot(labels, acc, "o-", label="held-out accuracy")
            if all(isinstance(v, (int, float)) for v in f1):
                ax.plot(labels, f1, "s--", label="held-out macro-F1")
            for x, y, name in zip(labels, acc, names):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
            ax.legend(loc="lower right")
        else:
            ax.text(0.5, 0.5, "no version with a held-out measurement yet", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set(xlabel="labeled tasks", ylabel="score", ylim=(0, 1.05), title=f"project {project}: learning curve")
        ax.grid(alpha=0.3)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)
