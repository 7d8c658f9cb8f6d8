"""
CrunDetectFacesOperator's OpenLineage: the image in, the detected faces' crops out, the detection
as a run facet; in blocking mode, after a deferred resume, and after a failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_crun.events import success_event
from airflow_provider_crun.exceptions import CrunBalanceTooLowError, CrunJobFailedError
from airflow_provider_crun.openlineage.facets import DETECTION_FACET_KEY, CrunDetectionRunFacet
from airflow_provider_crun.operators.detect import CrunDetectFacesOperator
from airflow_provider_crun.protocol import jobs
from tests.support.crun_answers import (
    BALANCE,
    DETECT,
    DETECT_ID,
    DETECT_RESULT,
    DETECT_TASK_ID,
    IMAGE,
    detection_data,
    ok,
)
from tests.support.fakes import make_context


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


def detect(**kwargs: Any) -> CrunDetectFacesOperator:
    return CrunDetectFacesOperator(task_id="detect", image_url=IMAGE, **{"poll_interval": 1, **kwargs})


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def detection_facet(lineage: Any) -> tuple[Any, Any, Any]:
    facet = lineage.run_facets[DETECTION_FACET_KEY]
    assert isinstance(facet, CrunDetectionRunFacet)
    return facet.detect_task_id, facet.detect_id, facet.face_count


def test_complete_names_the_image_the_face_crops_and_the_detection(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))
    operator = detect()
    operator.execute(make_context())

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert names(lineage.inputs) == [("https://example.com", "group.png")]
    assert names(lineage.outputs) == [
        ("https://cdn.example.com", "detected-face-0.jpg"),
        ("https://cdn.example.com", "detected-face-1.jpg"),
    ]
    assert detection_facet(lineage) == (DETECT_TASK_ID, DETECT_ID, 2)


def test_complete_after_a_deferred_resume_reads_the_event() -> None:
    """The resume runs on a fresh operator, with only the event: the lineage comes from it."""
    result = jobs.read_detection(detection_data(), DETECT_TASK_ID).result or {}
    state = {"image_url": IMAGE, "submitted_at": "2099-01-01T00:00:00+00:00"}
    operator = detect(deferrable=True)
    operator.execute_complete(
        make_context(), event=success_event(jobs.DETECTION, DETECT_TASK_ID, result, state)
    )

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert names(lineage.inputs) == [("https://example.com", "group.png")]
    assert [dataset.name for dataset in lineage.outputs] == ["detected-face-0.jpg", "detected-face-1.jpg"]
    assert detection_facet(lineage) == (DETECT_TASK_ID, DETECT_ID, 2)


def test_no_face_found_has_no_output_and_a_face_count_of_zero(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data(faces=[])))
    operator = detect()
    operator.execute(make_context())

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert lineage.outputs == []
    assert detection_facet(lineage) == (DETECT_TASK_ID, DETECT_ID, 0)


def test_failure_names_the_image_and_the_detection_that_failed(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    failed = {"detect_task_id": DETECT_TASK_ID, "status": "failed", "error": "image could not be downloaded"}
    requests_mock.get(DETECT_RESULT, **ok(failed))
    operator = detect()

    with pytest.raises(CrunJobFailedError):
        operator.execute(make_context())
    lineage = operator.get_openlineage_facets_on_failure(None)

    assert names(lineage.inputs) == [("https://example.com", "group.png")]
    assert lineage.outputs == []
    assert detection_facet(lineage) == (DETECT_TASK_ID, None, None)


def test_failure_before_creating_names_no_detection(requests_mock: Any) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 1}))
    operator = detect(min_balance=5)

    with pytest.raises(CrunBalanceTooLowError):
        operator.execute(make_context())

    assert detection_facet(operator.get_openlineage_facets_on_failure(None)) == (None, None, None)
    assert requests_mock.call_count == 1  # the balance read only


def test_failure_with_an_image_url_that_is_no_url_has_no_input() -> None:
    operator = detect()
    operator.image_url = "not a url"

    assert operator.get_openlineage_facets_on_failure(None).inputs == []
