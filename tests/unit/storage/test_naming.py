"""The pure naming rules: media types, extensions, file names, redaction."""

from __future__ import annotations

import pytest

from airflow_provider_crun.storage.errors import StorageConfigError
from airflow_provider_crun.storage.naming import (
    check_task_id,
    extension_for,
    is_media_type,
    media_name,
    media_type,
    partial_name,
    redact_url,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("image/png", "image/png"),
        ("Image/PNG; charset=binary", "image/png"),
        ("  video/mp4 ", "video/mp4"),
        ("", ""),
        (None, ""),
    ],
)
def test_media_type_normalises_the_header(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("image/png", True),
        ("video/mp4", True),
        ("image/x-vendor", True),
        ("image/", False),
        ("text/html", False),
        ("application/octet-stream", False),
        ("imagex/png", False),
        ("", False),
    ],
)
def test_only_images_and_videos_are_media(content_type: str, accepted: bool) -> None:
    assert is_media_type(content_type) is accepted


@pytest.mark.parametrize(
    ("content_type", "urls", "expected"),
    [
        ("image/png", ("https://cdn/x.jpg",), "png"),
        ("image/jpeg", (), "jpg"),
        ("image/webp", (), "webp"),
        ("video/mp4", (), "mp4"),
        ("video/quicktime", (), "mov"),
        ("image/x-vendor", ("https://cdn/a/photo.JPEG?sig=1",), "jpg"),
        ("image/x-vendor", ("https://cdn/a/render%2Eavif",), "avif"),
        ("image/x-vendor", ("https://cdn/r/abc", "https://bucket/abc.webp"), "webp"),
        ("image/x-vendor", ("https://cdn/a.b/noext",), "bin"),
        ("image/x-vendor", ("https://cdn/a/file.toolongext",), "bin"),
        ("image/x-vendor", ("https://cdn/a/file.p-g",), "bin"),
        ("image/x-vendor", (), "bin"),
    ],
    ids=[
        "type-wins",
        "jpeg",
        "webp",
        "mp4",
        "mov",
        "url-jpeg-alias",
        "url-percent-encoded",
        "url-after-redirect",
        "dot-in-folder-only",
        "url-too-long",
        "url-not-alnum",
        "bin",
    ],
)
def test_extension_for(content_type: str, urls: tuple[str, ...], expected: str) -> None:
    assert extension_for(content_type, *urls) == expected


def test_media_name() -> None:
    assert media_name("task_12345678", 0, "png") == "task_12345678_0.png"
    assert media_name("task_1", 11, "mp4") == "task_1_11.mp4"


@pytest.mark.parametrize("crun_task_id", ["task_12345678", "abc-DEF.1", "a" * 200])
def test_check_task_id_accepts_crun_ids(crun_task_id: str) -> None:
    assert check_task_id(crun_task_id) == crun_task_id


@pytest.mark.parametrize("crun_task_id", ["", ".x", "../x", "a/b", "a\\b", "a b", "a\nb", "a" * 201, 5])
def test_check_task_id_refuses_what_cannot_name_a_file(crun_task_id: object) -> None:
    with pytest.raises(StorageConfigError):
        check_task_id(crun_task_id)  # type: ignore[arg-type]


def test_partial_names_are_hidden_and_unique() -> None:
    names = {partial_name("task_1_0.png") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".task_1_0.png.partial-") for n in names)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example/a/b.png", "https://cdn.example/a/b.png"),
        ("https://user:secret@cdn.example/b.png", "https://cdn.example/b.png"),
        ("https://cdn.example/b.png?X-Amz-Signature=abc&e=1", "https://cdn.example/b.png?..."),
        ("https://cdn.example/b.png#frag", "https://cdn.example/b.png"),
        ("http://[::1", "<unparsable URL>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
