"""
Fire and forget, then wait: submit a single-face swap without waiting, and let a deferrable
``CrunTaskSensor`` wait for it. Useful when other work can run between submission and result,
or when the Crun task id comes from elsewhere.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_provider_crun.operators.crun import CrunCreateTaskOperator
from airflow_provider_crun.sensors.crun import CrunTaskSensor

EMULATOR = os.environ.get("CRUN_EXAMPLE_MEDIA_BASE", "http://127.0.0.1:8089")

with DAG(
    dag_id="example_crun_task_sensor",
    schedule=None,
    catchup=False,
    tags=["example", "crun"],
    doc_md=__doc__ + "\nNeeds: a `crun` connection named `crun_default`.",
    params={
        "image_url": Param(
            f"{EMULATOR}/media/input/portrait.png?faces=1",
            type="string",
            description="A portrait with one face.",
        ),
        "new_face": Param(
            f"{EMULATOR}/media/input/new-face.png?faces=1",
            type="string",
            description="The image of the face to put in.",
        ),
    },
) as dag:
    # [START howto_operator_crun_create_task]
    submit = CrunCreateTaskOperator(
        task_id="submit_swap",
        model="image-face-swap",
        input={"image_url": "{{ params.image_url }}", "new_face": "{{ params.new_face }}"},
        wait_for_completion=False,
    )
    # [END howto_operator_crun_create_task]

    # [START howto_sensor_crun_task]
    wait = CrunTaskSensor(
        task_id="wait_for_swap",
        crun_task_id="{{ ti.xcom_pull(task_ids='submit_swap')['crun_task_id'] }}",
        deferrable=True,
        poke_interval=1,
        timeout=600,
    )
    # [END howto_sensor_crun_task]

    submit >> wait
