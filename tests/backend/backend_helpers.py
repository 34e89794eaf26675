"""Helpers shared by the ML backend tests (payloads shaped like Label Studio's, real images)."""

from __future__ import annotations

import base64
import io
import secrets
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SIZE = 64

CONFIG_SINGLE = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image" choice="single-radio">
    <Choice value="zero"/><Choice value="one"/>
  </Choices>
</View>"""

CONFIG_MULTI = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple">
    <Choice value="round"/><Choice value="straight"/><Choice value="dark"/>
  </Choices>
</View>"""

CONFIG_BOXES = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="car"/></RectangleLabels>
</View>"""


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 grey or RGB array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """A data: URI holding ``data``."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def annotation_event(
    ann_id: int,
    task_id: int,
    image: str,
    labels: list[str],
    *,
    project: int = 1,
    predicted: list[str] | None = None,
    version: str | None = None,
    action: str = "ANNOTATION_CREATED",
    config: str = CONFIG_SINGLE,
    from_name: str = "choice",
    cancelled: bool = False,
) -> dict[str, Any]:
    """A webhook payload shaped like Label Studio 1.23's ANNOTATION_CREATED/UPDATED."""

    def result(choices: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "id": secrets.token_hex(5),
                "from_name": from_name,
                "to_name": "image",
                "type": "choices",
                "value": {"choices": choices},
                "origin": "manual",
            }
        ]

    prediction: dict[str, Any] = {}
    if predicted is not None:
        prediction = {"result": result(predicted), "score": 0.5}
        if version is not None:
            prediction["model_version"] = version
    return {
        "action": action,
        "annotation": {
            "id": ann_id,
            "result": result(labels) if labels else [],
            "task": task_id,
            "project": project,
            "completed_by": 1,
            "ground_truth": False,
            "was_cancelled": cancelled,
            "prediction": prediction,
        },
        "project": {"id": project, "label_config": config, "model_version": version or "v0"},
        "task": {"id": task_id, "data": {"image": image}, "project": project},
    }
