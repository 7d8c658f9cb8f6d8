"""
Long swaps to kill things under: some block a worker slot, some wait deferred in a triggerer.

Each image gets one detection, then one blocking and one deferrable multi-face swap, on the
``crun`` connection named by ``CRUN_DIST_SLOW_CONN`` (an emulator whose tasks take a minute).
Retries come quickly, so a try lost with its worker is retried while the Crun task still runs,
and the retry must reattach to it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

CONN_ID = os.environ.get("CRUN_DIST_SLOW_CONN", "crun_slow")

with DAG(
    dag_id="distributed_crun_slow_swaps",
    schedule=None,
    catchup=False,
    tags=["distributed", "crun"],
    params={
        "image_urls": Param(["http://127.0.0.1/media/input/slow.png?faces=2"], type="array"),
        "new_face": Param("http://127.0.0.1/media/input/new-face.png?faces=1", type="string"),
        "output_path": Param("file:///tmp/crun-dist-slow/", type="string"),
    },
    # Ahead of the batch in every queue, so the kills happen early in it, whatever its size.
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=3),
        "priority_weight": 1000,
        "weight_rule": "absolute",
    },
) as dag:

    @task
    def list_images(params: dict[str, Any]) -> list[str]:
        return list(params["image_urls"])

    detections = CrunDetectFacesOperator.partial(
        task_id="detect_faces", crun_conn_id=CONN_ID, deferrable=True, poll_interval=1
    ).expand(image_url=list_images())
    common: dict[str, Any] = {
        "crun_conn_id": CONN_ID,
        "faces": [{"face_id": 0, "target": "{{ params.new_face }}"}],
        "output_path": "{{ params.output_path }}",
        "poll_interval": 2,
    }
    CrunMultiFaceSwapOperator.partial(task_id="swap_blocking", deferrable=False, **common).expand(
        detection=detections.output
    )
    CrunMultiFaceSwapOperator.partial(task_id="swap_deferred", deferrable=True, **common).expand(
        detection=detections.output
    )
