"""
Data-aware scheduling on Crun results: runs whenever a swap stores a new image.

``example_crun_multi_face_swap`` stores each result and emits an event of the
``crun_face_swaps`` asset whose ``extra`` names the stored files and the Crun task. This DAG is
scheduled on that asset, and reads the new image back from storage with ``ObjectStoragePath``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Asset, task

# [START howto_storage_crun_asset_consumer]
with DAG(
    dag_id="example_crun_use_swapped_image",
    schedule=[Asset("crun_face_swaps")],
    catchup=False,
    tags=["example", "crun"],
    doc_md=__doc__,
) as dag:

    @task
    def read_new_images(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Open every stored image named by the triggering events, and report its size."""
        from airflow.sdk import ObjectStoragePath

        images = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                for path in event.extra.get("stored_paths", []):
                    stored = ObjectStoragePath(path, conn_id=event.extra.get("conn_id"))
                    with stored.open("rb") as image:
                        header = image.read(24)
                    images.append(
                        {
                            "path": path,
                            "crun_task_id": event.extra.get("crun_task_id"),
                            "png": header.startswith(b"\x89PNG"),
                            "size": stored.stat().st_size,
                        }
                    )
        return images

    read_new_images()
# [END howto_storage_crun_asset_consumer]
