"""
The emulator's pictures, drawn with Pillow, and how it serves them.

Every picture is a pure function of names and targets, so a test can redraw the input, read
the result and check exactly which face regions a swap changed (:func:`changed_faces`):

- a group picture (:func:`render_input`) has ``N`` faces, each told apart by colour and shape;
- a portrait (:func:`render_portrait`) is one face, drawn from a name or from a hash of a URL;
- a result (:func:`render_result`) is the group picture with each swapped face's head replaced
  by its target's head, scaled into that face's box.
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

from airflow_provider_crun.testing.emulator.faces import (
    Box,
    draw_face,
    ellipse_mask,
    group_look,
    head_ellipse,
    look_for,
    pastel_for,
)

IMAGE_WIDTH = 480
IMAGE_HEIGHT = 240
PORTRAIT_SIZE = (200, 260)
PNG = "image/png"
STREAM_CHUNK = 1 << 20
"""Bytes per write when a large result is streamed."""
MIN_LARGE_RESULT = STREAM_CHUNK
_MAX_PNG_CHUNK = (1 << 31) - 1
_PAD_TYPE = b"crPd"  # ancillary, private, safe to copy: every PNG decoder skips it


@dataclass(frozen=True)
class Target:
    """
    What a swapped face becomes; hashable, so results can be cached.

    :param kind: ``portrait`` (a drawn face named ``name``: a portrait name or a foreign URL),
        ``crop`` (face ``index`` of the group picture ``name`` with ``faces`` faces) or
        ``picture`` (the whole group picture ``name`` with ``swaps`` applied).
    """

    kind: str
    name: str
    faces: int = 0
    index: int = 0
    swaps: Swaps = ()


Swaps = tuple[tuple[int, Target], ...]
"""``(face index, target)`` pairs of the faces a result replaces."""


def face_boxes(n: int, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> list[Box]:
    """
    Return the regions of ``n`` faces in a group picture, in face-id order.

    Faces sit in a grid of at most four columns; each box is inset in its cell so boxes never
    touch each other or the image border.
    """
    if n <= 0:
        return []
    cols = min(n, 4)
    rows = -(-n // cols)
    cell_w, cell_h = width // cols, height // rows
    margin_x, margin_y = max(2, cell_w // 8), max(2, cell_h // 8)
    return [
        (
            col * cell_w + margin_x,
            row * cell_h + margin_y,
            (col + 1) * cell_w - margin_x,
            (row + 1) * cell_h - margin_y,
        )
        for row, col in (divmod(index, cols) for index in range(n))
    ]


def render_input(name: str, faces: int) -> Image.Image:
    """Draw the group picture ``name`` with ``faces`` faces (see :func:`face_boxes`)."""
    image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), pastel_for(name))
    draw = ImageDraw.Draw(image)
    for index, box in enumerate(face_boxes(faces)):
        look = group_look(name, index)
        # Shoulders in a darker shade of the head colour, below the head and outside its ellipse.
        x0, y0, x1, y1 = head_ellipse(box)
        shirt = tuple(channel // 2 for channel in look.head)
        draw.ellipse(
            (x0 - (x1 - x0) // 4, y1 - (y1 - y0) // 8, x1 + (x1 - x0) // 4, y1 + (y1 - y0)), fill=shirt
        )
        draw_face(image, box, look)
    return image


def render_portrait(name: str) -> Image.Image:
    """Draw the portrait ``name``: one face filling the picture, on a background of its own."""
    image = Image.new("RGB", PORTRAIT_SIZE, pastel_for("portrait\x00" + name))
    draw_face(image, (0, 0, *PORTRAIT_SIZE), look_for(name))
    return image


def render_target(target: Target) -> Image.Image:
    """Draw the picture a :class:`Target` stands for."""
    if target.kind == "crop":
        return render_input(target.name, target.faces).crop(face_boxes(target.faces)[target.index])
    if target.kind == "picture":
        return render_result(target.name, target.faces, target.swaps)
    return render_portrait(target.name)


def render_result(name: str, faces: int, swaps: Swaps) -> Image.Image:
    """
    Draw the result of swapping faces in the group picture ``name``.

    The head of each swapped face's target is scaled onto the face's head region (an ellipse in
    its box); every other pixel equals the input, so the swapped faces are the only ones that
    look different.
    """
    image = render_input(name, faces)
    boxes = face_boxes(faces)
    for index, target in swaps:
        if not 0 <= index < len(boxes):
            continue
        x0, y0, x1, y1 = head_ellipse(boxes[index])
        source = render_target(target)
        head = source.crop(head_ellipse((0, 0, *source.size))).resize(
            (x1 - x0, y1 - y0), Image.Resampling.LANCZOS
        )
        image.paste(head, (x0, y0), ellipse_mask(head.size))
    return image


def to_png(image: Image.Image) -> bytes:
    """Encode ``image`` as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def open_rgb(data: bytes) -> Image.Image:
    """Decode an image file (any format Pillow reads) to RGB pixels."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@functools.lru_cache(maxsize=256)
def input_png(name: str, faces: int) -> bytes:
    """The encoded group picture (cached)."""
    return to_png(render_input(name, faces))


@functools.lru_cache(maxsize=256)
def portrait_png(name: str) -> bytes:
    """The encoded portrait (cached)."""
    return to_png(render_portrait(name))


@functools.lru_cache(maxsize=1024)
def face_png(name: str, faces: int, index: int) -> bytes:
    """The encoded crop of face ``index`` of a group picture (cached)."""
    return to_png(render_target(Target("crop", name, faces, index)))


@functools.lru_cache(maxsize=1024)
def result_png(name: str, faces: int, swaps: Swaps) -> bytes:
    """The encoded result (cached)."""
    return to_png(render_result(name, faces, swaps))


def changed_faces(input_image: bytes, result_image: bytes, faces: int) -> list[int]:
    """
    The ids of the faces whose region differs between an input image and a result image.

    A person looks at the result to see which faces were swapped; a test asks this instead.

    :param input_image: The input image file (PNG).
    :param result_image: The result image file (same size).
    :param faces: How many faces the input has.
    :raises ValueError: when the sizes differ, or a pixel outside every face region changed.
    """
    before, after = open_rgb(input_image), open_rgb(result_image)
    if before.size != after.size:
        raise ValueError(f"sizes differ: {before.size} and {after.size}")
    red, green, blue = ImageChops.difference(before, after).split()
    changed = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    boxes = face_boxes(faces, *before.size)
    outside = changed.copy()
    for box in boxes:
        outside.paste(0, box)
    bbox = outside.getbbox()
    if bbox is not None:
        y = bbox[1]
        x = next(x for x, value in enumerate(outside.crop((0, y, outside.width, y + 1)).tobytes()) if value)
        raise ValueError(f"pixel ({x}, {y}) changed outside every face region")
    return [index for index, box in enumerate(boxes) if changed.crop(box).getbbox() is not None]


@dataclass(frozen=True)
class Media:
    """
    A file to serve: its type, its exact length, and its bytes in chunks.

    ``chunks`` may be a generator: it is only consumed when the body is sent.
    """

    content_type: str
    length: int
    chunks: Iterable[bytes]

    @classmethod
    def of(cls, data: bytes, content_type: str = PNG) -> Media:
        """A file already in memory."""
        return cls(content_type, len(data), (data,))


def large_png(png: bytes, total: int) -> Media:
    """
    ``png`` grown to exactly ``total`` bytes, produced chunk by chunk while it is sent.

    Zero-filled private ancillary chunks (which decoders skip) go before ``IEND``, so the file
    stays a valid PNG showing the same picture. Memory use does not depend on ``total``.

    :raises ValueError: when ``total`` is below :data:`MIN_LARGE_RESULT`.
    """
    if total < MIN_LARGE_RESULT or len(png) + 12 > total:
        raise ValueError(f"a large result must be at least {MIN_LARGE_RESULT} bytes, got {total}")
    return Media(PNG, total, _padded(png, total))


def _padded(png: bytes, total: int) -> Iterator[bytes]:
    end = png[-12:]  # the IEND chunk, which Pillow always writes last
    yield png[:-12]
    padding = total - len(png)
    count = -(-padding // (_MAX_PNG_CHUNK + 12))
    remaining = padding - 12 * count
    zeros = bytes(STREAM_CHUNK)
    for _ in range(count):
        size = min(remaining, _MAX_PNG_CHUNK)
        remaining -= size
        yield size.to_bytes(4, "big") + _PAD_TYPE
        crc = zlib.crc32(_PAD_TYPE)
        while size:
            part = zeros[: min(size, STREAM_CHUNK)]
            crc = zlib.crc32(part, crc)
            size -= len(part)
            yield part
        yield crc.to_bytes(4, "big")
    yield end
