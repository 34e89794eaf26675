"""Request-body and id validation shared by the backend's endpoints and the dashboard.

Everything here raises :class:`BadInput` (a 400 with a short code and a message) for input a
client can get wrong, so that no malformed body reaches code that would fail with a 500:

- JSON bodies: valid UTF-8 JSON, an object at the top, nested at most :data:`MAX_JSON_DEPTH`
  levels (Label Studio's payloads are under 10; a body nested 100,000 deep would otherwise make
  the parser, or any later ``json.dumps`` of it, raise ``RecursionError``);
- ids (projects, tasks, annotations): integers in SQLite's signed 64-bit range, ``0 .. 2**63-1``;
  strings of ASCII digits only (``"²"`` and other Unicode digits are refused, as are 20-digit
  numbers and negative ones).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_ID",
    "MAX_JSON_DEPTH",
    "BadInput",
    "json_too_deep",
    "parse_id",
    "parse_id_text",
    "parse_json_object",
    "parse_project_ref",
]

MAX_ID = 2**63 - 1
"""Largest id stored (SQLite INTEGER is 64-bit signed)."""

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in a request body."""


class BadInput(ValueError):
    """Input the client must fix: answered with ``status`` (400) and ``{"error", "message"}``."""

    def __init__(self, message: str, error: str = "bad_request", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.status = status


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects in ``value`` nest deeper than ``limit`` levels (iterative walk)."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; :class:`BadInput` for anything else."""
    if not raw:
        raise BadInput("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadInput(
            f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels", "json_too_deep"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"the request body is not valid JSON ({exc})", "malformed_json") from None
    if not isinstance(body, dict):
        raise BadInput(f"the request body must be a JSON object, got {type(body).__name__}")
    # Cheap upper bound first: fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_too_deep(body):
        raise BadInput(
            f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels", "json_too_deep"
        )
    return body


def parse_id_text(text: str, field: str) -> int:
    """An id written as ASCII digits (surrounding blanks allowed), within ``0 .. MAX_ID``."""
    digits = text.strip()
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise BadInput(f"{field} must be a number written with the digits 0-9, got {_show(text)}")
    significant = digits.lstrip("0") or "0"
    if len(significant) > 19 or int(significant) > MAX_ID:
        raise BadInput(f"{field} is out of range: ids are at most {MAX_ID}, got {_show(text)}")
    return int(significant)


def parse_id(value: Any, field: str) -> int:
    """An integer id (``{"id": ...}`` objects are read through), within ``0 .. MAX_ID``."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{field} must be an integer id, got {_show(value)}")
    if value < 0:
        raise BadInput(f"{field} must not be negative, got {value}")
    if value > MAX_ID:
        raise BadInput(f"{field} is out of range: ids are at most {MAX_ID}, got {_show(value)}")
    return value


def parse_project_ref(value: Any, field: str = "project") -> int:
    """Label Studio's project reference: ``"<id>.<created_ts>"``, ``"<id>"``, an int, or a
    project object with an ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        if head and head.isascii() and head.isdigit():
            return parse_id_text(head, field)
        raise BadInput(
            f"{field} must be a project id like 12 or '12.1700000000' (digits 0-9), "
            f"got {_show(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(
            f"{field} must be a project id like 12 or '12.1700000000', got {_show(value)}"
        )
    return parse_id(value, field)
