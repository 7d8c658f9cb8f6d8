"""Large results for memory tests: exact size, a valid PNG, produced and sent in bounded chunks."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from airflow_provider_crun.testing.emulator import CrunEmulator, EmulatorProcess, ManualClock, media
from airflow_provider_crun.testing.emulator.media import STREAM_CHUNK, large_png, result_png

MIB = 1 << 20


def _picture(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.convert("RGB").tobytes()


def _result_url(api: Any, clock: ManualClock) -> str:
    task_id = api.create_task({"model": "x", "input": {}}).json()["data"]["task_id"]
    clock.advance(3.0)
    return str(api.task(task_id)["result"]["media_urls"][0])


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


@pytest.mark.parametrize("total", [MIB, 3 * MIB + 7])
def test_large_png_is_exactly_total_bytes_and_still_the_picture(total: int) -> None:
    png = result_png("group", 3, ())
    large = large_png(png, total)
    data = b"".join(large.chunks)
    assert (large.content_type, large.length, len(data)) == ("image/png", total, total)
    assert _picture(data) == _picture(png)


def test_large_png_splits_padding_into_valid_png_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # PNG chunks hold at most 2**31 - 1 bytes; shrink that limit to check the framing cheaply.
    monkeypatch.setattr(media, "_MAX_PNG_CHUNK", 100_000)
    png = result_png("group", 2, ())
    data = b"".join(large_png(png, 2 * MIB).chunks)
    assert len(data) == 2 * MIB
    assert data.count(b"crPd") > 20
    assert _picture(data) == _picture(png)


def test_large_png_is_produced_in_bounded_chunks_without_building_it() -> None:
    total = 300 * 1000 * 1000
    large = large_png(result_png("group", 2, ()), total)
    tracemalloc.start()
    try:
        sent = largest = 0
        for chunk in large.chunks:
            sent += len(chunk)
            largest = max(largest, len(chunk))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent == total
    assert largest <= STREAM_CHUNK
    assert peak < 8 * MIB, f"{peak} bytes allocated while producing {total}"


@pytest.mark.parametrize("size", [0, MIB - 1])
def test_large_results_below_the_minimum_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        CrunEmulator(large_result_bytes=size)
    with pytest.raises(ValueError, match="at least"):
        large_png(b"\x89PNG", size)


def test_large_result_over_http(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    plain = _result_url(api, clock)
    emu.large_result_bytes = 5 * MIB + 1
    large = _result_url(api, clock)
    head = api.session.head(large, timeout=5)
    assert (head.headers["Content-Type"], head.headers["Content-Length"]) == ("image/png", str(5 * MIB + 1))
    with api.session.get(large, stream=True, timeout=10) as response:
        assert response.headers["Content-Length"] == str(5 * MIB + 1)
        data = b"".join(response.iter_content(chunk_size=MIB))
    assert len(data) == 5 * MIB + 1
    # Same picture as a plain result; the task created before the setting keeps its plain size.
    plain_data = api.session.get(plain, timeout=5).content
    assert _picture(data) == _picture(plain_data)
    assert len(plain_data) < MIB
    # The connection is still usable after streaming.
    assert api.get("/client/account/balance").status_code == 200


def test_admin_option_switches_large_results(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    admin = requests.Session()
    admin.trust_env = False
    answer = admin.post(emu.url + "/_emulator/options", json={"large_result_bytes": 2 * MIB}, timeout=5)
    assert answer.json() == {"large_result_bytes": 2 * MIB}
    assert api.session.head(_result_url(api, clock), timeout=5).headers["Content-Length"] == str(2 * MIB)
    admin.post(emu.url + "/_emulator/options", json={"large_result_bytes": None}, timeout=5)
    assert int(api.session.head(_result_url(api, clock), timeout=5).headers["Content-Length"]) < MIB
    bad = admin.post(emu.url + "/_emulator/options", json={"large_result_bytes": 5}, timeout=5)
    assert bad.status_code == 422
    admin.close()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_process_streams_300_mb_with_a_small_peak_rss() -> None:
    total = 300 * 1000 * 1000
    with EmulatorProcess(args=["--task-delays", "0,0"], large_result_bytes=total) as emu:
        assert emu.process is not None
        session = requests.Session()
        session.trust_env = False
        session.headers["x-api-key"] = emu.api_key
        task = session.post(
            emu.api_url + "/client/job/CreateTask", json={"model": "x", "input": {}}, timeout=5
        )
        task_id = task.json()["data"]["task_id"]
        info = session.get(emu.api_url + "/client/job/TaskInfo", params={"task_id": task_id}, timeout=5)
        url = info.json()["data"]["result"]["media_urls"][0]
        received = 0
        with session.get(url, stream=True, timeout=30) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["Content-Length"] == str(total)
            for chunk in response.iter_content(chunk_size=MIB):
                received += len(chunk)
        session.close()
        peak = _peak_rss_bytes(emu.process.pid)
    assert received == total
    assert peak < 120 * MIB, f"the emulator's peak RSS was {peak >> 20} MiB while serving {total >> 20} MiB"
