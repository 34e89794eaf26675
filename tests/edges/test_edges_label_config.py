"""labelwheel.label_config: templates, parsing, prediction results."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwheel.label_config import (
    ClassificationConfig,
    UnsupportedConfigError,
    image_classification_config,
    load_template,
    parse_classification_config,
    template_names,
)

SINGLE = """<View>
  <Image name="img" value="$photo"/>
  <Text name="t" value="$caption"/>
  <Choices name="animal" toName="img" choice="single-radio">
    <Choice value="cat"/><Choice value="dog"/><Choice value="bird"/>
  </Choices>
</View>"""


def test_templates_are_packaged_and_parse() -> None:
    assert "image_classification_example" in template_names()
    cfg = parse_classification_config(load_template("image_classification_example"))
    assert cfg.labels == ("cat", "dog") and not cfg.multi_label
    assert (cfg.from_name, cfg.to_name, cfg.data_key) == ("choice", "image", "image")
    with pytest.raises(ValueError, match="unknown label config template"):
        load_template("nope")


def test_parse_single_label() -> None:
    cfg = parse_classification_config(SINGLE)
    assert cfg == ClassificationConfig(
        xml=SINGLE,
        from_name="animal",
        to_name="img",
        data_key="photo",
        labels=("cat", "dog", "bird"),
        multi_label=False,
    )
    assert cfg.index_of("dog") == 1
    with pytest.raises(ValueError, match="unknown label"):
        cfg.index_of("cow")


@pytest.mark.parametrize("multi", [False, True])
def test_generated_config_escapes_labels(multi: bool) -> None:
    labels = ["cat & co", 'say "hi"', "<x>", "d'oh", "naïve ✓"]
    xml = image_classification_config(labels, multi_label=multi)
    assert "<x>" not in xml  # escaped
    cfg = parse_classification_config(xml)
    assert cfg.labels == tuple(labels)
    assert cfg.multi_label is multi
    assert cfg.data_key == "image"


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
        ).filter(lambda s: s.strip() == s and s),
        min_size=1,
        max_size=6,
        unique=True,
    )
)
@settings(max_examples=40, deadline=None)
def test_any_labels_round_trip(labels: list[str]) -> None:
    cfg = parse_classification_config(image_classification_config(labels))
    assert cfg.labels == tuple(labels)
    result = cfg.prediction_result([1.0 / len(labels)] * len(labels))
    assert cfg.validate_prediction({"result": result}) == []


@pytest.mark.parametrize(
    "labels, message",
    [([], "at least one"), (["a", "a"], "duplicate"), (["a", ""], "non-empty"), ("ab", "sequence")],
)
def test_generated_config_rejects_bad_labels(labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_classification_config(labels)


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><Image name='i' value='$i'/>", "not valid XML"),
        (
            "<View><Image name='i' value='$i'/><RectangleLabels name='r' toName='i'>"
            "<Label value='a'/></RectangleLabels></View>",
            "RectangleLabels",
        ),
        (
            "<View><Text name='t' value='$t'/><Choices name='c' toName='t'>"
            "<Choice value='a'/></Choices></View>",
            "needs an <Image>",
        ),
        ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'/></View>", "no <Choice>"),
    ],
)
def test_unsupported_configs(xml: str, message: str) -> None:
    with pytest.raises(UnsupportedConfigError, match=message):
        parse_classification_config(xml)
    assert issubclass(UnsupportedConfigError, ValueError)


def test_single_label_prediction_is_argmax() -> None:
    cfg = parse_classification_config(SINGLE)
    result = cfg.prediction_result([0.2, 0.7, 0.1])
    assert result == [
        {
            "from_name": "animal",
            "to_name": "img",
            "type": "choices",
            "value": {"choices": ["dog"]},
            "score": pytest.approx(0.7),
        }
    ]
    assert cfg.validate_prediction({"result": result, "score": 0.1, "model_version": "v1"}) == []


def test_multi_label_prediction_threshold() -> None:
    cfg = parse_classification_config(image_classification_config(["a", "b", "c"], True))
    result = cfg.prediction_result([0.9, 0.1, 0.55])
    assert result[0]["value"]["choices"] == ["a", "c"]
    assert result[0]["score"] == pytest.approx(0.55)
    assert cfg.validate_prediction({"result": result}) == []
    assert cfg.prediction_result([0.4, 0.3, 0.49]) == []
    assert cfg.validate_prediction({"result": []}) == []


@pytest.mark.parametrize("probs", [[0.5, 0.5], [0.1, 0.2, 0.3, 0.4], [float("nan"), 0.1, 0.2]])
def test_prediction_rejects_bad_probabilities(probs: list[float]) -> None:
    cfg = parse_classification_config(SINGLE)
    with pytest.raises(ValueError):
        cfg.prediction_result(probs)


def test_validate_prediction_reports_errors() -> None:
    cfg = parse_classification_config(SINGLE)
    bad = {
        "result": [
            {
                "from_name": "animal",
                "to_name": "img",
                "type": "choices",
                "value": {"choices": ["cow"]},
            }
        ]
    }
    errors = cfg.validate_prediction(bad)
    assert errors and "cow" in errors[0]
    assert cfg.validate_prediction([]) != []  # type: ignore[arg-type]


def test_labels_from_result() -> None:
    cfg = parse_classification_config(SINGLE)
    result = [
        {"from_name": "other", "to_name": "img", "type": "choices", "value": {"choices": ["x"]}},
        {"from_name": "animal", "to_name": "img", "type": "choices", "value": {"choices": ["dog"]}},
        {"from_name": "animal", "type": "choices", "value": {"choices": ["dog", "unicorn", 3]}},
        {"from_name": "t", "type": "textarea", "value": {"text": ["hi"]}},
        {"from_name": "animal", "type": "choices", "value": None},
    ]
    assert cfg.labels_from_result(result) == ["dog"]
    assert cfg.labels_from_result(result, keep_unknown=True) == ["dog", "unicorn"]
    assert cfg.labels_from_result([]) == []
    with pytest.raises(ValueError):
        cfg.labels_from_result({"result": []})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cfg.labels_from_result(["x"])  # type: ignore[list-item]
