"""The logistic model fits in the span of its labeled rows when features outnumber labels (plugins.models.linear
row_space): the same optimum as the fit on every feature, checked against scikit-learn on the full features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from plugins.models import build_model
from plugins.models.linear import row_space


def test_the_basis_is_orthonormal_and_spans_the_rows():
    z = np.random.default_rng(0).normal(size=(6, 40))
    basis = row_space(z)
    assert basis.shape == (40, 6)
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(z @ basis @ basis.T, z, atol=1e-10)  # every row is inside the span
    assert row_space(np.ones((50, 8))) is None  # more rows than features: fit as they are
    rank_two = np.outer(np.arange(1, 7), np.ones(40)) + np.outer(np.ones(6), np.arange(40))
    assert row_space(rank_two).shape == (40, 2)  # dependent rows: only their rank


@pytest.mark.parametrize("multilabel", [False, True])
def test_fitting_in_the_span_gives_the_full_fits_probabilities(multilabel):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 300)) + np.repeat(rng.normal(size=(4, 300)), 10, axis=0)
    y = np.repeat(np.arange(4), 10)
    targets = np.stack([y % 2 == 0, y >= 2], axis=1).astype(np.uint8) if multilabel else y
    model = build_model("logistic", 2 if multilabel else 4, committee=1, multilabel=multilabel, max_iter=5000)
    model.fit(x, targets)
    x_new = rng.normal(size=(25, 300)) + np.repeat(rng.normal(size=(5, 300)), 5, axis=0)
    z, z_new = model.embed(x), model.embed(x_new)
    if multilabel:
        full = np.stack([LogisticRegression(max_iter=5000, tol=1e-8).fit(z, targets[:, j]).predict_proba(z_new)[:, 1]
                         for j in range(2)], axis=1)
    else:
        full = LogisticRegression(max_iter=5000, tol=1e-8).fit(z, y).predict_proba(z_new)
    # both solvers stop at a tolerance (the model's at scikit-learn's default 1e-4), so the probabilities agree to
    # about 0.01; a wrong basis (weights outside the rows' span, or a lost direction) is off by far more
    np.testing.assert_allclose(model.predict_proba(x_new), full, atol=0.03)
    assert np.abs(model.predict_proba(x_new) - full).mean() < 0.01
