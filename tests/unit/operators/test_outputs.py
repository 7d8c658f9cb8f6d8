"""
What a finished Crun task leaves in the user's world, and the guard that spends no credit on a low balance.

The Crun API is requests-mock; the result file is served by a loopback CDN
(:class:`~tests.support.media_server.MediaServer`), so every byte really travels and every
download is counted. Files land in ``output_path``, their URIs reach XCom, the outlets get asset
events, and the lineage names the source image, the face targets and the stored files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors
from requests_mock import ANY

from airflow_provider_crun.events import success_event
from airflow_provider_crun.exceptions import (
    CrunBalanceTooLowError,
    CrunInputError,
    CrunJobFailedError,
    CrunOutputError,
    CrunOutputRejectedError,
)
from airflow_provider_crun.operators import _outputs
from airflow_provider_crun.operators.swap import CrunMultiFaceSwapOperator
from airflow_provider_crun.operators.task import RESULT_URL_XCOM_KEY, CrunCreateTaskOperator
from airflow_provider_crun.protocol import calls, jobs
from tests.support.connections import crun_connection_json
from tests.support.crun_answers import (
    API,
    BALANCE,
    CREATE,
    DETECT_ID,
    FACE_0,
    IMAGE,
    NEW_FACE,
    TASK_ID,
    TASK_INFO,
    detection_xcom,
    ok,
    task_data,
)
from tests.support.fakes import FakeTaskStateStore, make_context
from tests.support.media_server import Media, MediaServer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-body" * 300
MULTI = calls.MODEL_MULTI_FACE_SWAP
VIDEO_MODEL = "video-face-swap-multi"
VIDEO_INPUT = {"video_url": IMAGE, "faces": [{"face_id": 0, "target": NEW_FACE}]}
SWAP_ASSET = Asset("crun_face_swaps")
RESULTS_ALIAS = AssetAlias("crun_results")


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


@pytest.fixture
def cdn(requests_mock: Any) -> Iterator[MediaServer]:
    """The loopback CDN; requests-mock, which intercepts every session, lets its downloads through."""
    with MediaServer() as server:
        requests_mock.register_uri(ANY, re.compile(re.escape(server.base) + "/"), real_http=True)
        yield server


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The output folder; it does not exist yet, the operator creates it."""
    return tmp_path / "results"


def folder_uri(folder: Path) -> str:
    return folder.as_uri() + "/"


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporary files included."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def crun_succeeds(requests_mock: Any, *media_urls: str, credits: float = 6) -> None:
    """CreateTask answers TASK_ID, and TaskInfo says it succeeded with ``media_urls``."""
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    finished = task_data("success", result={"media_urls": list(media_urls)}, credits=credits)
    requests_mock.get(TASK_INFO, **ok(finished))


def crun_calls(requests_mock: Any) -> list[tuple[str, str]]:
    """The requests that reached the Crun API (not the CDN), as ``(method, url without query)``."""
    return [
        (request.method, request.url.split("?")[0])
        for request in requests_mock.request_history
        if request.url.startswith(API)
    ]


def creations(requests_mock: Any) -> int:
    return crun_calls(requests_mock).count(("POST", CREATE))


def swap_operator(**kwargs: Any) -> CrunMultiFaceSwapOperator:
    arguments: dict[str, Any] = {
        "task_id": "swap",
        "detection": detection_xcom(),
        "faces": {1: NEW_FACE},
        "poll_interval": 1,
    }
    arguments.update(kwargs)
    return CrunMultiFaceSwapOperator(**arguments)


def create_operator(**kwargs: Any) -> CrunCreateTaskOperator:
    arguments: dict[str, Any] = {"task_id": "create", "model": VIDEO_MODEL, "input": VIDEO_INPUT}
    arguments.update(poll_interval=1, **kwargs)
    return CrunCreateTaskOperator(**arguments)


OPERATORS = {"multi-face swap": swap_operator, "any model (CreateTask)": create_operator}


# --------------------------------------------------------------------------------------------
# Files in output_path


@pytest.mark.parametrize("make", list(OPERATORS.values()), ids=list(OPERATORS))
def test_blocking_run_stores_the_result_as_task_id_0_png_and_returns_its_uri(
    requests_mock: Any, cdn: MediaServer, out: Path, make: Any
) -> None:
    url = cdn.add("/r/result.png", Media(PNG))
    crun_succeeds(requests_mock, url)
    context = make_context(FakeTaskStateStore())

    result = make(output_path=folder_uri(out)).execute(context)

    assert listing(out) == [f"{TASK_ID}_0.png"]
    assert (out / f"{TASK_ID}_0.png").read_bytes() == PNG
    assert result["stored_paths"] == [f"{out.as_uri()}/{TASK_ID}_0.png"]
    assert result["media_urls"] == [url]
    assert context["ti"].xcoms[RESULT_URL_XCOM_KEY] == url
    assert cdn.count("GET") == 1


def test_every_result_file_is_stored_in_order_with_its_own_extension(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    urls = [cdn.add("/r/a", Media(PNG)), cdn.add("/r/b", Media(JPEG, "image/jpeg"))]
    crun_succeeds(requests_mock, *urls)

    result = swap_operator(output_path=folder_uri(out)).execute(make_context(FakeTaskStateStore()))

    assert result["stored_paths"] == [
        f"{out.as_uri()}/{TASK_ID}_0.png",
        f"{out.as_uri()}/{TASK_ID}_1.jpg",
    ]
    assert (out / f"{TASK_ID}_1.jpg").read_bytes() == JPEG


def test_output_path_as_object_storage_path(requests_mock: Any, cdn: MediaServer, out: Path) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/result.png", Media(PNG)))

    result = swap_operator(output_path=ObjectStoragePath(folder_uri(out))).execute(make_context())

    assert result["stored_paths"] == [f"{out.as_uri()}/{TASK_ID}_0.png"]
    assert listing(out) == [f"{TASK_ID}_0.png"]


def test_output_conn_id_reaches_the_store_which_refuses_a_second_connection(
    requests_mock: Any, cdn: MediaServer
) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/result.png", Media(PNG)))
    operator = swap_operator(output_path="s3://aws_a@bucket/crun/", output_conn_id="aws_b")

    with pytest.raises(CrunInputError, match="uses connection 'aws_a', but conn_id='aws_b'"):
        operator.execute(make_context())

    assert crun_calls(requests_mock) == []  # refused before anything is created
    assert cdn.requests == []


UNUSABLE_OUTPUT_PATHS = {
    "relative path": "relative/out/",
    "read-only https folder": "https://cdn.example.com/out/",
    "a secret as userinfo": "s3://key:secret@bucket/out/",
    "file URI naming a host": "file://host/data/",
}


@pytest.mark.parametrize("output_path", list(UNUSABLE_OUTPUT_PATHS.values()), ids=list(UNUSABLE_OUTPUT_PATHS))
def test_an_unusable_output_path_fails_before_any_credit_is_spent(
    requests_mock: Any, output_path: str
) -> None:
    crun_succeeds(requests_mock, "https://cdn.example.com/result.png")

    with pytest.raises(CrunInputError, match="output_path is unusable") as caught:
        swap_operator(output_path=output_path).execute(make_context())

    assert isinstance(caught.value, AirflowFailException)
    assert "key:secret" not in str(caught.value)
    assert crun_calls(requests_mock) == []


def test_without_output_path_nothing_is_downloaded(requests_mock: Any, cdn: MediaServer) -> None:
    url = cdn.add("/r/result.png", Media(PNG))
    crun_succeeds(requests_mock, url)

    result = swap_operator().execute(make_context())

    assert (result["media_urls"], result["stored_paths"]) == ([url], [])
    assert cdn.requests == []


def test_deferrable_run_stores_the_file_in_the_resume_method(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    url = cdn.add("/r/result.png", Media(PNG))
    event = success_event(
        jobs.TASK,
        TASK_ID,
        {"status": "success", "media_urls": [url], "credits": 6, "duration_s": 4.2},
        {"model": MULTI},
    )

    result = swap_operator(output_path=folder_uri(out), deferrable=True).execute_complete(
        make_context(), event
    )

    assert result["stored_paths"] == [f"{out.as_uri()}/{TASK_ID}_0.png"]
    assert (out / f"{TASK_ID}_0.png").read_bytes() == PNG
    assert crun_calls(requests_mock) == []


def test_retry_reattaching_to_the_stored_succeeded_task_downloads_nothing_and_writes_no_copy(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/result.png", Media(PNG)))
    store = FakeTaskStateStore()
    first = swap_operator(output_path=folder_uri(out)).execute(make_context(store))
    stored = out / f"{TASK_ID}_0.png"
    inode = stored.stat().st_ino

    # The next try of the same task instance: same store, same request, a fresh operator.
    second = swap_operator(output_path=folder_uri(out)).execute(make_context(store))

    assert second["stored_paths"] == first["stored_paths"]
    assert creations(requests_mock) == 1
    assert cdn.count("GET") == 1  # only the first try downloaded the body
    assert listing(out) == [f"{TASK_ID}_0.png"]
    assert stored.stat().st_ino == inode  # not rewritten
    assert stored.read_bytes() == PNG


def test_a_dropped_download_is_retryable_and_the_retry_stores_the_file_without_a_new_task(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    media = Media(PNG, drop_after=1000)
    crun_succeeds(requests_mock, cdn.add("/r/result.png", media))
    store = FakeTaskStateStore()

    with pytest.raises(CrunOutputError, match=r"Downloading Crun result .*/r/result\.png failed") as caught:
        swap_operator(output_path=folder_uri(out)).execute(make_context(store))

    assert not isinstance(caught.value, AirflowFailException)
    assert listing(out) == []  # no partial file, under any name
    media.drop_after = None
    result = swap_operator(output_path=folder_uri(out)).execute(make_context(store))
    assert result["stored_paths"] == [f"{out.as_uri()}/{TASK_ID}_0.png"]
    assert (out / f"{TASK_ID}_0.png").read_bytes() == PNG
    assert creations(requests_mock) == 1


REJECTED = {
    "text/html is not an image or video": (Media(b"<html>oops</html>", "text/html"), {}, "'text/html'"),
    "larger than max_output_bytes": (Media(PNG), {"max_output_bytes": 100}, "the cap is 100 bytes"),
}


@pytest.mark.parametrize(("media", "kwargs", "reason"), list(REJECTED.values()), ids=list(REJECTED))
def test_a_result_that_can_never_be_stored_fails_without_retry(
    requests_mock: Any, cdn: MediaServer, out: Path, media: Media, kwargs: dict[str, Any], reason: str
) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/result", media))

    with pytest.raises(CrunOutputRejectedError, match=re.escape(reason)) as caught:
        swap_operator(output_path=folder_uri(out), **kwargs).execute(make_context())

    assert isinstance(caught.value, AirflowFailException)
    assert cdn.count("GET") == 0  # refused on the HEAD's headers
    assert listing(out) == []


# --------------------------------------------------------------------------------------------
# Asset events


def test_an_asset_outlet_gets_one_event_whose_extra_names_the_stored_files_and_the_task(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    urls = [cdn.add("/r/a.png", Media(PNG)), cdn.add("/r/b.png", Media(PNG))]
    crun_succeeds(requests_mock, *urls, credits=12)
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()

    swap_operator(output_path=folder_uri(out), outlets=[SWAP_ASSET]).execute(context)

    assert list(events) == [SWAP_ASSET]
    assert events[SWAP_ASSET].extra == {
        "stored_paths": [f"{out.as_uri()}/{TASK_ID}_0.png", f"{out.as_uri()}/{TASK_ID}_1.png"],
        "crun_task_id": TASK_ID,
        "model": MULTI,
        "credits": 12,
        "image_url": IMAGE,
        "face_ids": [1],
        "conn_id": None,
    }
    assert events[SWAP_ASSET].asset_alias_events == []


def test_an_asset_alias_outlet_gets_one_event_per_stored_file_with_the_file_as_asset(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    urls = [cdn.add("/r/a.png", Media(PNG)), cdn.add("/r/b.jpg", Media(JPEG, "image/jpeg"))]
    crun_succeeds(requests_mock, *urls)
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()

    swap_operator(output_path=folder_uri(out), outlets=[RESULTS_ALIAS]).execute(context)

    added = events[RESULTS_ALIAS].asset_alias_events
    paths = [f"{out.as_uri()}/{TASK_ID}_0.png", f"{out.as_uri()}/{TASK_ID}_1.jpg"]
    assert [(event.source_alias_name, event.dest_asset_key.uri) for event in added] == [
        ("crun_results", paths[0]),
        ("crun_results", paths[1]),
    ]
    assert [event.extra for event in added] == [
        {
            "stored_path": path,
            "crun_task_id": TASK_ID,
            "model": MULTI,
            "credits": 6,
            "image_url": IMAGE,
            "face_ids": [1],
            "conn_id": None,
        }
        for path in paths
    ]


def test_a_create_task_event_names_the_first_input_url_and_no_face_ids(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/a.png", Media(PNG)))
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()

    create_operator(output_path=folder_uri(out), outlets=[SWAP_ASSET]).execute(context)

    assert (events[SWAP_ASSET].extra["image_url"], events[SWAP_ASSET].extra["face_ids"]) == (IMAGE, [])
    assert events[SWAP_ASSET].extra["model"] == VIDEO_MODEL


def test_without_stored_files_the_outlets_get_no_extra(requests_mock: Any, cdn: MediaServer) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/a.png", Media(PNG)))
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()

    swap_operator(outlets=[SWAP_ASSET, RESULTS_ALIAS]).execute(context)

    assert len(events) == 0


# --------------------------------------------------------------------------------------------
# Lineage

URLS_IN = {
    "a plain URL": ("https://a.example/x.png", ["https://a.example/x.png"]),
    "not a URL": ("m1oZzqYp9dN", []),
    "ftp is not read over http": ("ftp://a.example/x.png", []),
    "a number": (3, []),
    "nested, in order": (
        {"image_url": "http://a/1", "faces": [{"face_id": 0, "target": "https://b/2"}], "n": None},
        ["http://a/1", "https://b/2"],
    ),
    "a tuple": (("https://a/1", ["https://b/2"]), ["https://a/1", "https://b/2"]),
}


@pytest.mark.parametrize(("value", "expected"), list(URLS_IN.values()), ids=list(URLS_IN))
def test_urls_in(value: Any, expected: list[str]) -> None:
    assert _outputs.urls_in(value) == expected


def crun_facet(lineage: Any) -> tuple[Any, Any, Any]:
    facet = lineage.run_facets["crun"]
    return facet.crun_task_id, facet.model, facet.credits


def test_lineage_on_complete_reads_the_source_and_targets_and_writes_the_stored_file(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    crun_succeeds(requests_mock, cdn.add("/r/a.png", Media(PNG)), credits=6)
    operator = swap_operator(output_path=folder_uri(out))
    operator.execute(make_context())

    lineage = operator.get_openlineage_facets_on_complete(None)

    # Face 0 is sent with its own detected crop as target (to keep it), face 1 with the new face.
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("https://example.com", "group.png"),
        ("https://cdn.example.com", "detected-face-0.jpg"),
        ("https://example.com", "new-face.jpg"),
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", f"{out}/{TASK_ID}_0.png")]
    assert crun_facet(lineage) == (TASK_ID, MULTI, 6)


def test_lineage_on_failure_names_the_inputs_and_the_task_that_failed(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    failed = task_data("failed", result={"code": 501, "message": "no face in target"})
    requests_mock.get(TASK_INFO, **ok(failed))
    operator = swap_operator(output_path="file:///never/written/")

    with pytest.raises(CrunJobFailedError):
        operator.execute(make_context())
    lineage = operator.get_openlineage_facets_on_failure(None)

    assert [d.name for d in lineage.inputs] == ["group.png", "detected-face-0.jpg", "new-face.jpg"]
    assert lineage.outputs == []
    assert crun_facet(lineage) == (TASK_ID, MULTI, None)


def test_lineage_on_failure_before_creating_names_no_task(requests_mock: Any) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 1}))
    operator = swap_operator(min_balance=5)

    with pytest.raises(CrunBalanceTooLowError):
        operator.execute(make_context())

    assert crun_facet(operator.get_openlineage_facets_on_failure(None)) == (None, MULTI, None)


# --------------------------------------------------------------------------------------------
# The credit guard: min_balance

REFUSED = {
    "operator min_balance=5, balance 3": ({"min_balance": 5}, None, 3, "3", "5"),
    "connection extra min_balance=10, balance 9.5": ({}, 10, 9.5, "9.5", "10"),
    "operator min_balance=5 wins over the extra's 1, balance 4": ({"min_balance": 5}, 1, 4, "4", "5"),
}


@pytest.mark.parametrize(
    ("kwargs", "extra", "balance", "shown_balance", "shown_threshold"),
    list(REFUSED.values()),
    ids=list(REFUSED),
)
@pytest.mark.parametrize("make", list(OPERATORS.values()), ids=list(OPERATORS))
def test_a_balance_below_min_balance_refuses_with_only_the_balance_read(
    requests_mock: Any,
    monkeypatch: pytest.MonkeyPatch,
    make: Any,
    kwargs: dict[str, Any],
    extra: float | None,
    balance: float,
    shown_balance: str,
    shown_threshold: str,
) -> None:
    if extra is not None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(timeout=5, max_retries=3, min_balance=extra)
        )
    requests_mock.get(BALANCE, **ok({"balance": balance}))
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    store = FakeTaskStateStore()

    with pytest.raises(CrunBalanceTooLowError) as caught:
        make(**kwargs).execute(make_context(store))

    assert isinstance(caught.value, AirflowFailException)
    message = str(caught.value)
    assert f"balance is {shown_balance} credits, below min_balance={shown_threshold}" in message
    assert "no Crun task was created" in message
    assert crun_calls(requests_mock) == [("GET", BALANCE)]  # zero creation requests
    assert store.writes == []


ALLOWED = {
    "balance above min_balance": ({"min_balance": 5}, None, 50),
    "balance exactly min_balance": ({"min_balance": 5}, None, 5),
    "balance above the connection extra": ({}, 10, 11),
    "operator min_balance=5 wins over the extra's 100": ({"min_balance": 5}, 100, 50),
}


@pytest.mark.parametrize(("kwargs", "extra", "balance"), list(ALLOWED.values()), ids=list(ALLOWED))
def test_a_balance_at_or_above_min_balance_reads_it_then_creates(
    requests_mock: Any,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, Any],
    extra: float | None,
    balance: float,
) -> None:
    if extra is not None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(timeout=5, max_retries=3, min_balance=extra)
        )
    requests_mock.get(BALANCE, **ok({"balance": balance}))
    crun_succeeds(requests_mock, "https://cdn.example.com/result.png")

    result = swap_operator(**kwargs).execute(make_context())

    assert result["crun_task_id"] == TASK_ID
    assert crun_calls(requests_mock) == [("GET", BALANCE), ("POST", CREATE), ("GET", TASK_INFO)]


def test_without_min_balance_the_balance_is_never_read(requests_mock: Any) -> None:
    crun_succeeds(requests_mock, "https://cdn.example.com/result.png")

    swap_operator().execute(make_context())

    assert crun_calls(requests_mock) == [("POST", CREATE), ("GET", TASK_INFO)]


def test_a_retry_reattaching_to_its_stored_task_never_reads_the_balance(
    requests_mock: Any, cdn: MediaServer, out: Path
) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 0}))
    crun_succeeds(requests_mock, cdn.add("/r/a.png", Media(PNG)))
    operator = swap_operator(min_balance=5, output_path=folder_uri(out))
    fingerprint = operator._creation_request(make_context()).fingerprint
    store = FakeTaskStateStore(crun_task_id=TASK_ID, crun_task_id_fingerprint=fingerprint)

    result = operator.execute(make_context(store))

    assert result["stored_paths"] == [f"{out.as_uri()}/{TASK_ID}_0.png"]
    assert crun_calls(requests_mock) == [("GET", TASK_INFO)]


def test_a_retry_whose_stored_task_failed_checks_the_balance_before_creating_anew(
    requests_mock: Any,
) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 2}))
    requests_mock.get(TASK_INFO, **ok(task_data("failed")))
    requests_mock.post(CREATE, **ok({"task_id": "task_new"}))
    operator = swap_operator(min_balance=5)
    fingerprint = operator._creation_request(make_context()).fingerprint
    store = FakeTaskStateStore(crun_task_id=TASK_ID, crun_task_id_fingerprint=fingerprint)

    with pytest.raises(CrunBalanceTooLowError, match="balance is 2 credits, below min_balance=5"):
        operator.execute(make_context(store))

    assert crun_calls(requests_mock) == [("GET", TASK_INFO), ("GET", BALANCE)]


def test_inputs_of_the_multi_swap_are_its_detected_image_and_targets() -> None:
    """The swap's ``input`` is what the lineage reads: detect_id is not a URL, the rest are."""
    swap_input = swap_operator()._input()

    assert swap_input["detect_id"] == DETECT_ID
    assert _outputs.urls_in(swap_input) == [IMAGE, FACE_0, NEW_FACE]
