"""
The end-to-end suite's own DAGs: the multi-face-swap flow, built once per scenario.

The harness writes ``e2e_dags.json`` next to this file in the deployment's dags folder. Each entry
names a DAG and the knobs the scenario needs: the ``crun`` connection (each scenario has its own
emulator behind its own connection, so its request counts are its own), blocking or deferrable,
retries, and whether the swap reads the detection from XCom or gets ``detect_id`` and
``image_url`` as templates (the only way to make Crun itself answer 422, since the operator
refuses a mismatch it can see).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

MANIFEST = Path(__file__).with_name("e2e_dags.json")


def _specs() -> list[dict[str, Any]]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []


@task
def fetch_result(swap_result: dict[str, Any], params: dict[str, Any], crun_conn_id: str) -> dict[str, Any]:
    """Download the swapped image, as the example DAG does."""
    from airflow_provider_crun.hooks.crun import CrunHook

    (result_url, *_) = swap_result["media_urls"]
    path = CrunHook(crun_conn_id=crun_conn_id).download_media(result_url, params["output_dir"])
    return {"crun_task_id": swap_result["crun_task_id"], "result_url": result_url, "result_path": path}


def build(spec: dict[str, Any]) -> DAG:
    """One swap DAG: detect -> swap -> fetch_result."""
    conn_id = spec["conn_id"]
    waiting = {"deferrable": spec["deferrable"], "poll_interval": 1, "crun_conn_id": conn_id}
    with DAG(
        dag_id=spec["dag_id"],
        schedule=None,
        catchup=False,
        tags=["e2e", "crun"],
        params={
            "image_url": Param("http://127.0.0.1/media/input/e2e.png?faces=3", type="string"),
            "faces": Param({"1": "http://127.0.0.1/media/input/new-face.png?faces=1"}, type="object"),
            "swap_image_url": Param(None, type=["null", "string"]),
            "output_dir": Param("/tmp/crun-e2e-results", type="string"),
        },
        default_args={"retries": spec["retries"], "retry_delay": timedelta(seconds=spec["retry_delay"])},
        render_template_as_native_obj=True,
    ) as dag:
        detect = CrunDetectFacesOperator(
            task_id="detect_faces", image_url="{{ params.image_url }}", **waiting
        )
        if spec["swap_input"] == "detection":
            swap = CrunMultiFaceSwapOperator(
                task_id="swap_faces", detection=detect.output, faces="{{ params.faces }}", **waiting
            )
        else:
            swap = CrunMultiFaceSwapOperator(
                task_id="swap_faces",
                detect_id="{{ ti.xcom_pull(task_ids='detect_faces')['detect_id'] }}",
                image_url="{{ params.swap_image_url or params.image_url }}",
                faces="{{ params.faces }}",
                **waiting,
            )
            detect >> swap
        fetch_result(swap.output, crun_conn_id=conn_id)
    return dag


for _spec in _specs():
    globals()[_spec["dag_id"]] = build(_spec)
