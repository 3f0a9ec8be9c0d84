"""LSAL_MODEL_CLASS: a model written in label_studio_ml's shape (predict(tasks, context), fit(event, data))."""

from __future__ import annotations

import textwrap

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.model_api import ActiveLearningModel, load_model_class

PORTED = textwrap.dedent('''
    from backend.model_api import LabelStudioModel

    class AlwaysCat(LabelStudioModel):
        """What a label_studio_ml user writes: two methods."""

        def predict(self, tasks, context=None, **kwargs):
            result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]
            return {"results": [{"result": result, "score": 0.5} for _ in tasks], "model_version": "cat-1"}

        def fit(self, event, data, **kwargs):
            return {"seen": event, "project": self.project_id}

    class NotAModel:
        pass
''')


@pytest.fixture
def ported(tmp_path, monkeypatch):
    (tmp_path / "ported_model.py").write_text(PORTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ported_model:AlwaysCat"


def test_a_ported_model_answers_predict_and_webhook(settings_factory, ported, auth):
    client = TestClient(create_app(settings_factory(model_class=ported)))
    out = client.post("/predict", json={"tasks": [{"id": 1}, {"id": 2}], "project": "4.17"}).json()
    assert out["model_version"] == "cat-1" and len(out["results"]) == 2
    hook = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}}, headers=auth).json()
    assert hook == {"seen": "START_TRAINING", "project": 4}


def test_model_class_paths_are_checked(ported):
    assert load_model_class("backend.model_api:ActiveLearningModel") is ActiveLearningModel
    assert load_model_class("backend.model_api.ActiveLearningModel") is ActiveLearningModel
    for bad, text in [("nowhere:Model", "cannot be loaded"), ("ported_model:Missing", "cannot be loaded"),
                      ("ported_model:NotAModel", "not a subclass")]:
        with pytest.raises(ValueError, match=text):
            load_model_class(bad)
