"""Label Studio label configs for image classification: templates and parsing.

Parsing goes through the SDK's ``LabelInterface`` so that labelwheel reads a config exactly as
Label Studio does. A config is supported when it has an ``<Image>`` object tag and a ``<Choices>``
control tag pointing at it, with static ``<Choice>`` values (single-label by default,
``choice="multiple"`` for multi-label).

Prediction results (what :meth:`ClassificationConfig.prediction_result` returns):

- single-label: the most probable label, with its probability as ``score``;
- multi-label: every label with probability >= 0.5 (:data:`MULTI_LABEL_THRESHOLD`) in one
  ``choices`` result, whose ``score`` is the lowest probability among the chosen labels (the
  confidence of the weakest choice); when no label reaches 0.5 there is no pre-label (``[]``),
  rather than an invented one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from xml.sax.saxutils import quoteattr

__all__ = [
    "MULTI_LABEL_THRESHOLD",
    "ClassificationConfig",
    "UnsupportedConfigError",
    "image_classification_config",
    "load_template",
    "parse_classification_config",
    "template_names",
]

MULTI_LABEL_THRESHOLD = 0.5
_MULTI_MODES = frozenset({"multiple"})


class UnsupportedConfigError(ValueError):
    """The label config is not one labelwheel can serve (the message says why)."""


def template_names() -> list[str]:
    """Names of the bundled XML templates (without ``.xml``)."""
    root = resources.files(__package__) / "templates"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".xml"))


def load_template(name: str) -> str:
    """The text of a bundled template, e.g. ``load_template("image_classification_example")``."""
    if name not in template_names():
        raise ValueError(f"unknown label config template {name!r}; have {template_names()}")
    return (resources.files(__package__) / "templates" / f"{name}.xml").read_text("utf-8")


def image_classification_config(labels: Sequence[str], multi_label: bool = False) -> str:
    """An image-classification label config (data key ``image``, control ``choice``).

    Label values are XML-escaped, so any text works as a label. Raises ``ValueError`` for no
    labels, empty or non-string labels, or duplicates.
    """
    if isinstance(labels, str):
        raise ValueError("labels must be a sequence of strings, not one string")
    labels = list(labels)
    if not labels:
        raise ValueError("an image classification config needs at least one label")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label {label!r} must be a non-empty string")
        if label in seen:
            raise ValueError(f"duplicate label {label!r}")
        seen.add(label)
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    template = load_template("image_classification")
    return template.replace(
        "__CHOICE_MODE__", "multiple" if multi_label else "single-radio"
    ).replace("__CHOICES__", choices)


@dataclass(frozen=True)
class ClassificationConfig:
    """The image-classification part of a label config."""

    xml: str
    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]
    multi_label: bool
    _interface: Any = field(default=None, repr=False, compare=False, hash=False)

    def index_of(self, label: str) -> int:
        """Position of ``label`` in :attr:`labels` (``ValueError`` if unknown)."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(
                f"unknown label {label!r}; the config has {list(self.labels)}"
            ) from None

    def prediction_result(self, probabilities: Sequence[float]) -> list[dict[str, Any]]:
        """A Label Studio prediction ``result`` from one probability per label (config order).

        Single-label: the argmax label, ``score`` = its probability. Multi-label: all labels with
        probability >= 0.5, ``score`` = the lowest of their probabilities; ``[]`` if none.
        Raises ``ValueError`` for a wrong length or values outside [0, 1] / not finite.
        """
        probs = [float(p) for p in probabilities]
        if len(probs) != len(self.labels):
            raise ValueError(
                f"expected {len(self.labels)} probabilities (one per label), got {len(probs)}"
            )
        for p in probs:
            if not math.isfinite(p) or p < -1e-6 or p > 1 + 1e-6:
                raise ValueError(f"probabilities must be finite and in [0, 1], got {p!r}")
        probs = [min(1.0, max(0.0, p)) for p in probs]
        if self.multi_label:
            chosen = [i for i, p in enumerate(probs) if p >= MULTI_LABEL_THRESHOLD]
            if not chosen:
                return []
            score = min(probs[i] for i in chosen)
        else:
            best = max(range(len(probs)), key=probs.__getitem__)
            chosen = [best]
            score = probs[best]
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [self.labels[i] for i in chosen]},
                "score": score,
            }
        ]

    def labels_from_result(
        self, result: list[dict[str, Any]], keep_unknown: bool = False
    ) -> list[str]:
        """The labels chosen for this config's ``Choices`` in an annotation/prediction result.

        Other controls are ignored; so are labels the config does not have (e.g. after the config
        changed) unless ``keep_unknown``. Order follows the result, without duplicates. A malformed
        result (not a list of dicts) raises ``ValueError``.
        """
        if not isinstance(result, list):
            raise ValueError("an annotation result must be a list of dicts")
        known = set(self.labels)
        out: list[str] = []
        for item in result:
            if not isinstance(item, dict):
                raise ValueError("an annotation result must be a list of dicts")
            if item.get("from_name") != self.from_name:
                continue
            if str(item.get("type", "choices")).lower() != "choices":
                continue
            value = item.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, str) or choice in out:
                    continue
                if choice in known or keep_unknown:
                    out.append(choice)
        return out

    def validate_prediction(self, prediction: dict[str, Any]) -> list[str]:
        """Errors the SDK's ``validate_prediction`` finds in ``{"result": [...]}``; ``[]`` = ok."""
        if not isinstance(prediction, dict):
            return ["a prediction must be a dict with a 'result' list"]
        interface = self._interface or _interface(self.xml)
        errors = interface.validate_prediction(prediction, return_errors=True)
        if errors is True:
            return []
        if errors is False:
            return ["invalid prediction"]
        return [str(e) for e in errors]


def _interface(xml: str) -> Any:
    from label_studio_sdk.label_interface import LabelInterface

    return LabelInterface(xml)


def warm_up() -> None:
    """Import and exercise the SDK's config parser now. Its first use costs about 0.5 s idle and
    several seconds on a busy machine; a server calls this at start so that the first ``/setup``
    answers well within Label Studio's 3 s timeout."""
    parse_classification_config(image_classification_config(["a", "b"]))


def parse_classification_config(xml: str) -> ClassificationConfig:
    """Parse a label config into a :class:`ClassificationConfig`.

    Raises :class:`UnsupportedConfigError` (a ``ValueError``) with a clear message for malformed
    XML, configs without an ``<Image>`` + ``<Choices>`` pair (e.g. only ``RectangleLabels``), or a
    ``Choices`` without static labels.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise UnsupportedConfigError("the label config is empty")
    try:
        interface = _interface(xml)
    except Exception as exc:
        raise UnsupportedConfigError(f"the label config is not valid XML: {exc}") from None
    try:
        from_name, to_name, data_key = interface.get_first_tag_occurence("Choices", "Image")
    except Exception:
        controls = sorted({c.tag for c in interface.controls}) or ["none"]
        objects = sorted({o.tag for o in interface.objects}) or ["none"]
        raise UnsupportedConfigError(
            "labelwheel serves image classification: the label config needs an <Image> tag and a "
            "<Choices> tag with toName pointing at it; this one has control tags "
            f"{', '.join(controls)} and object tags {', '.join(objects)}"
        ) from None
    control = interface.get_control(from_name)
    labels = tuple(str(label) for label in (control.labels or []))
    if not labels:
        raise UnsupportedConfigError(
            f"the <Choices name={from_name!r}> tag has no <Choice> values (dynamic choices are "
            "not supported)"
        )
    if len(set(labels)) != len(labels):
        raise UnsupportedConfigError(f"the <Choices name={from_name!r}> tag repeats a label")
    mode = str(control.attr.get("choice", "single")).lower()
    return ClassificationConfig(
        xml=xml,
        from_name=str(from_name),
        to_name=str(to_name),
        data_key=str(data_key).lstrip("$"),
        labels=labels,
        multi_label=mode in _MULTI_MODES,
        _interface=interface,
    )
