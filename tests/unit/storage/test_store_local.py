"""``store_results`` into ``file://`` folders: names, idempotent retries, atomic writes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from airflow_provider_crun.storage import MediaDownloadError, StoredMedia
from tests.support.media_server import Media, MediaServer
from tests.support.stored_media import PNG, TASK, listing, store_into

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-body" * 900


def test_names_files_by_task_id_and_index(cdn: MediaServer, out: Path) -> None:
    urls = [
        cdn.add("/r/a.png", Media(PNG, "image/png")),
        cdn.add("/r/b", Media(JPEG, "image/jpeg; charset=binary")),
        cdn.add("/r/c.mp4", Media(b"mp4-bytes" * 10, "video/mp4")),
    ]

    stored = store_into(out, urls)

    assert listing(out) == [f"{TASK}_0.png", f"{TASK}_1.jpg", f"{TASK}_2.mp4"]
    assert (out / f"{TASK}_0.png").read_bytes() == PNG
    assert (out / f"{TASK}_1.jpg").read_bytes() == JPEG
    assert stored[1] == StoredMedia(f"file://{out}/{TASK}_1.jpg", len(JPEG), "image/jpeg", skipped=False)
    assert [s.size for s in stored] == [len(PNG), len(JPEG), 90]
    assert stored[0].to_dict() == {
        "uri": f"file://{out}/{TASK}_0.png",
        "size": len(PNG),
        "content_type": "image/png",
        "skipped": False,
    }


@pytest.mark.parametrize(
    ("path", "content_type", "expected"),
    [
        ("/m/x.png", "image/webp", "webp"),  # the content type wins over the URL
        ("/m/photo.JPEG", "image/x-vendor", "jpg"),  # an unknown type: the URL's extension
        ("/m/render.heic", "image/x-vendor", "heic"),
        ("/m/no-extension", "image/x-vendor", "bin"),  # neither tells
        ("/m/weird.tar-gz!", "video/x-vendor", "bin"),  # not a plausible extension
    ],
    ids=["type-wins", "url-jpeg-alias", "url-heic", "bin", "implausible-url-suffix"],
)
def test_extension_fallbacks(
    cdn: MediaServer, out: Path, path: str, content_type: str, expected: str
) -> None:
    url = cdn.add(path, Media(PNG, content_type))

    [stored] = store_into(out, [url])

    assert stored.uri.endswith(f"/{TASK}_0.{expected}")
    assert listing(out) == [f"{TASK}_0.{expected}"]


def test_retry_downloads_nothing(cdn: MediaServer, out: Path) -> None:
    urls = [cdn.add("/r/a.png", Media(PNG)), cdn.add("/r/b.jpg", Media(JPEG, "image/jpeg"))]
    first = store_into(out, urls)
    inodes = {name: os.stat(out / name).st_ino for name in listing(out)}

    second = store_into(out, urls)

    assert cdn.count("GET") == 2  # the first call's only
    assert [s.skipped for s in first] == [False, False]
    assert [s.skipped for s in second] == [True, True]
    assert [(s.uri, s.size, s.content_type) for s in second] == [
        (s.uri, s.size, s.content_type) for s in first
    ]
    assert {name: os.stat(out / name).st_ino for name in listing(out)} == inodes


def test_retry_without_head_reads_no_body(cdn: MediaServer, out: Path) -> None:
    """Where HEAD is refused, the GET's Content-Length decides before the body is read."""
    url = cdn.add("/r/a.png", Media(PNG, head_status=405))
    store_into(out, [url])
    inode = os.stat(out / f"{TASK}_0.png").st_ino

    [stored] = store_into(out, [url])

    assert stored.skipped
    assert os.stat(out / f"{TASK}_0.png").st_ino == inode  # not rewritten
    assert listing(out) == [f"{TASK}_0.png"]


def test_file_of_another_size_is_replaced(cdn: MediaServer, out: Path) -> None:
    out.mkdir(parents=True)
    (out / f"{TASK}_0.png").write_bytes(b"stale, shorter")
    url = cdn.add("/r/a.png", Media(PNG))

    [stored] = store_into(out, [url])

    assert not stored.skipped
    assert (out / f"{TASK}_0.png").read_bytes() == PNG
    assert listing(out) == [f"{TASK}_0.png"]


def test_without_content_length_a_retry_rewrites_the_same_name(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG, send_length=False))

    store_into(out, [url])
    [stored] = store_into(out, [url])

    assert not stored.skipped  # nothing tells that the stored file is complete
    assert listing(out) == [f"{TASK}_0.png"]
    assert (out / f"{TASK}_0.png").read_bytes() == PNG


def test_dropped_download_leaves_no_file_and_a_retry_stores_it(cdn: MediaServer, out: Path) -> None:
    media = Media(PNG, drop_after=len(PNG) // 2)
    url = cdn.add("/r/a.png", media)

    with pytest.raises(MediaDownloadError) as raised:
        store_into(out, [url])

    assert raised.value.retryable
    assert listing(out) == []  # neither the final name nor a temporary file
    media.drop_after = None
    [stored] = store_into(out, [url])
    assert (out / f"{TASK}_0.png").read_bytes() == PNG
    assert not stored.skipped


def test_partial_write_is_never_visible_under_its_final_name(cdn: MediaServer, out: Path) -> None:
    # The client reads 1 MiB chunks: pause after two of them, so the writer has some to write.
    body = os.urandom(3 * 1024 * 1024)
    media = Media(body, pause_after=2 * 1024 * 1024)
    url = cdn.add("/r/a.png", media)
    results: list[StoredMedia] = []
    worker = threading.Thread(target=lambda: results.extend(store_into(out, [url])))
    worker.start()
    try:
        assert media.paused.wait(timeout=30)
        partial = _wait_for_partial(out, worker)
        assert partial.startswith(f".{TASK}_0.png.partial-")
        assert not (out / f"{TASK}_0.png").exists()
    finally:
        media.resume.set()
        worker.join(timeout=30)
    assert [r.size for r in results] == [len(body)]
    assert listing(out) == [f"{TASK}_0.png"]
    assert (out / f"{TASK}_0.png").read_bytes() == body


def _wait_for_partial(folder: Path, worker: threading.Thread) -> str:
    # Half the body is on the wire; the writer gets it to disk when it next runs. Poll until
    # the temporary file shows up (no timing assertion: the worker's liveness bounds the loop).
    while worker.is_alive():
        names = [n for n in listing(folder) if ".partial-" in n] if folder.exists() else []
        if names and (folder / names[0]).stat().st_size > 0:
            return names[0]
        worker.join(timeout=0.01)
    pytest.fail("the copy finished while the server was paused")


def test_follows_cdn_redirects(cdn: MediaServer, out: Path) -> None:
    target = cdn.add("/storage/abc.webp", Media(PNG, "image/x-vendor"))
    url = cdn.add("/r/abc", Media(redirect_to=target))

    [stored] = store_into(out, [url])

    assert stored.uri.endswith(f"/{TASK}_0.webp")  # extension from the URL after the redirect
    assert (out / f"{TASK}_0.webp").read_bytes() == PNG
