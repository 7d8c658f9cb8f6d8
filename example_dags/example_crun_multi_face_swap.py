"""
Detect the faces in a group photo, swap some of them, and store the result in your storage.

The detection (its ``detect_id``, the detected image URL and each face's crop) reaches the swap
through XCom. Faces named in ``faces`` get a new face; every other detected face is left as it
is. Both Crun steps are deferrable: they wait in the triggerer, not in a worker slot. The result
image is streamed into ``output_path`` and announced as an event of the ``crun_face_swaps``
asset, which ``example_crun_use_swapped_image`` is scheduled on.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

EMULATOR = os.environ.get("CRUN_EXAMPLE_MEDIA_BASE", "http://127.0.0.1:8089")
# [START howto_storage_crun_asset]
CRUN_FACE_SWAPS = Asset("crun_face_swaps")
# [END howto_storage_crun_asset]

with DAG(
    dag_id="example_crun_multi_face_swap",
    schedule=None,
    catchup=False,
    tags=["example", "crun"],
    doc_md=__doc__
    + """
Needs: a `crun` connection named `crun_default` (for the local emulator:
`{"conn_type": "crun", "host": "http://127.0.0.1:8089", "password": "dev-key"}`), and a folder
or bucket that the workers can write to (`output_path`).
""",
    params={
        "image_url": Param(
            f"{EMULATOR}/media/input/team-photo.png?faces=3",
            type="string",
            description="The group photo. The swap must use the very URL that was detected.",
        ),
        "faces": Param(
            {"1": f"{EMULATOR}/media/input/new-face.png?faces=1"},
            type="object",
            description=(
                "Face id -> image of the new face. Keys are the face ids the detection returns "
                "(0, 1, ...); faces left out stay as they are."
            ),
        ),
        "output_path": Param(
            "file:///tmp/crun-results/",
            type="string",
            description="Folder the result image is stored in: file:///..., s3://conn_id@bucket/prefix/, gs://...",
        ),
    },
    default_args={"retries": 2},
    # [START howto_operator_crun_native_obj]
    # "{{ params.faces }}" must reach the operator as a mapping, not as its string form.
    render_template_as_native_obj=True,
    # [END howto_operator_crun_native_obj]
) as dag:
    # [START howto_operator_crun_detect_faces]
    detect = CrunDetectFacesOperator(
        task_id="detect_faces",
        image_url="{{ params.image_url }}",
        deferrable=True,
        poll_interval=1,
    )
    # [END howto_operator_crun_detect_faces]

    # [START howto_operator_crun_multi_face_swap]
    swap = CrunMultiFaceSwapOperator(
        task_id="swap_faces",
        detection=detect.output,
        faces="{{ params.faces }}",
        output_path="{{ params.output_path }}",
        outlets=[CRUN_FACE_SWAPS],
        deferrable=True,
        poll_interval=1,
    )
    # [END howto_operator_crun_multi_face_swap]

    # [START howto_storage_crun_stored_paths]
    @task
    def report(swap_result: dict[str, Any], detection: dict[str, Any]) -> dict[str, Any]:
        """Say what happened: which faces were found, what was swapped, where the result is."""
        return {
            "image_url": detection["image_url"],
            "faces_detected": [face["id"] for face in detection["faces"]],
            "crun_task_id": swap_result["crun_task_id"],
            "stored_paths": swap_result["stored_paths"],
            "credits": swap_result["credits"],
        }

    report(swap.output, detect.output)
    # [END howto_storage_crun_stored_paths]
