"""
The end-to-end suite's own DAGs: the multi-face-swap flow, built once per scenario.

The harness writes ``e2e_dags.json`` next to this file in the deployment's dags folder. Each entry
names a DAG and the knobs the scenario needs: the ``crun`` connection (each scenario has its own
emulator behind its own connection, so its request counts are its own), blocking or deferrable,
retries, and what the swap gets as its detection: the detect task's XCom; ``detect_id`` and
``image_url`` as templates (the only way to make Crun itself answer 422, since the operator
refuses a mismatch it can see); or the XCom with ``expires_at`` replaced from the run's conf.

The swap stores its result into the run's ``output_path`` (a ``file://`` folder per run), as the
example DAG does; ``report`` says what was stored.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_crun.operators.crun import CrunDetectFacesOperator, CrunMultiFaceSwapOperator

MANIFEST = Path(__file__).with_name("e2e_dags.json")
DETECTION_XCOM = "ti.xcom_pull(task_ids='detect_faces')"


def _specs() -> list[dict[str, Any]]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []


@task
def report(swap_result: dict[str, Any]) -> dict[str, Any]:
    """Say which Crun task made the result and where it is stored, as the example DAG does."""
    return {
        "crun_task_id": swap_result["crun_task_id"],
        "stored_paths": swap_result["stored_paths"],
        "credits": swap_result["credits"],
    }


def build(spec: dict[str, Any]) -> DAG:
    """One swap DAG: detect -> swap -> report."""
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
            "output_path": Param("file:///tmp/crun-e2e-results/", type="string"),
            "expires_at": Param("2000-01-01T00:00:00+00:00", type="string"),
        },
        default_args={"retries": spec["retries"], "retry_delay": timedelta(seconds=spec["retry_delay"])},
        render_template_as_native_obj=True,
    ) as dag:
        detect = CrunDetectFacesOperator(
            task_id="detect_faces", image_url="{{ params.image_url }}", **waiting
        )
        storing = {"faces": "{{ params.faces }}", "output_path": "{{ params.output_path }}", **waiting}
        if spec["swap_input"] == "detection":
            swap = CrunMultiFaceSwapOperator(task_id="swap_faces", detection=detect.output, **storing)
        elif spec["swap_input"] == "expired_detection":
            swap = CrunMultiFaceSwapOperator(
                task_id="swap_faces",
                detection=f"{{{{ dict({DETECTION_XCOM}, expires_at=params.expires_at) }}}}",
                **storing,
            )
            detect >> swap
        else:
            swap = CrunMultiFaceSwapOperator(
                task_id="swap_faces",
                detect_id=f"{{{{ {DETECTION_XCOM}['detect_id'] }}}}",
                image_url="{{ params.swap_image_url or params.image_url }}",
                **storing,
            )
            detect >> swap
        report(swap.output)
    return dag


for _spec in _specs():
    globals()[_spec["dag_id"]] = build(_spec)
