"""Settings and calls for the transport tests, which run without Airflow or a connection."""

from __future__ import annotations

from airflow_provider_crun.protocol import calls
from airflow_provider_crun.protocol.settings import CrunConnectionSettings

API_KEY = "crun-unit-key-5ecr3t-91c2"
BASE_URL = "https://api.crun.ai/api/v1"

CREATE = calls.create_task_request(
    "image-face-swap", {"image_url": "https://x/a.png", "new_face": "https://x/b.png"}
)
READ = calls.task_info_request("task_1")


def settings(base_url: str = BASE_URL, **overrides: object) -> CrunConnectionSettings:
    """Settings with three retries, as a connection with ``max_retries=3`` gives."""
    values: dict[str, object] = {"timeout": 5.0, "max_retries": 3, **overrides}
    return CrunConnectionSettings(base_url=base_url, api_key=API_KEY, **values)  # type: ignore[arg-type]
