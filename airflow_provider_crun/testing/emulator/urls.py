"""
The emulator's media URLs, built and parsed in one place.

``/media/input/<name>.png?faces=N``
    A generated group picture with ``N`` faces.
``/media/portraits/<name>.png``
    A portrait of one drawn face, to use as a swap target.
``/media/faces/<detect_id>/<index>.png``
    The crop of one detected face (a detection's ``link``).
``/media/results/<task_id>.png``
    A finished task's result.

Parsing looks at the path only, so a link keeps its meaning on any host name the emulator is
reached by (``127.0.0.1``, ``localhost``, a container name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

MAX_FACES = 32
INPUT = "input"
PORTRAIT = "portrait"
CROP = "crop"
RESULT = "result"
_PATTERNS = (
    (INPUT, re.compile(r"^/media/input/([^/]+)\.png$")),
    (PORTRAIT, re.compile(r"^/media/portraits/([^/]+)\.png$")),
    (CROP, re.compile(r"^/media/faces/([^/]+)/(\d+)\.png$")),
    (RESULT, re.compile(r"^/media/results/([^/]+)\.png$")),
)


@dataclass(frozen=True)
class MediaRef:
    """
    One parsed media path.

    :param kind: ``input``, ``portrait``, ``crop`` or ``result``.
    :param name: The picture or portrait name, the detect_id or the task_id (unquoted).
    :param index: The face index of a ``crop``.
    :param query: The URL's query string.
    """

    kind: str
    name: str
    index: int = 0
    query: str = ""


def parse_media(url: str) -> MediaRef | None:
    """Return the emulator media a URL (or a bare path) names, else ``None``."""
    parts = urlsplit(url)
    for kind, pattern in _PATTERNS:
        match = pattern.match(parts.path)
        if match is None:
            continue
        name = unquote(match.group(1))
        if not name:
            return None
        index = int(match.group(2)) if kind == CROP else 0
        return MediaRef(kind, name, index, parts.query)
    return None


def input_path(name: str, faces: int) -> str:
    """The path and query of a generated group picture."""
    return f"/media/input/{quote(name, safe='')}.png?faces={faces}"


def portrait_path(name: str) -> str:
    """The path of a portrait (one drawn face)."""
    return f"/media/portraits/{quote(name, safe='')}.png"


def crop_path(detect_id: str, index: int) -> str:
    """The path of a detected face's crop."""
    return f"/media/faces/{detect_id}/{index}.png"


def result_path(task_id: str) -> str:
    """The path of a task's result."""
    return f"/media/results/{task_id}.png"


def image_name_for_url(image_url: str) -> str:
    """
    Return the name the emulator draws an image URL from.

    An emulator input URL (``.../media/input/<name>.png``, on any host) draws as ``<name>``, so
    the detected image and the served input image are the same picture. Any other URL is drawn
    from the whole URL string.
    """
    ref = parse_media(image_url)
    return ref.name if ref is not None and ref.kind == INPUT else image_url


def faces_from_query(query: str, default: int) -> int:
    """Read ``faces=N`` from a URL query, falling back to ``default`` when absent or invalid."""
    values = parse_qs(query).get("faces")
    if values:
        try:
            faces = int(values[0])
        except ValueError:
            return default
        if 0 <= faces <= MAX_FACES:
            return faces
    return default
