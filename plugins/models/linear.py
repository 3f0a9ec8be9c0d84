"""A multinomial logistic-regression model on feature vectors (one binary model per label when multi-label),
with a bootstrap committee."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from pydantic import Field
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from plugins.models.registry import MODELS
from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress, label_strata
from plugins.strategies import Input, InvalidParamsError, PoolInputs

# Logit given to classes absent from a training set: their probability is ~1e-13, never exactly 0.
UNSEEN_LOGIT = -30.0


class LinearState:
    """Weights of one linear classifier in the full class space: softmax over classes, or one sigmoid per
    label when `multilabel`."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, multilabel: bool = False) -> None:
        self.weight, self.bias, self.multilabel = weight, bias, multilabel

    def logits(self, z: np.ndarray) -> np.ndarray:
        """(N, C) logits of standardized features z."""
        return z @ self.weight.T + self.bias

    def proba(self, z: np.ndarray) -> np.ndarray:
        """(N, C) softmax probabilities (per-label sigmoids when multilabel) of standardized features z."""
        logits = self.logits(z)
        if self.multilabel:
            return sigmoid(logits)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_linear(z: np.ndarray, y: np.ndarray, n_classes: int, c: float, max_iter: int) -> LinearState:
    """Fit multinomial logistic regression on standardized features; classes absent from y get ~0 mass."""
    weight = np.zeros((n_classes, z.shape[1]))
    bias = np.full(n_classes, UNSEEN_LOGIT)
    seen = np.unique(y)
    if len(seen) == 1:
        bias[seen[0]] = 0.0
        return LinearState(weight, bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(z, y)
    if len(seen) == 2:  # sklearn's binary case has one row of weights for the second class
        weight[seen[1]], bias[seen[1]] = clf.coef_[0], clf.intercept_[0]
        weight[seen[0]], bias[seen[0]] = 0.0, 0.0
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    return LinearState(weight, bias)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def constant_logit(positives: int, n: int) -> float:
    """Logit of the smoothed positive rate (positives + 1/2) / (n + 1): near 0 or 1 for a label that was
    always negative or always positive in n items, never exactly 0 or 1."""
    return float(np.log((positives + 0.5) / (n - positives + 0.5)))


def fit_per_label(z: np.ndarray, targets: np.ndarray, c: float, max_iter: int) -> LinearState:
    """One binary logistic regression per label of (N, C) 0/1 targets on standardized features; a label with
    one value only in the targets gets a constant probability (see `constant_logit`)."""
    n_labels = targets.shape[1]
    weight = np.zeros((n_labels, z.shape[1]))
    bias = np.zeros(n_labels)
    for label in range(n_labels):
        y = targets[:, label]
        positives = int(y.sum())
        if positives in (0, len(y)):
            bias[label] = constant_logit(positives, len(y))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=c, max_iter=max_iter).fit(z, y)
        weight[label], bias[label] = clf.coef_[0], clf.intercept_[0]
    return LinearState(weight, bias, multilabel=True)


def row_space(z: np.ndarray, rtol: float = 1e-10) -> np.ndarray | None:
    """(D, r) orthonormal basis of the span of z's rows when D > N (None otherwise). An L2-regularized linear
    model's optimal weights lie in that span (the representer theorem: a component orthogonal to every row
    changes no training logit and only adds to the penalty), so fitting on z @ basis and lifting the weights
    back is the same optimum, with r <= N features instead of D."""
    n, d = z.shape
    if d <= n or n == 0:
        return None
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    keep = singular > rtol * max(float(singular[0]), 1e-300) if len(singular) else singular > 0
    return vt[keep].T


def lifted(state: LinearState, basis: np.ndarray | None) -> LinearState:
    """`state` fitted on z @ basis, as weights on z itself."""
    if basis is None:
        return state
    return LinearState(state.weight @ basis.T, state.bias, state.multilabel)


def stratified_bootstrap(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap resample drawn within each class, so every member sees every labeled class."""
    return np.concatenate([rng.choice(np.flatnonzero(y == c), size=int((y == c).sum())) for c in np.unique(y)])


def feature_matrix(x: np.ndarray) -> np.ndarray:
    """(N, D) float64 features; (N, H, W[, C]) images are flattened."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))  # -1 cannot size an empty batch


@MODELS.register("logistic")
class LogisticModel(ModelPlugin):
    """Logistic regression on features (or on embeddings from a frozen network); a committee of
    `committee` members, each fitted on a class-stratified bootstrap resample, gives the per-item samples
    that BALD, BatchBALD and QBC need. Multi-label: one binary logistic regression per label, bootstrap
    resamples stratified by each item's rarest positive label, `head` gives the per-label logits."""

    class Params(ModelParams):
        c: float = Field(1.0, gt=0, description="inverse L2 regularisation strength")
        committee: int = Field(8, ge=1, le=100, description="bootstrap members for samples (QBC / BALD)")
        max_iter: int = Field(300, ge=1, le=100_000, description="solver iterations")

    provides = frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS,
                          Input.LABELED_LABELS, Input.HEAD})
    reads_vectors = True

    def __init__(self, n_classes: int, **params) -> None:
        super().__init__(n_classes, **params)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.state: LinearState | None = None
        self.members: list[LinearState] = []

    def sample_problem(self) -> str | None:
        return self._too_few_samples("committee")

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Standardized features (images are flattened): the embedding strategies see."""
        if self.mean is None:
            raise RuntimeError("the model is not trained yet")
        return (feature_matrix(x) - self.mean) / self.scale

    def fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        if augment is not None:
            raise InvalidParamsError("the logistic model trains on feature vectors; image augmentation does not apply")
        x = feature_matrix(x)
        y = self.check_targets(y, len(x))
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        # floor at the mean spread: a feature that barely varies in a small labeled set is not blown up
        self.scale = np.maximum(std, std.mean() + 1e-12)
        z = self.embed(x)
        p = self.params
        basis = row_space(z)  # high-dimensional embeddings, few labels: fit in the span of the labeled rows
        zr = z if basis is None else z @ basis
        self.state = lifted(self._fit_one(zr, y), basis)
        rng = np.random.default_rng(p.seed)
        strata = label_strata(y) if p.multilabel else y
        self.members = []
        for member in range(p.committee):
            idx = stratified_bootstrap(strata, rng)  # a member's rows lie in the same span
            self.members.append(lifted(self._fit_one(zr[idx], y[idx]), basis))
            if progress:
                progress({"phase": "committee", "member": member + 1, "of": p.committee})
        return {"train_accuracy": self._accuracy(z, y), "labels": float(len(y))}

    def _fit_one(self, z: np.ndarray, y: np.ndarray) -> LinearState:
        """One classifier: multinomial, or one binary regression per label when multilabel."""
        p = self.params
        if p.multilabel:
            return fit_per_label(z, y, p.c, p.max_iter)
        return fit_linear(z, y, self.n_classes, p.c, p.max_iter)

    def _accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        """Training accuracy: of the argmax, or of every label decision (p >= 0.5) when multilabel."""
        probs = self.state.proba(z)
        if self.params.multilabel:
            return float(((probs >= 0.5) == (y > 0)).mean())
        return float((probs.argmax(axis=1) == y).mean())

    def state_dict(self) -> dict:
        if self.state is None:
            raise RuntimeError("the model is not trained yet")
        states = [self.state, *self.members]
        return {"mean": torch.as_tensor(self.mean), "scale": torch.as_tensor(self.scale),
                "weights": torch.as_tensor(np.stack([s.weight for s in states])),
                "biases": torch.as_tensor(np.stack([s.bias for s in states])),
                "multilabel": self.params.multilabel}

    def load_state_dict(self, state: dict) -> None:
        multilabel, saved = self.params.multilabel, state.get("multilabel", False)  # old files: single-label
        if saved != multilabel:
            raise InvalidParamsError(f"the saved model has multilabel={saved!r} but the params say {multilabel!r}")
        self.mean, self.scale = state["mean"].numpy(), state["scale"].numpy()
        states = [LinearState(w, b, multilabel)
                  for w, b in zip(state["weights"].numpy(), state["biases"].numpy())]
        self.state, self.members = states[0], states[1:]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.state is None:
            raise RuntimeError("the model is not trained yet")
        return self.state.proba(self.embed(x))

    def pool_inputs(self, x_pool: np.ndarray, needs: frozenset[Input], x_labeled: np.ndarray,
                    y_labeled: np.ndarray) -> PoolInputs:
        if self.state is None:
            raise RuntimeError("the model is not trained yet")
        self.check_sample_count(needs, "committee")
        z = self.embed(x_pool)
        values: dict = {"probs": self.state.proba(z)}
        if Input.SAMPLES in needs:
            values["samples"] = np.stack([m.proba(z) for m in self.members], axis=1)
        if needs & {Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.HEAD}:
            values["embeddings"] = z
            values["labeled_embeddings"] = self.embed(x_labeled)
        if Input.HEAD in needs:
            weight = torch.as_tensor(self.state.weight)
            bias = torch.as_tensor(self.state.bias)
            values["head"] = lambda e: e @ weight.to(e).T + bias.to(e)
        multilabel = self.params.multilabel
        labels = np.asarray(y_labeled, dtype=np.uint8 if multilabel else np.int64)
        return PoolInputs(labeled_labels=labels, n_classes=self.n_classes, multilabel=multilabel, **values)
