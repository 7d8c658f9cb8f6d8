"""
Detect the faces in a group photo, swap some of them, and fetch the result image.

The detection (with its ``detect_id``, the detected image URL and each face's crop) reaches the
swap through XCom. Faces given in ``faces`` get a new face; every other detected face is left as
it is. Both Crun steps are deferrable: they wait in the triggerer, not in a worker slot.

The defaults work against the local emulator (``make demo``): start it with
``python -m airflow_provider_crun.testing.emulator --port 8089`` and point ``crun_default`` at
``http://127.0.0.1:8089``.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

EMULATOR = os.environ.get("CRUN_EXAMPLE_MEDIA_BASE", "http://127.0.0.1:8089")

with DAG(
    dag_id="example_crun_multi_face_swap",
    schedule=None,
    catchup=False,
    tags=["example", "crun"],
    params={
        "image_url": Param(f"{EMULATOR}/media/input/team-photo.png?faces=3", type="string"),
        # Face id -> new face. JSON object keys are strings; the operator reads "1" as face 1.
        "faces": Param({"1": f"{EMULATOR}/media/input/new-face.png?faces=1"}, type="object"),
        "output_dir": Param("/tmp/crun-results", type="string"),
    },
    default_args={"retries": 2},
    # "{{ params.faces }}" must reach the operator as a mapping, not as its string form.
    render_template_as_native_obj=True,
) as dag:
    detect = CrunDetectFacesOperator(
        task_id="detect_faces",
        image_url="{{ params.image_url }}",
        deferrable=True,
        poll_interval=1,
    )

    swap = CrunMultiFaceSwapOperator(
        task_id="swap_faces",
        detection=detect.output,
        faces="{{ params.faces }}",
        deferrable=True,
        poll_interval=1,
    )

    @task
    def fetch_result(swap_result: dict[str, Any], detection: dict[str, Any], params: dict[str, Any]) -> dict:
        """Download the swapped image and report what happened."""
        from airflow_provider_crun.hooks.crun import CrunHook

        (result_url, *_) = swap_result["media_urls"]
        path = CrunHook().download_media(result_url, params["output_dir"])
        return {
            "image_url": detection["image_url"],
            "faces_detected": [face["id"] for face in detection["faces"]],
            "crun_task_id": swap_result["crun_task_id"],
            "result_url": result_url,
            "result_path": path,
            "credits": swap_result.get("credits"),
        }

    fetch_result(swap.output, detect.output)
