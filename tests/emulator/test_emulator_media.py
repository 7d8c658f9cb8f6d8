"""Generated media: drawn faces told apart, results that show each swapped face's target, served types."""

from __future__ import annotations

import io
import itertools
import socket
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from airflow_provider_crun.testing.emulator import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    CrunEmulator,
    ManualClock,
    changed_faces,
    face_boxes,
    input_png,
    render_input,
    render_portrait,
)
from airflow_provider_crun.testing.emulator.faces import group_look, head_ellipse, look_for
from airflow_provider_crun.testing.emulator.media import to_png
from airflow_provider_crun.testing.emulator.urls import image_name_for_url


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def _head(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The head region of the face in ``box``, at a fixed size so any two heads compare."""
    return image.crop(head_ellipse(box)).resize((60, 90), Image.Resampling.BILINEAR)


def _distance(first: Image.Image, second: Image.Image) -> float:
    """Mean absolute pixel difference inside two heads (0: identical, 255: opposite)."""
    inside = Image.new("L", first.size, 0)
    ImageDraw.Draw(inside).ellipse((3, 3, first.width - 4, first.height - 4), fill=255)
    return float(sum(ImageStat.Stat(ImageChops.difference(first, second), inside).mean) / 3)


def _portrait_head(image: Image.Image) -> Image.Image:
    return _head(image, (0, 0, *image.size))


def _swap(api: Any, clock: ManualClock, swap_body: Any, image_url: str, swap: dict[int, str]) -> bytes:
    """Detect ``image_url``, swap the faces in ``swap`` and return the result file."""
    detect_task_id = api.detect(image_url)
    clock.advance(2.0)
    detection = api.detection(detect_task_id)
    targets = {
        i: t.format(**{f"link{f['id']}": f["link"] for f in detection["result"]["faces"]})
        for i, t in swap.items()
    }
    task_id = api.create_task(swap_body(detection, image_url, targets)).json()["data"]["task_id"]
    clock.advance(3.0)
    result = api.session.get(api.task(task_id)["result"]["media_urls"][0], timeout=5)
    assert result.status_code == 200
    return bytes(result.content)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 32])
def test_face_boxes_are_disjoint_and_inside(n: int) -> None:
    boxes = face_boxes(n)
    assert len(boxes) == n
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        assert 0 < x0 < x1 < IMAGE_WIDTH
        assert 0 < y0 < y1 < IMAGE_HEIGHT
        for other in boxes[index + 1 :]:
            assert x1 <= other[0] or other[2] <= x0 or y1 <= other[1] or other[3] <= y0
    assert face_boxes(0) == []


@pytest.mark.parametrize("n", [3, 5, 12])
def test_group_faces_are_told_apart(n: int) -> None:
    looks = [group_look("team", i) for i in range(n)]
    assert len({look.head for look in looks}) == n, "every face of a picture has its own head colour"
    for first, second in itertools.pairwise(looks):
        assert (first.hair_style, first.eyes, first.mouth) != (second.hair_style, second.eyes, second.mouth)
    picture = render_input("team", n)
    heads = [_head(picture, box) for box in face_boxes(n)]
    for index, head in enumerate(heads):
        for other in heads[index + 1 :]:
            assert _distance(head, other) > 20


def test_group_picture_draws_the_faces_in_their_boxes() -> None:
    picture = render_input("group", 3)
    background = picture.getpixel((0, 0))
    for box, look in zip(face_boxes(3), (group_look("group", i) for i in range(3)), strict=True):
        colours = {colour for _, colour in picture.crop(head_ellipse(box)).getcolors(1 << 16) or []}
        assert look.head in colours
        assert background != look.head
    assert picture.size == (IMAGE_WIDTH, IMAGE_HEIGHT)


def test_portraits_differ_per_name_and_are_stable() -> None:
    alice, bob = render_portrait("alice"), render_portrait("bob")
    assert to_png(alice) == to_png(render_portrait("alice"))
    assert _distance(_portrait_head(alice), _portrait_head(bob)) > 20
    assert look_for("alice") != look_for("bob")
    assert look_for("alice").head in {colour for _, colour in alice.getcolors(1 << 16) or []}


def test_served_media_types_and_lengths(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("crops", faces=3)
    detect_task_id = api.detect(image_url)
    clock.advance(2.0)
    faces = api.detection(detect_task_id)["result"]["faces"]
    task_id = api.create_task({"model": "x", "input": {"image_url": image_url}}).json()["data"]["task_id"]
    clock.advance(3.0)
    result_url = api.task(task_id)["result"]["media_urls"][0]
    urls = [image_url, emu.face_image_url("alice"), *(face["link"] for face in faces), result_url]
    for url in urls:
        response = api.session.get(url, timeout=5)
        assert response.status_code == 200, url
        assert response.headers["Content-Type"] == "image/png"
        assert int(response.headers["Content-Length"]) == len(response.content) > 0
        _image(response.content)
        head = api.session.head(url, timeout=5)
        assert (head.status_code, head.headers["Content-Length"], head.content) == (
            200,
            response.headers["Content-Length"],
            b"",
        )
    assert emu.counts["media"] == 2 * len(urls)


def test_served_pictures_are_the_drawn_ones(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("crops", faces=3)
    served = _image(api.session.get(image_url, timeout=5).content)
    assert served.tobytes() == render_input("crops", 3).tobytes()
    portrait = _image(api.session.get(emu.face_image_url("alice"), timeout=5).content)
    assert portrait.tobytes() == render_portrait("alice").tobytes()
    detect_task_id = api.detect(image_url)
    clock.advance(2.0)
    faces = api.detection(detect_task_id)["result"]["faces"]
    for face, box in zip(faces, face_boxes(3), strict=True):
        crop = _image(api.session.get(face["link"], timeout=5).content)
        assert crop.tobytes() == served.crop(box).tobytes()
    detect_id = faces[0]["link"].split("/")[-2]
    assert api.session.get(f"{emu.url}/media/faces/{detect_id}/3.png", timeout=5).status_code == 404
    assert api.session.get(f"{emu.url}/media/results/task_nope.png", timeout=5).status_code == 404


@pytest.mark.parametrize("swapped", [{1}, {0, 2}, set(), {0, 1, 2}], ids=["one", "two", "none", "all"])
def test_result_changes_exactly_the_swapped_faces(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any, swapped: set[int]
) -> None:
    image_url = emu.input_image_url("group", faces=3)
    result = _swap(api, clock, swap_body, image_url, {i: f"https://example.com/new-{i}.jpg" for i in swapped})
    assert changed_faces(api.session.get(image_url, timeout=5).content, result, 3) == sorted(swapped)


def test_each_swapped_face_shows_its_target(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any
) -> None:
    image_url = emu.input_image_url("group", faces=3)
    foreign = "https://faces.example/carol.jpg"
    swap = {0: foreign, 1: emu.face_image_url("alice"), 2: "{link2}"}
    result = _image(_swap(api, clock, swap_body, image_url, swap))
    before = render_input("group", 3)
    boxes = face_boxes(3)
    expected = {0: _portrait_head(render_portrait(foreign)), 1: _portrait_head(render_portrait("alice"))}
    for index, target_head in expected.items():
        became = _head(result, boxes[index])
        assert _distance(became, target_head) < 8, f"face {index} does not show its target"
        assert _distance(became, _head(before, boxes[index])) > 20
    # Face 2's target is its own detected link: it stays exactly as it was.
    assert result.crop(boxes[2]).tobytes() == before.crop(boxes[2]).tobytes()


def test_a_face_swapped_to_another_detected_face_becomes_a_copy_of_it(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any
) -> None:
    image_url = emu.input_image_url("pair", faces=2)
    result = _image(_swap(api, clock, swap_body, image_url, {0: "{link1}"}))
    first, second = face_boxes(2)
    assert _distance(_head(result, first), _head(result, second)) < 2
    assert _distance(_head(result, first), _head(render_input("pair", 2), first)) > 20


def test_an_input_picture_as_target_gives_its_first_face(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any
) -> None:
    image_url = emu.input_image_url("group", faces=2)
    new_face = emu.input_image_url("new-face", faces=1)
    result = _image(_swap(api, clock, swap_body, image_url, {1: new_face}))
    target = render_input("new-face", 1)
    assert _distance(_head(result, face_boxes(2)[1]), _head(target, face_boxes(1)[0])) < 8


def test_foreign_targets_are_drawn_from_a_hash_never_fetched(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{sock.getsockname()[1]}/face.png"
    image_url = emu.input_image_url("group", faces=2)
    first = _swap(api, clock, swap_body, image_url, {0: unreachable})
    again = _swap(api, clock, swap_body, image_url, {0: unreachable})
    other = _swap(api, clock, swap_body, image_url, {0: unreachable + "?v=2"})
    assert first == again
    assert first != other
    head = _head(_image(first), face_boxes(2)[0])
    assert _distance(head, _portrait_head(render_portrait(unreachable))) < 8


def test_single_face_swap_changes_face_zero(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("single", faces=2)
    body = {
        "model": "image-face-swap",
        "input": {"image_url": image_url, "new_face": emu.face_image_url("x")},
    }
    task_id = api.create_task(body).json()["data"]["task_id"]
    clock.advance(3.0)
    result = api.session.get(api.task(task_id)["result"]["media_urls"][0], timeout=5).content
    assert changed_faces(input_png("single", 2), result, 2) == [0]
    became = _head(_image(result), face_boxes(2)[0])
    assert _distance(became, _portrait_head(render_portrait("x"))) < 8


def test_generic_model_echoes_the_input(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("echo", faces=1)
    task_id = api.create_task({"model": "image-upscale", "input": {"image_url": image_url}}).json()["data"]
    clock.advance(3.0)
    result_url = api.task(task_id["task_id"])["result"]["media_urls"][0]
    assert api.session.get(result_url, timeout=5).content == api.session.get(image_url, timeout=5).content


def test_input_names_are_url_quoted(emu: CrunEmulator, api: Any) -> None:
    image_url = emu.input_image_url("team photo/1", faces=1)
    assert "team%20photo%2F1.png" in image_url
    served = _image(api.session.get(image_url, timeout=5).content)
    assert served.tobytes() == render_input("team photo/1", 1).tobytes()
    assert image_name_for_url(image_url) == "team photo/1"
    assert (
        image_name_for_url("https://example.com/media/input/a/b.png")
        == "https://example.com/media/input/a/b.png"
    )


def test_changed_faces_names_exactly_the_changed_regions() -> None:
    before = render_input("group", 3)
    assert changed_faces(to_png(before), to_png(before), 3) == []
    after = before.copy()
    after.putpixel((face_boxes(3)[2][0], face_boxes(3)[2][1]), (1, 2, 3))
    assert changed_faces(to_png(before), to_png(after), 3) == [2]
    # Other encodings of the same pixels (RGBA, another compression) change nothing.
    assert changed_faces(to_png(before), to_png(before.convert("RGBA")), 3) == []


def test_changed_faces_refuses_changes_outside_faces() -> None:
    before = render_input("group", 2)
    after = before.copy()
    red, green, blue = before.getpixel((0, 0))  # type: ignore[misc]
    after.putpixel((0, 0), (255 - red, green, blue))
    with pytest.raises(ValueError, match=r"pixel \(0, 0\) changed outside every face region"):
        changed_faces(to_png(before), to_png(after), 2)
    with pytest.raises(ValueError, match="sizes differ"):
        changed_faces(to_png(before), to_png(render_portrait("x")), 2)
