"""Deep ensembles (Lakshminarayanan et al., NeurIPS 2017): M image classifiers from different seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from plugins.models.registry import MODELS
from plugins.models.base import Augment, ModelPlugin, Progress
from plugins.models.classifier import ClassifierParams, ImageClassifier, ImagesLike
from plugins.strategies import Input, InvalidParamsError, PoolInputs


class EnsembleParams(ClassifierParams):
    """Hyperparameters of the ensemble: the member count and the members' own settings."""

    members: int = Field(5, ge=2, le=100, description="M: members, trained from seeds seed, seed+1, ...")


@MODELS.register("ensemble")
class DeepEnsemble(ModelPlugin):
    """M image classifiers that differ only in their seed (initialisation, sampling, dropout).

    samples (N, M, C) are the members' probabilities, probs their mean: the committee that query-by-committee
    (Seung et al., COLT 1992) and ensemble BALD (Beluch et al., CVPR 2018) need. Embeddings, labeled
    embeddings and the head come from member 0: the members' embedding spaces are not aligned, so they cannot
    be averaged, and one member's space is a consistent stand-in for the ensemble's. Members inherit
    `multilabel`: samples are then the members' per-label sigmoids and probs their per-label mean.
    """

    Params = EnsembleParams
    provides = frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS,
                          Input.LABELED_LABELS, Input.HEAD})

    def __init__(self, n_classes: int, **params: Any) -> None:
        super().__init__(n_classes, **params)
        member_params = self.params.model_dump(exclude={"members"})
        self.members = [ImageClassifier(n_classes, **(member_params | {"seed": self.params.seed + i}))
                        for i in range(self.params.members)]
        self.provides = self.members[0].provides

    def fit(self, x: ImagesLike, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        results = []
        for i, member in enumerate(self.members):
            report = None if progress is None else _tagged(progress, i, len(self.members))
            results.append(member.fit(x, y, report, augment))
        common = set.intersection(*(set(r) for r in results))
        metrics = {key: float(np.mean([r[key] for r in results])) for key in sorted(common)}
        return metrics | {"members": float(len(self.members))}

    def predict_proba(self, x: ImagesLike) -> np.ndarray:
        return np.mean([m.predict_proba(x) for m in self.members], axis=0)

    def pool_inputs(self, x_pool: ImagesLike, needs: frozenset[Input], x_labeled: ImagesLike,
                    y_labeled: np.ndarray) -> PoolInputs:
        first = self.members[0].pool_inputs(x_pool, needs - {Input.SAMPLES}, x_labeled, y_labeled)
        loss_needed = Input.PREDICTED_LOSS in needs
        rest = [m.forward_pass(x_pool, predicted_loss=loss_needed) for m in self.members[1:]]
        member_probs = np.stack([first.probs, *(r["probs"] for r in rest)], axis=1)
        values: dict[str, Any] = {"probs": member_probs.mean(axis=1)}
        if Input.SAMPLES in needs:
            values["samples"] = member_probs
        if loss_needed:
            losses = [first.predicted_loss, *(r["predicted_loss"] for r in rest)]
            values["predicted_loss"] = np.mean(losses, axis=0)
        for name in ("embeddings", "labeled_embeddings", "head"):
            if getattr(first, name) is not None:
                values[name] = getattr(first, name)
        return PoolInputs(labeled_labels=first.labeled_labels, n_classes=self.n_classes,
                          multilabel=self.params.multilabel, **values)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"members": len(self.members)}
        for i, member in enumerate(self.members):
            state |= {f"member{i}.{k}": v for k, v in member.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("members") != len(self.members):
            raise InvalidParamsError(
                f"the saved ensemble has {state.get('members')} members but the params say "
                f"{len(self.members)}"
            )
        for i, member in enumerate(self.members):
            prefix = f"member{i}."
            member.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def _tagged(progress: Progress, member: int, members: int) -> Progress:
    """A progress callback that adds the member index (0-based) and count to every report."""
    return lambda report: progress(report | {"member": member, "members": members})
