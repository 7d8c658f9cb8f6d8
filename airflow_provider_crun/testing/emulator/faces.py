"""
Drawn faces: a coloured head with hair, eyes, nose and mouth, told apart by colour and shape.

Every look is a pure function of a text key (and, in a group picture, the face's position), so
the same URL or name always draws the same face. All features stay inside
:func:`head_ellipse` of the face's box, which is also the region a swap replaces.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

try:
    from PIL import Image, ImageDraw
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the Crun emulator draws its images with Pillow: pip install 'airflow-provider-crun[emulator]'"
    ) from error

Box = tuple[int, int, int, int]
"""A half-open pixel rectangle ``(x0, y0, x1, y1)``."""
Color = tuple[int, int, int]

# Saturated head colours, far apart in hue, so neighbouring faces never look alike.
HEAD_COLORS: tuple[Color, ...] = (
    (231, 76, 60),
    (52, 152, 219),
    (46, 204, 113),
    (241, 196, 15),
    (155, 89, 182),
    (230, 126, 34),
    (26, 188, 156),
    (236, 112, 160),
    (141, 110, 99),
    (127, 140, 141),
    (0, 105, 180),
    (160, 210, 60),
)
HAIR_COLORS: tuple[Color, ...] = (
    (30, 30, 30),
    (110, 60, 20),
    (250, 220, 120),
    (190, 60, 20),
    (240, 240, 240),
    (40, 60, 160),
)
HAIR_STYLES = ("bald", "cap", "long", "spiky", "fringe")
EYE_STYLES = ("dots", "round", "square", "sleepy")
MOUTH_STYLES = ("smile", "flat", "open", "frown", "grin")
HEAD_WIDTHS = (1.0, 0.86, 0.74)
INK: Color = (20, 20, 20)


@dataclass(frozen=True)
class FaceLook:
    """How one face is drawn."""

    head: Color
    hair: Color
    hair_style: str
    eyes: str
    mouth: str
    width: float
    glasses: bool


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def pastel_for(key: str) -> Color:
    """A light background colour derived from a hash of ``key``."""
    digest = _digest("background\x00" + key)
    return 190 + digest[0] % 56, 190 + digest[1] % 56, 190 + digest[2] % 56


def _look(picks: list[int]) -> FaceLook:
    return FaceLook(
        head=HEAD_COLORS[picks[0] % len(HEAD_COLORS)],
        hair=HAIR_COLORS[picks[1] % len(HAIR_COLORS)],
        hair_style=HAIR_STYLES[picks[2] % len(HAIR_STYLES)],
        eyes=EYE_STYLES[picks[3] % len(EYE_STYLES)],
        mouth=MOUTH_STYLES[picks[4] % len(MOUTH_STYLES)],
        width=HEAD_WIDTHS[picks[5] % len(HEAD_WIDTHS)],
        glasses=picks[6] % 3 == 0,
    )


def look_for(key: str) -> FaceLook:
    """The look of the single face named ``key`` (a name or a URL)."""
    return _look(list(_digest("face\x00" + key)[:7]))


def group_look(name: str, index: int) -> FaceLook:
    """
    The look of face ``index`` of the group picture ``name``.

    Consecutive faces get different head colours, hair, eyes and mouths (each feature steps
    through its choices), so every face of a picture is told apart at a glance.
    """
    start = _digest("group\x00" + name)
    steps = (1, 1, 2, 1, 2, 1, 1)
    return _look([start[i] + index * steps[i] for i in range(7)])


def head_ellipse(box: Box) -> Box:
    """The largest head drawn in ``box``: an upright ellipse centred in it."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    head_h = max(4, round(h * 0.9))
    head_w = max(4, min(round(w * 0.9), round(head_h * 0.8)))
    left, top = x0 + (w - head_w) // 2, y0 + (h - head_h) // 2
    return left, top, left + head_w, top + head_h


def ellipse_mask(size: tuple[int, int]) -> Image.Image:
    """An ellipse filling ``size``: the head pixels that a face drawing or a swap replaces."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size[0] - 1, size[1] - 1), fill=255)
    return mask


def draw_face(image: Image.Image, box: Box, look: FaceLook) -> None:
    """Draw a face with ``look`` in ``box`` of ``image``; only its :func:`head_ellipse` changes."""
    region = head_ellipse(box)
    layer = image.crop(region)
    w, h = layer.size
    draw = ImageDraw.Draw(layer)
    cx, line = w // 2, max(1, w // 40)
    head_w = max(4, round(w * look.width))
    head = (cx - head_w // 2, 0, cx + head_w // 2, h - 1)
    if look.hair_style == "long":
        draw.ellipse((0, 0, w - 1, h - 1), fill=look.hair)
        head = (head[0] + line * 2, h // 10, head[2] - line * 2, h - 1)
    draw.ellipse(head, fill=look.head, outline=INK, width=line)
    hx0, hy0, hx1, _ = head
    hw = hx1 - hx0
    if look.hair_style == "cap":
        draw.chord((hx0, hy0, hx1, hy0 + h // 2), 180, 360, fill=look.hair)
    elif look.hair_style == "fringe":
        draw.chord((hx0, hy0, hx1, hy0 + h // 3), 180, 360, fill=look.hair)
        draw.rectangle((hx0 + hw // 4, hy0 + h // 8, hx1 - hw // 4, hy0 + h // 6), fill=look.hair)
    elif look.hair_style == "spiky":
        for i in range(5):
            sx = hx0 + hw // 4 + i * hw // 8
            draw.polygon([(sx - hw // 10, h // 6), (sx, line), (sx + hw // 10, h // 6)], fill=look.hair)
    _eyes(draw, cx, hw, int(h * 0.4), max(2, hw // 9), look)
    nose_y = int(h * 0.55)
    draw.line((cx, nose_y - h // 14, cx - hw // 20, nose_y, cx, nose_y), fill=INK, width=line)
    _mouth(draw, cx, hw // 4, int(h * 0.7), max(2, h // 14), line, look.mouth)
    image.paste(layer, region[:2], ellipse_mask(layer.size))


def _eyes(draw: ImageDraw.ImageDraw, cx: int, hw: int, y: int, r: int, look: FaceLook) -> None:
    line = max(1, r // 4)
    for ex in (cx - hw // 5, cx + hw // 5):
        eye = (ex - r, y - r, ex + r, y + r)
        if look.eyes == "dots":
            draw.ellipse((ex - r // 2, y - r // 2, ex + r // 2, y + r // 2), fill=INK)
        elif look.eyes == "round":
            draw.ellipse(eye, fill=(255, 255, 255), outline=INK, width=line)
            draw.ellipse((ex - r // 3, y - r // 3, ex + r // 3, y + r // 3), fill=INK)
        elif look.eyes == "square":
            draw.rectangle(eye, fill=(255, 255, 255), outline=INK, width=line)
            draw.rectangle((ex - r // 3, y - r // 3, ex + r // 3, y + r // 3), fill=(0, 90, 200))
        else:
            draw.arc(eye, 0, 180, fill=INK, width=line * 2)
        if look.glasses:
            draw.ellipse((ex - r * 2, y - r * 2, ex + r * 2, y + r * 2), outline=INK, width=line)
    if look.glasses:
        draw.line((cx - hw // 5 + r * 2, y, cx + hw // 5 - r * 2, y), fill=INK, width=line)


def _mouth(draw: ImageDraw.ImageDraw, cx: int, half: int, y: int, tall: int, line: int, style: str) -> None:
    box = (cx - half, y - tall, cx + half, y + tall)
    if style == "smile":
        draw.arc(box, 0, 180, fill=INK, width=line * 2)
    elif style == "frown":
        draw.arc((cx - half, y, cx + half, y + tall * 2), 180, 360, fill=INK, width=line * 2)
    elif style == "open":
        draw.ellipse((cx - half // 2, y - tall, cx + half // 2, y + tall), fill=(120, 0, 20), outline=INK)
    elif style == "grin":
        draw.chord(box, 0, 180, fill=(255, 255, 255), outline=INK, width=line)
    else:
        draw.line((cx - half, y, cx + half, y), fill=INK, width=line * 2)
