"""
Deterministic images for the emulator, and a tiny stdlib PNG codec.

Every picture the emulator serves is a pure function of a name and a face count, so a test can
regenerate the input, decode the result and check exactly which face regions a swap changed.
Encoding writes 8-bit RGB with filter type 0 only; decoding accepts any non-interlaced 8-bit
gray/RGB/RGBA PNG so tests can also read images produced elsewhere.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from urllib.parse import unquote, urlsplit

IMAGE_WIDTH = 480
IMAGE_HEIGHT = 240
MAX_FACES = 32
INPUT_PATH_PREFIX = "/media/input/"

Box = tuple[int, int, int, int]
"""A half-open pixel rectangle ``(x0, y0, x1, y1)``."""
Color = tuple[int, int, int]
Swaps = tuple[tuple[int, str], ...]
"""``(face index, target URL)`` pairs of the faces a result replaces."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 6: 4}


def color_for(text: str, salt: str = "") -> Color:
    """Return a colour derived from a hash of ``text`` (and ``salt``)."""
    digest = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    return digest[0], digest[1], digest[2]


def image_name_for_url(image_url: str) -> str:
    """
    Return the name the emulator renders an image URL from.

    An emulator input URL (``.../media/input/<name>.png``, on any host) renders as ``<name>``,
    so the detected image and the served input image are the same picture. Any other URL is
    rendered from the whole URL string.
    """
    path = urlsplit(image_url).path
    if path.startswith(INPUT_PATH_PREFIX) and path.endswith(".png"):
        quoted = path[len(INPUT_PATH_PREFIX) : -len(".png")]
        if quoted and "/" not in quoted:
            return unquote(quoted)
    return image_url


def face_boxes(n: int, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> list[Box]:
    """
    Return the regions of ``n`` faces in a generated image, in face-id order.

    Faces sit in a grid of at most four columns; each box is inset in its cell so boxes never
    touch each other or the image border.
    """
    if n <= 0:
        return []
    cols = min(n, 4)
    rows = -(-n // cols)
    cell_w, cell_h = width // cols, height // rows
    margin_x, margin_y = max(2, cell_w // 8), max(2, cell_h // 8)
    boxes = []
    for index in range(n):
        row, col = divmod(index, cols)
        boxes.append(
            (
                col * cell_w + margin_x,
                row * cell_h + margin_y,
                (col + 1) * cell_w - margin_x,
                (row + 1) * cell_h - margin_y,
            )
        )
    return boxes


class Canvas:
    """A mutable RGB raster with just enough drawing for the emulator's pictures."""

    def __init__(self, width: int, height: int, background: Color = (0, 0, 0)) -> None:
        self.width = width
        self.height = height
        self.rgb = bytearray(bytes(background) * (width * height))

    def fill(self, box: Box, color: Color) -> None:
        """Fill ``box`` (clipped to the canvas) with ``color``."""
        x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(self.width, box[2]), min(self.height, box[3])
        if x0 >= x1 or y0 >= y1:
            return
        span = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.rgb[start : start + len(span)] = span

    def checker(self, box: Box, first: Color, second: Color, cell: int) -> None:
        """Fill ``box`` with a checkerboard of ``cell``-pixel squares."""
        x0, y0, x1, y1 = box
        for cy in range(y0, y1, cell):
            for cx in range(x0, x1, cell):
                even = ((cx - x0) // cell + (cy - y0) // cell) % 2 == 0
                self.fill((cx, cy, min(cx + cell, x1), min(cy + cell, y1)), first if even else second)

    def crop(self, box: Box) -> Canvas:
        """Return a copy of ``box``."""
        x0, y0, x1, y1 = box
        out = Canvas(x1 - x0, y1 - y0)
        row_bytes = (x1 - x0) * 3
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            dst = (y - y0) * row_bytes
            out.rgb[dst : dst + row_bytes] = self.rgb[start : start + row_bytes]
        return out

    def to_png(self) -> bytes:
        """Encode the canvas as PNG."""
        return encode_png(self.width, self.height, bytes(self.rgb))


def _draw_face(canvas: Canvas, box: Box, color: Color) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    canvas.fill(box, color)
    dark = (color[0] // 4, color[1] // 4, color[2] // 4)
    eye = max(2, min(w, h) // 8)
    for ex in (x0 + w // 4, x0 + (3 * w) // 4 - eye):
        canvas.fill((ex, y0 + h // 3, ex + eye, y0 + h // 3 + eye), dark)
    canvas.fill((x0 + w // 4, y0 + (2 * h) // 3, x1 - w // 4, y0 + (2 * h) // 3 + max(1, eye // 2)), dark)


def render_input(name: str, faces: int) -> Canvas:
    """Draw the input image ``name`` with ``faces`` face regions (see :func:`face_boxes`)."""
    canvas = Canvas(IMAGE_WIDTH, IMAGE_HEIGHT, color_for(name, "background"))
    for index, box in enumerate(face_boxes(faces)):
        _draw_face(canvas, box, color_for(f"{name}#{index}", "face"))
    return canvas


def render_result(name: str, faces: int, swaps: Swaps) -> Canvas:
    """
    Draw the result of swapping faces in the input image ``name``.

    Each swapped face's whole box becomes a checkerboard whose colours come from a hash of
    the target URL (the target is never downloaded); every other pixel equals the input.
    """
    canvas = render_input(name, faces)
    boxes = face_boxes(faces)
    for index, target in swaps:
        if 0 <= index < len(boxes):
            box = boxes[index]
            cell = max(2, min(box[2] - box[0], box[3] - box[1]) // 6)
            canvas.checker(box, color_for(target, "tile-a"), color_for(target, "tile-b"), cell)
    return canvas


@functools.lru_cache(maxsize=256)
def input_png(name: str, faces: int) -> bytes:
    """Return the encoded input image (cached)."""
    return render_input(name, faces).to_png()


@functools.lru_cache(maxsize=1024)
def face_png(name: str, faces: int, index: int) -> bytes:
    """Return the encoded crop of face ``index`` of the input image (cached)."""
    return render_input(name, faces).crop(face_boxes(faces)[index]).to_png()


@functools.lru_cache(maxsize=1024)
def result_png(name: str, faces: int, swaps: Swaps) -> bytes:
    """Return the encoded result image (cached)."""
    return render_result(name, faces, swaps).to_png()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rgb: bytes, *, level: int = 6) -> bytes:
    """
    Encode raw 8-bit RGB pixels as a PNG (filter type 0 on every row).

    :param width: Image width in pixels.
    :param height: Image height in pixels.
    :param rgb: ``width * height * 3`` bytes, row by row.
    :param level: zlib compression level.
    """
    stride = width * 3
    if len(rgb) != stride * height:
        raise ValueError(f"expected {stride * height} bytes of RGB, got {len(rgb)}")
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, level))
        + _chunk(b"IEND", b"")
    )


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind: int, line: bytearray, prev: bytes | bytearray, bpp: int) -> None:
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            upleft = prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + _paeth(left, up, upleft)) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter type {kind}")


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """
    Decode an 8-bit, non-interlaced gray, RGB or RGBA PNG.

    :return: ``(width, height, rgb)`` where ``rgb`` holds ``width * height * 3`` bytes
        (alpha is dropped, gray is expanded).
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos = len(_PNG_SIGNATURE)
    header = b""
    idat = bytearray()
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            header = body
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
    if len(header) != 13:
        raise ValueError("PNG without a valid IHDR chunk")
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or color_type not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG: depth={depth} color_type={color_type} interlace={interlace}")
    bpp = _CHANNELS[color_type]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    if len(raw) != (stride + 1) * height:
        raise ValueError("PNG image data has the wrong size")
    prev: bytes | bytearray = bytes(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, prev, bpp)
        rows.append(line)
        prev = line
    pixels = b"".join(rows)
    if bpp == 3:
        return width, height, pixels
    out = bytearray(width * height * 3)
    if bpp == 4:
        for channel in range(3):
            out[channel::3] = pixels[channel::4]
    else:
        for channel in range(3):
            out[channel::3] = pixels
    return width, height, bytes(out)


def changed_faces(input_image: bytes, result_image: bytes, faces: int) -> list[int]:
    """
    The ids of the faces whose region differs between an input image and a result image.

    A person looks at the result to see which faces were swapped; a test asks this instead.

    :param input_image: The input PNG.
    :param result_image: The result PNG (same size).
    :param faces: How many faces the input has.
    :raises ValueError: when the sizes differ, or a pixel outside every face region changed.
    """
    width, height, before = decode_png(input_image)
    result_width, result_height, after = decode_png(result_image)
    if (width, height) != (result_width, result_height):
        raise ValueError(f"sizes differ: {width}x{height} and {result_width}x{result_height}")
    boxes = face_boxes(faces, width, height)
    changed: set[int] = set()
    row_bytes = width * 3
    for y in range(height):
        row = slice(y * row_bytes, (y + 1) * row_bytes)
        if before[row] == after[row]:
            continue
        for x in range(width):
            offset = y * row_bytes + x * 3
            if before[offset : offset + 3] == after[offset : offset + 3]:
                continue
            face = next(
                (i for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= x < x1 and y0 <= y < y1), None
            )
            if face is None:
                raise ValueError(f"pixel ({x}, {y}) changed outside every face region")
            changed.add(face)
    return sorted(changed)
