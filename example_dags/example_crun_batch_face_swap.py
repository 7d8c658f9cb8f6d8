"""
Swap one face in every image of a batch, with dynamic task mapping, and store every result.

Each image gets its own detection and swap task instance, and each result is streamed into
``output_path``. Rate limiting is opt-in: set ``CRUN_EXAMPLE_CONCURRENCY`` (the environment of
the DAG processor and scheduler) and ``max_active_tis_per_dag`` bounds how many of each Crun step
run at once, deferred ones included; unset, Airflow's own limits apply. No pool is needed.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

EMULATOR = os.environ.get("CRUN_EXAMPLE_MEDIA_BASE", "http://127.0.0.1:8089")
# Opt-in: at most this many detections, and this many swaps, at once (deferred ones included), a
# bound on the Crun jobs in flight to stay inside Crun's rate limit. Unset: no bound of our own.
CRUN_CONCURRENCY = (
    int(os.environ["CRUN_EXAMPLE_CONCURRENCY"]) if os.environ.get("CRUN_EXAMPLE_CONCURRENCY") else None
)

with DAG(
    dag_id="example_crun_batch_face_swap",
    schedule=None,
    catchup=False,
    tags=["example", "crun"],
    params={
        "image_urls": Param(
            [f"{EMULATOR}/media/input/batch-{n}.png?faces=2" for n in range(3)],
            type="array",
            minItems=1,
            description="The images; each gets its own detection and swap.",
        ),
        "new_face": Param(
            f"{EMULATOR}/media/input/new-face.png?faces=1",
            type="string",
            description="The image of the face to put in.",
        ),
        "face_id": Param(
            0, type="integer", minimum=0, description="Which detected face (0, 1, ...) to replace."
        ),
        "output_path": Param(
            "file:///tmp/crun-batch-results/",
            type="string",
            description="Folder the results are stored in: file:///..., s3://conn_id@bucket/prefix/",
        ),
    },
    doc_md=__doc__ + "\nNeeds: a `crun` connection named `crun_default`, and a writable `output_path`.",
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
) as dag:

    @task
    def list_images(params: dict[str, Any]) -> list[str]:
        return list(params["image_urls"])

    # [START howto_operator_crun_batch_mapped]
    detections = CrunDetectFacesOperator.partial(
        task_id="detect_faces", deferrable=True, poll_interval=2, max_active_tis_per_dag=CRUN_CONCURRENCY
    ).expand(image_url=list_images())

    swaps = CrunMultiFaceSwapOperator.partial(
        task_id="swap_faces",
        # The list form, because Jinja renders values but not mapping keys.
        faces=[{"face_id": "{{ params.face_id }}", "target": "{{ params.new_face }}"}],
        output_path="{{ params.output_path }}",
        deferrable=True,
        poll_interval=2,
        max_active_tis_per_dag=CRUN_CONCURRENCY,
    ).expand(detection=detections.output)
    # [END howto_operator_crun_batch_mapped]

    # [START howto_storage_crun_batch_summary]
    @task
    def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
        """Collect every stored result of the batch, and what the batch cost."""
        return {
            "swapped": len(results),
            "stored_paths": [path for result in results for path in result["stored_paths"]],
            "credits": sum(result.get("credits") or 0 for result in results),
        }

    summarize(swaps.output)
    # [END howto_storage_crun_batch_summary]
