"""The two write strategies, on stores that show what a reader would see at each step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from airflow_provider_crun.storage import writers
from tests.support.stored_media import listing

MiB = 1024 * 1024


class FakeObjectStore(AbstractFileSystem):
    """An S3-like store: parts upload as they fill, the object appears only on the final one."""

    protocol = "fakes3"
    cachable = False  # a fresh store per test

    def __init__(self, *, discard_clears_buffer: bool = True) -> None:
        super().__init__()
        self.discard_clears_buffer = discard_clears_buffer
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, list[bytes]] = {}
        self.files: list[FakeUpload] = []
        self.made_dirs: list[str] = []

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> FakeUpload:
        # s3fs's own default is 50 MiB, held in memory: the writer must ask for less.
        file = FakeUpload(self, path, mode, block_size=block_size or 50 * MiB, **kwargs)
        self.files.append(file)
        return file

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.made_dirs.append(path)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.objects[path2] = self.objects.pop(path1)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return path in self.objects

    def rm(self, path: str, **kwargs: Any) -> None:
        del self.objects[path]


class FakeUpload(AbstractBufferedFile):
    fs: FakeObjectStore

    def _initiate_upload(self) -> None:
        self.fs.uploads[self.path] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self.fs.uploads.setdefault(self.path, []).append(self.buffer.getvalue())
        if final:
            self.fs.objects[self.path] = b"".join(self.fs.uploads.pop(self.path))
        return True

    def discard(self) -> None:
        self.fs.uploads.pop(self.path, None)
        if self.fs.discard_clears_buffer:
            self.buffer = None


def _chunks(total: int, *, fail_after: int | None = None) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("the CDN dropped the connection")
        chunk = bytes([sent % 251]) * min(MiB, total - sent)
        sent += len(chunk)
        yield chunk


def test_part_size_bounds_memory_and_respects_s3_limits() -> None:
    assert writers.part_size(200 * MiB) == 5 * MiB
    assert writers.part_size(1) == 5 * MiB
    huge = 100 * 1024 * MiB
    assert writers.part_size(huge) * writers.MAX_PARTS >= huge


def test_commit_on_close_writes_the_final_key_in_parts() -> None:
    fs = FakeObjectStore()

    written = writers.write_atomically(
        fs, "bucket/out/t_0.png", _chunks(12 * MiB), protocol="s3", max_bytes=200 * MiB
    )

    assert written == 12 * MiB
    assert list(fs.objects) == ["bucket/out/t_0.png"]
    assert len(fs.objects["bucket/out/t_0.png"]) == 12 * MiB
    assert fs.files[0].blocksize == 5 * MiB  # bounded buffer, not fsspec's default


def test_commit_on_close_failure_shows_nothing_and_aborts_the_upload() -> None:
    fs = FakeObjectStore()

    with pytest.raises(ConnectionResetError):
        writers.write_atomically(
            fs,
            "bucket/out/t_0.png",
            _chunks(12 * MiB, fail_after=7 * MiB),
            protocol="s3",
            max_bytes=200 * MiB,
        )

    assert fs.uploads == {}  # the started multipart upload was aborted
    assert fs.objects == {}


def test_commit_on_close_failure_never_commits_later() -> None:
    """fsspec's close(), which a with-block or __del__ calls, would commit what was written."""
    fs = FakeObjectStore(discard_clears_buffer=False)

    with pytest.raises(ConnectionResetError):
        writers.write_atomically(
            fs, "bucket/t_0.png", _chunks(3 * MiB, fail_after=2 * MiB), protocol="s3", max_bytes=MiB
        )

    [file] = fs.files
    file.close()  # what garbage collection would do
    assert fs.objects == {}


def test_write_then_rename_leaves_only_the_final_file(tmp_path: Path) -> None:
    fs = LocalFileSystem()

    written = writers.write_atomically(
        fs, f"{tmp_path}/t_0.png", _chunks(3 * MiB), protocol="file", max_bytes=MiB
    )

    assert written == 3 * MiB
    assert listing(tmp_path) == ["t_0.png"]


def test_write_then_rename_removes_the_temporary_file_on_failure(tmp_path: Path) -> None:
    fs = LocalFileSystem()

    with pytest.raises(ConnectionResetError):
        writers.write_atomically(
            fs, f"{tmp_path}/t_0.png", _chunks(3 * MiB, fail_after=MiB), protocol="file", max_bytes=MiB
        )

    assert listing(tmp_path) == []


def test_write_then_rename_removes_the_temporary_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = LocalFileSystem()

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only folder")

    monkeypatch.setattr(fs, "mv", refuse)

    with pytest.raises(PermissionError):
        writers.write_atomically(fs, f"{tmp_path}/t_0.png", _chunks(MiB), protocol="file", max_bytes=MiB)

    assert listing(tmp_path) == []


def test_unknown_protocols_use_write_then_rename() -> None:
    fs = FakeObjectStore()

    writers.write_atomically(fs, "bucket/t_0.png", _chunks(MiB), protocol="gs", max_bytes=MiB)

    [file] = fs.files
    assert file.path.startswith("bucket/.t_0.png.partial-")
    assert list(fs.objects) == ["bucket/t_0.png"]


@pytest.mark.parametrize(("protocol", "creates"), [("file", True), ("", True), ("s3", False), ("gs", False)])
def test_prepare_folder_never_creates_buckets(protocol: str, creates: bool) -> None:
    fs = FakeObjectStore()

    writers.prepare_folder(fs, "bucket/out", protocol)

    assert fs.made_dirs == (["bucket/out"] if creates else [])


def test_existing_size(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    (tmp_path / "a.png").write_bytes(b"12345")
    (tmp_path / "dir.png").mkdir()

    assert writers.existing_size(fs, f"{tmp_path}/a.png") == 5
    assert writers.existing_size(fs, f"{tmp_path}/missing.png") is None
    assert writers.existing_size(fs, f"{tmp_path}/dir.png") is None
