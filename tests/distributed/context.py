"""What a distributed scenario gets from the suite's ``dist`` fixture: :class:`Dist`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.distributed.cluster import CeleryDeployment, jsonable
from tests.distributed.monitor import Monitor
from tests.support.s3 import MotoS3


@dataclass
class Dist:
    """The deployment and everything around it."""

    cluster: CeleryDeployment
    emulators: dict[str, EmulatorProcess]
    s3: MotoS3
    bucket: str
    monitor: Monitor
    images: int
    results: dict[str, Any]

    def record(self, scenario: str, **figures: Any) -> None:
        self.results.setdefault("scenarios", {})[scenario] = jsonable(figures)

    def output_path(self, prefix: str) -> str:
        return f"s3://{self.s3.conn_id}@{self.bucket}/{prefix}/"
