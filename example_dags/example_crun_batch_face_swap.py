"""
Swap one face in every image of a batch, with dynamic task mapping.

Each image gets its own detection and swap task instance. All Crun tasks share the ``crun_api``
pool, so at most that pool's slots call Crun at once and the batch stays inside the API's rate
limit; create it once with ``airflow pools set crun_api 4 "Crun API calls"``.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

EMULATOR = os.environ.get("CRUN_EXAMPLE_MEDIA_BASE", "http://127.0.0.1:8089")
CRUN_POOL = "crun_api"

with DAG(
    dag_id="example_crun_batch_face_swap",
    schedule=None,
    catchup=False,
    tags=["example", "crun"],
    params={
        "image_urls": Param(
            [f"{EMULATOR}/media/input/batch-{n}.png?faces=2" for n in range(3)], type="array", minItems=1
        ),
        "new_face": Param(f"{EMULATOR}/media/input/new-face.png?faces=1", type="string"),
        "face_id": Param(0, type="integer", minimum=0),
    },
    default_args={"retries": 2, "pool": CRUN_POOL},
    max_active_tasks=16,
) as dag:

    @task(pool="default_pool")
    def list_images(params: dict[str, Any]) -> list[str]:
        return list(params["image_urls"])

    detections = CrunDetectFacesOperator.partial(
        task_id="detect_faces", deferrable=True, poll_interval=2
    ).expand(image_url=list_images())

    swaps = CrunMultiFaceSwapOperator.partial(
        task_id="swap_faces",
        # The list form, because Jinja renders values but not mapping keys.
        faces=[{"face_id": "{{ params.face_id }}", "target": "{{ params.new_face }}"}],
        deferrable=True,
        poll_interval=2,
    ).expand(detection=detections.output)

    @task(pool="default_pool")
    def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
        """Collect every result URL of the batch."""
        return {
            "swapped": len(results),
            "media_urls": [url for result in results for url in result["media_urls"]],
            "credits": sum(result.get("credits") or 0 for result in results),
        }

    summarize(swaps.output)
