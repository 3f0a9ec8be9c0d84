"""The project setting `encoder`: a new text project gets MiniLM and the logistic head; an encoder with a model
that reads images, augment rules, an unknown name or bad params is refused; a checkpoint stays in LSAL_WEIGHTS_DIR."""

from __future__ import annotations

import pytest

from core.label_config import kind_of
from core.project_settings import InvalidSettingsError, ProjectSettings, settings_for_kind, validate_settings

TEXT = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/>'
        '</Choices></View>')
IMAGE = ('<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/>'
         '<Choice value="b"/></Choices></View>')


def test_a_new_text_project_gets_the_text_encoder_and_a_head_that_reads_vectors():
    seeded = settings_for_kind(ProjectSettings(), kind_of(TEXT))
    assert seeded.encoder.name == "minilm" and seeded.model.name == "logistic"
    validate_settings(seeded)
    # an image project keeps the defaults; defaults with a text encoder lose it on an image project
    assert settings_for_kind(ProjectSettings(), kind_of(IMAGE)) == ProjectSettings()
    texty = ProjectSettings.model_validate({"encoder": {"name": "minilm"}, "model": {"name": "logistic"}})
    assert settings_for_kind(texty, kind_of(IMAGE)).encoder is None
    imagey = ProjectSettings.model_validate({"encoder": {"name": "mobilenet_v2"}, "model": {"name": "logistic"}})
    assert settings_for_kind(imagey, kind_of(IMAGE)) is imagey
    assert settings_for_kind(imagey, kind_of(TEXT)).encoder.name == "minilm"


@pytest.mark.parametrize("settings, words", [
    ({"encoder": {"name": "minilm"}}, "reads images, not the encoder's embeddings; with an encoder choose logistic"),
    ({"encoder": {"name": "nope"}, "model": {"name": "logistic"}}, "unknown encoder 'nope'"),
    ({"encoder": {"name": "mobilenet_v2", "params": {"size": 4}}, "model": {"name": "logistic"}},
     "encoder 'mobilenet_v2': size"),
    ({"encoder": {"name": "mobilenet_v2"}, "model": {"name": "logistic"},
      "augment": [{"augmentation": "stain"}]}, "augment rules draw on images"),
])
def test_an_encoder_that_cannot_work_is_refused_with_the_reason(settings, words):
    with pytest.raises(InvalidSettingsError, match=words.replace("(", r"\(")):
        validate_settings(settings)


def test_an_encoder_checkpoint_must_lie_inside_the_weights_folder(tmp_path):
    weights = tmp_path / "weights"
    (weights / "mine").mkdir(parents=True)
    (weights / "mine" / "modules.json").write_text("[]")
    settings = {"encoder": {"name": "minilm", "params": {"checkpoint": "mine"}}, "model": {"name": "logistic"}}
    resolved = validate_settings(settings, weights)
    assert resolved.encoder.params["checkpoint"] == str((weights / "mine").resolve())
    outside = {**settings, "encoder": {"name": "minilm", "params": {"checkpoint": "../../etc"}}}
    with pytest.raises(InvalidSettingsError, match="not a folder inside LSAL_WEIGHTS_DIR"):
        validate_settings(outside, weights)
    with pytest.raises(InvalidSettingsError, match="set LSAL_WEIGHTS_DIR"):
        validate_settings(settings, None, ProjectSettings())
