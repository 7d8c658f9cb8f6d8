"""Generated media: the PNG codec, face geometry, and results that change exactly the swapped faces."""

from __future__ import annotations

import io
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    CrunEmulator,
    ManualClock,
    decode_png,
    encode_png,
    face_boxes,
    render_input,
)
from airflow_provider_crun.testing.emulator.media import image_name_for_url


def _changed_pixels(before: bytes, after: bytes, width: int) -> set[tuple[int, int]]:
    return {
        ((i // 3) % width, (i // 3) // width)
        for i in range(0, len(before), 3)
        if before[i : i + 3] != after[i : i + 3]
    }


def _inside(box: tuple[int, int, int, int], pixel: tuple[int, int]) -> bool:
    return box[0] <= pixel[0] < box[2] and box[1] <= pixel[1] < box[3]


def test_png_round_trip() -> None:
    rgb = bytes((i * 7) % 256 for i in range(32 * 24 * 3))
    png = encode_png(32, 24, rgb)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode_png(png) == (32, 24, rgb)
    with pytest.raises(ValueError, match="expected"):
        encode_png(2, 2, b"\x00")


def test_decode_png_reads_pillow_output() -> None:
    image_module = pytest.importorskip("PIL.Image")
    canvas = render_input("pillow", 3)
    buffer = io.BytesIO()
    for mode in ("RGB", "RGBA"):
        image = image_module.frombytes("RGB", (canvas.width, canvas.height), bytes(canvas.rgb)).convert(mode)
        buffer.seek(0)
        buffer.truncate()
        image.save(buffer, format="PNG", optimize=True)
        assert decode_png(buffer.getvalue()) == (canvas.width, canvas.height, bytes(canvas.rgb))


def test_decode_png_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        decode_png(b"GIF89a")
    with pytest.raises(ValueError, match="IHDR"):
        decode_png(b"\x89PNG\r\n\x1a\n")


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


def test_served_input_and_face_crops(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("crops", faces=3)
    response = api.session.get(image_url, timeout=5)
    assert response.headers["Content-Type"] == "image/png"
    width, height, rgb = decode_png(response.content)
    assert (width, height, rgb) == (IMAGE_WIDTH, IMAGE_HEIGHT, bytes(render_input("crops", 3).rgb))
    detect_task_id = api.detect(image_url)
    clock.advance(2.0)
    faces = api.detection(detect_task_id)["result"]["faces"]
    assert len(faces) == 3
    for face, box in zip(faces, face_boxes(3), strict=True):
        crop_w, crop_h, crop = decode_png(api.session.get(face["link"], timeout=5).content)
        assert (crop_w, crop_h) == (box[2] - box[0], box[3] - box[1])
        first_row = rgb[(box[1] * width + box[0]) * 3 : (box[1] * width + box[2]) * 3]
        assert crop[: crop_w * 3] == first_row
    assert (
        api.session.get(f"{emu.url}/media/faces/{faces[0]['link'].split('/')[-2]}/3.png").status_code == 404
    )
    assert emu.counts["media"] == 5


@pytest.mark.parametrize("swapped", [{1}, {0, 2}, set(), {0, 1, 2}], ids=["one", "two", "none", "all"])
def test_result_differs_exactly_in_swapped_faces(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any, swapped: set[int]
) -> None:
    image_url = emu.input_image_url("group", faces=3)
    detect_task_id = api.detect(image_url)
    clock.advance(2.0)
    detection = api.detection(detect_task_id)
    body = swap_body(detection, image_url, {i: f"https://example.com/new-{i}.jpg" for i in swapped})
    task_id = api.create_task(body).json()["data"]["task_id"]
    assert api.session.get(f"{emu.url}/media/results/{task_id}.png", timeout=5).status_code == 404
    clock.advance(3.0)
    result_url = api.task(task_id)["result"]["media_urls"][0]
    _, _, before = decode_png(api.session.get(image_url, timeout=5).content)
    width, _, after = decode_png(api.session.get(result_url, timeout=5).content)
    changed = _changed_pixels(before, after, width)
    boxes = face_boxes(3)
    for index, box in enumerate(boxes):
        in_box = {pixel for pixel in changed if _inside(box, pixel)}
        if index in swapped:
            assert len(in_box) > (box[2] - box[0]) * (box[3] - box[1]) // 2
        else:
            assert not in_box
    assert all(any(_inside(boxes[i], pixel) for i in swapped) for pixel in changed)


def test_single_face_swap_changes_face_zero(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("single", faces=2)
    body = {"model": "image-face-swap", "input": {"image_url": image_url, "new_face": "https://e.x/f.png"}}
    task_id = api.create_task(body).json()["data"]["task_id"]
    clock.advance(3.0)
    result_url = api.task(task_id)["result"]["media_urls"][0]
    _, _, before = decode_png(api.session.get(image_url, timeout=5).content)
    width, _, after = decode_png(api.session.get(result_url, timeout=5).content)
    changed = _changed_pixels(before, after, width)
    assert changed
    assert all(_inside(face_boxes(2)[0], pixel) for pixel in changed)


def test_generic_model_echoes_the_input(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("echo", faces=1)
    task_id = api.create_task({"model": "image-upscale", "input": {"image_url": image_url}}).json()["data"]
    clock.advance(3.0)
    result_url = api.task(task_id["task_id"])["result"]["media_urls"][0]
    assert decode_png(api.session.get(result_url, timeout=5).content) == decode_png(
        api.session.get(image_url, timeout=5).content
    )


def test_input_names_are_url_quoted(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    image_url = emu.input_image_url("team photo/1", faces=1)
    assert "team%20photo%2F1.png" in image_url
    _, _, served = decode_png(api.session.get(image_url, timeout=5).content)
    assert served == bytes(render_input("team photo/1", 1).rgb)
    assert image_name_for_url(image_url) == "team photo/1"
    assert (
        image_name_for_url("https://example.com/media/input/a/b.png")
        == "https://example.com/media/input/a/b.png"
    )


def test_changed_faces_names_exactly_the_swapped_regions() -> None:
    from airflow_provider_crun.testing.emulator import changed_faces
    from airflow_provider_crun.testing.emulator.media import input_png, result_png

    before = input_png("group", 3)
    assert changed_faces(before, before, 3) == []
    after = result_png("group", 3, ((2, "https://faces.example/new.png"),))
    assert changed_faces(before, after, 3) == [2]


def test_changed_faces_refuses_changes_outside_faces() -> None:
    from airflow_provider_crun.testing.emulator import changed_faces, decode_png, encode_png
    from airflow_provider_crun.testing.emulator.media import input_png

    before = input_png("group", 2)
    width, height, rgb = decode_png(before)
    corner_changed = bytes([255 - rgb[0]]) + rgb[1:]
    with pytest.raises(ValueError, match=r"pixel \(0, 0\) changed outside every face region"):
        changed_faces(before, encode_png(width, height, corner_changed), 2)
