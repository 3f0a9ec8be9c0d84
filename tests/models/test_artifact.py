"""Model artifacts: a loaded model predicts like the saved one; bad files fail clearly; writes are atomic."""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from plugins.models import build_model
from plugins.models.artifact import FORMAT_VERSION, ArtifactError, load_artifact, save_artifact

LABELS = [f"digit {k}" for k in range(10)]


@pytest.fixture(scope="module")
def trained():
    x, y = load_digits(return_X_y=True)
    model = build_model("logistic", 10, committee=2, max_iter=100, c=0.5)
    metrics = model.fit(x[:300], y[:300])
    return model, metrics, x[300:400]


def rewrite(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_round_trip_gives_identical_predictions(trained, tmp_path):
    model, metrics, x_new = trained
    path = save_artifact(tmp_path / "v1.pt", model, label_map=LABELS,
                         metrics={**metrics, "acc": np.float64(0.9)}, extra={"round": 3})
    art = load_artifact(path)
    assert art.model is not model and type(art.model) is type(model)
    np.testing.assert_array_equal(art.model.predict_proba(x_new), model.predict_proba(x_new))
    assert art.model.config() == model.config() and art.model.params.c == 0.5
    assert art.label_map == LABELS and art.metrics["acc"] == 0.9 and art.extra == {"round": 3}
    assert art.format_version == FORMAT_VERSION and isinstance(art.created_at, datetime)
    assert art.created_at.tzinfo is not None
    assert [p.name for p in tmp_path.iterdir()] == ["v1.pt"]


def test_failed_write_keeps_the_old_version_and_leaves_no_temp_files(trained, tmp_path, monkeypatch):
    model, metrics, x_new = trained
    path = save_artifact(tmp_path / "model.pt", model, label_map=LABELS, metrics=metrics)
    before = path.read_bytes()
    other = build_model("logistic", 10, committee=1, max_iter=50)
    x, y = load_digits(return_X_y=True)
    other.fit(x[500:600], y[500:600])

    def crash_halfway(obj, stream):
        stream.write(b"PK\x03\x04 half an artifact")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(path, other, label_map=LABELS, metrics={})
    with pytest.raises(OSError):
        save_artifact(tmp_path / "new.pt", other, label_map=LABELS, metrics={})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp files, no partial new.pt
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load_artifact(path).model.predict_proba(x_new), model.predict_proba(x_new))


def test_truncated_and_foreign_files_raise_artifact_error(trained, tmp_path):
    model, metrics, _ = trained
    path = save_artifact(tmp_path / "m.pt", model, label_map=LABELS, metrics=metrics)
    data = path.read_bytes()
    for cut in (0, 20, len(data) // 2, len(data) - 8):
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match="m.pt"):
            load_artifact(path)
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ArtifactError):
        load_artifact(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="no such"):
        load_artifact(tmp_path / "absent.pt")


class _Payload:
    """An object whose unpickling would create a directory: what a malicious artifact could do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.makedirs, (self.target,)


def test_arbitrary_objects_are_never_unpickled(trained, tmp_path):
    model, metrics, _ = trained
    path = save_artifact(tmp_path / "m.pt", model, label_map=LABELS, metrics=metrics)
    marker = tmp_path / "pwned"
    rewrite(path, lambda p: p["extra"].update(evil=_Payload(str(marker))))
    with pytest.raises(ArtifactError, match="refused"):
        load_artifact(path)
    assert not marker.exists()


def test_wrong_version_and_unknown_model(trained, tmp_path):
    model, metrics, _ = trained
    path = save_artifact(tmp_path / "m.pt", model, label_map=LABELS, metrics=metrics)
    rewrite(path, lambda p: p.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match=f"version {FORMAT_VERSION + 1}"):
        load_artifact(path)
    rewrite(path, lambda p: p.update(format_version=FORMAT_VERSION, config={**p["config"], "name": "nope"}))
    with pytest.raises(ArtifactError, match="'nope'.*available: .*logistic"):
        load_artifact(path)
    rewrite(path, lambda p: p.update(config={**p["config"], "name": "logistic", "n_classes": 3}))
    with pytest.raises(ArtifactError):
        load_artifact(path)


def test_save_refuses_what_cannot_be_loaded_safely(trained, tmp_path):
    model, metrics, _ = trained
    with pytest.raises(ArtifactError, match="label_map has 2 names"):
        save_artifact(tmp_path / "a.pt", model, label_map=["a", "b"], metrics=metrics)
    with pytest.raises(ArtifactError, match="distinct"):
        save_artifact(tmp_path / "a.pt", model, label_map=["a"] * 10, metrics=metrics)
    with pytest.raises(ArtifactError, match="metrics"):
        save_artifact(tmp_path / "a.pt", model, label_map=LABELS, metrics={"x": object()})
    numpy_state = build_model("logistic", 10)
    numpy_state.state_dict = lambda: {"mean": np.zeros(3)}
    with pytest.raises(ArtifactError, match=r"state_dict\(\)\['mean'\] is a numpy.ndarray"):
        save_artifact(tmp_path / "a.pt", numpy_state, label_map=LABELS, metrics={})
    assert list(tmp_path.iterdir()) == []
