"""Task kinds: chosen by predicate over the labeling config; clear refusals; each kind's pure pieces."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from core.label_config import kind_of, parse_config
from plugins.kinds import KINDS, UnsupportedConfigError, kind_for
from plugins.strategies import build_strategy

IMAGE = '<Image name="img" value="$image"/>'


def _config(control: str, obj: str = IMAGE) -> str:
    return f"<View>{obj}{control}</View>"


SINGLE = _config('<Choices name="label" toName="img"><Choice value="ok"/><Choice value="scratch"/></Choices>')
MULTI = _config('<Choices name="defects" toName="img" choice="multiple"><Choice value="scratch"/>'
                '<Choice value="stain"/><Choice value="dent"/></Choices>')


def test_each_config_is_served_by_the_kind_its_tags_say():
    single, multi = kind_of(SINGLE), kind_of(MULTI)
    assert single.name == "image_classification" and single.labels == ("ok", "scratch")
    assert (single.from_name, single.to_name, single.value_key) == ("label", "img", "image")
    assert multi.name == "image_multilabel" and multi.labels == ("scratch", "stain", "dent")
    assert multi.model_params() == {"multilabel": True} and single.model_params() == {}


@pytest.mark.parametrize("config, words", [
    (_config('<Choices name="c" toName="img"><Choice value="only"/></Choices>'), "at least 2 choices"),
    (_config('<Choices name="c" toName="img"><Choice value="a"/><Choice value="a"/></Choices>'), "duplicate"),
    (_config('<Choices name="c" toName="nowhere"><Choice value="a"/><Choice value="b"/></Choices>'),
     "toName='nowhere'"),
    (_config('<Choices name="c" toName="img" choice="multiple"><Choice value="a"/></Choices>'), "at least 2"),
])
def test_a_config_a_kind_matches_but_that_is_wrong_says_what_is_wrong(config, words):
    with pytest.raises(UnsupportedConfigError, match=words):
        kind_of(config)


def test_a_config_no_kind_serves_names_every_kind_and_what_it_needs():
    polygons = _config('<PolygonLabels name="b" toName="img"><Label value="scratch"/></PolygonLabels>')
    audio = _config('<Choices name="c" toName="a"><Choice value="a"/><Choice value="b"/></Choices>',
                    '<Audio name="a" value="$audio"/>')
    for config in (polygons, audio, "<View></View>"):
        with pytest.raises(UnsupportedConfigError) as err:
            kind_for(parse_config(config))
        for name in KINDS.registered():
            assert name in str(err.value) and KINDS.get(name).needs in str(err.value)
    with pytest.raises(UnsupportedConfigError, match="not valid XML"):
        kind_of("<View><Image")


def test_single_label_targets_predictions_and_metrics():
    kind = kind_of(SINGLE)
    result = [{"from_name": "label", "to_name": "img", "type": "choices", "value": {"choices": ["scratch"]}}]
    assert kind.answer(result) == "scratch" and kind.answer([]) is None
    assert kind.answer([{**result[0], "value": {"choices": ["other"]}}]) is None
    assert kind.encode(["ok", "scratch", "ok"]).tolist() == [0, 1, 0]
    regions = kind.regions(np.array([0.3, 0.7]), 0.5)
    assert regions == [{"from_name": "label", "to_name": "img", "type": "choices", "value": {"choices": ["scratch"]}}]
    seen = kind.summary(np.array([0.3, 0.7]), 0.5)
    assert seen["label"] == "scratch" and seen["confidence"] == pytest.approx(0.7)
    assert seen["uncertainty"] == pytest.approx(-(0.3 * np.log(0.3) + 0.7 * np.log(0.7)))
    assert kind.max_uncertainty() == pytest.approx(np.log(2))
    m = kind.metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), 0.5)
    assert m["holdout_accuracy"] == pytest.approx(2 / 3)


def test_multi_label_targets_tick_every_label_above_the_threshold():
    kind = kind_of(MULTI)
    region = {"from_name": "defects", "to_name": "img", "type": "choices", "value": {"choices": ["dent", "scratch"]}}
    assert kind.answer([region]) == ("scratch", "dent")
    assert kind.answer([]) == ()  # ticked nothing: none of these defects, a real negative
    assert kind.answer([{**region, "value": {"choices": ["rust"]}}]) is None
    y = kind.encode([("scratch", "dent"), (), ("stain",)])
    assert y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]] and y.dtype == np.uint8
    assert kind.strata(y).tolist() == [0, 3, 1]  # rarest positive label; 3 = none (ties: the first)
    out = np.array([0.8, 0.3, 0.55])
    assert kind.regions(out, 0.5)[0]["value"]["choices"] == ["scratch", "dent"]
    assert kind.regions(out, 0.6)[0]["value"]["choices"] == ["scratch"]
    assert kind.summary(out, 0.9)["label"] == "(none)"
    p = np.clip(out, 1e-12, 1 - 1e-12)
    assert kind.uncertainty(out[None])[0] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())
    assert kind.max_uncertainty() == pytest.approx(3 * np.log(2))


def test_multi_label_metrics_are_micro_and_macro_f1_and_per_label_recall():
    kind = kind_of(MULTI)
    y = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 0]])
    outputs = np.array([[0.9, 0.1, 0.2], [0.1, 0.1, 0.1], [0.2, 0.8, 0.1], [0.7, 0.9, 0.6]])
    m = kind.metrics(y, outputs, 0.5)
    predicted = (outputs >= 0.5).astype(int)
    assert m["holdout_micro_f1"] == pytest.approx(f1_score(y, predicted, average="micro"))
    assert m["holdout_macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0))
    assert m["holdout_recall[scratch]"] == 1.0 and m["holdout_recall[dent]"] == 0.0
    assert m["holdout_subset_accuracy"] == pytest.approx(2 / 4)


def test_strategies_without_a_multi_label_form_are_refused_with_what_to_use():
    kind = kind_of(MULTI)
    sound = ("coreset", "typiclust", "random", "probcover", "entropy", "margin", "least_confidence", "bald",
             "mc_variance", "badge", "learning_loss", "auto",
             {"name": "class_balanced", "params": {"base": {"name": "coreset"}}},
             {"name": "stochastic", "params": {"base": {"name": "entropy"}}})
    for spec in sound:
        kind.check_strategy(build_strategy(spec))
    refused = [("batchbald", "batchbald"), ("egl", "egl"), ("alfamix", "alfamix"),
               ({"name": "class_balanced", "params": {"base": {"name": "batchbald"}}}, "batchbald"),
               ({"name": "auto", "params": {"warm": {"name": "vote_entropy"}}}, "vote_entropy")]
    for spec, unsound in refused:
        with pytest.raises(ValueError, match="no multi-label form") as err:
            kind.check_strategy(build_strategy(spec))
        message = str(err.value)
        assert message.startswith(f"strategy {unsound} has no multi-label form")
        listed = message.rsplit("can use ", 1)[1].split(", ")
        assert {"coreset", "entropy", "badge", "bald"} <= set(listed) and unsound not in listed
    kind_of(SINGLE).check_strategy(build_strategy("batchbald"))  # every strategy serves one-choice projects


TEXT_OBJECT = '<Text name="txt" value="$text"/>'
TEXT_SINGLE = _config('<Choices name="topic" toName="txt"><Choice value="law"/><Choice value="food"/></Choices>',
                      TEXT_OBJECT)
TEXT_MULTI = _config('<Choices name="topic" toName="txt" choice="multiple"><Choice value="law"/>'
                     '<Choice value="food"/></Choices>', TEXT_OBJECT)


def test_text_configs_are_served_by_the_text_kinds_which_need_an_encoder():
    single, multi = kind_of(TEXT_SINGLE), kind_of(TEXT_MULTI)
    assert single.name == "text_classification" and (single.to_name, single.value_key) == ("txt", "text")
    assert multi.name == "text_multilabel" and multi.model_params() == {"multilabel": True}
    assert single.input_type == multi.input_type == "text" and single.default_encoder == "minilm"
    hyper = kind_of(_config('<Choices name="c" toName="h"><Choice value="a"/><Choice value="b"/></Choices>',
                            '<HyperText name="h" value="$html"/>'))
    assert hyper.name == "text_classification" and hyper.value_key == "html"
    # the image kinds and their outputs are unchanged by the text twins
    assert kind_of(SINGLE).input_type == "image" and kind_of(SINGLE).default_encoder is None
    assert single.regions(np.array([0.2, 0.8]), 0.5)[0]["value"]["choices"] == ["food"]


def test_a_text_loaded_from_a_url_is_refused_with_what_to_do():
    config = _config('<Choices name="c" toName="txt"><Choice value="a"/><Choice value="b"/></Choices>',
                     '<Text name="txt" value="$text" valueType="url"/>')
    with pytest.raises(UnsupportedConfigError, match="put the text itself"):
        kind_of(config)
