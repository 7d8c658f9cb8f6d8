"""
The Crun operators, under the import path DAGs use.

DAG files import this module at parse time, so it imports only light modules; the hook
(``requests``, ``aiohttp``) and the triggers load when a task runs.
"""

from __future__ import annotations

from airflow_provider_crun.operators.detect import (
    CrunDetectedFace,
    CrunDetectFacesOperator,
    CrunDetectionResult,
)
from airflow_provider_crun.operators.swap import CrunFaceSwapOperator, CrunMultiFaceSwapOperator
from airflow_provider_crun.operators.task import (
    CrunCreateTaskOperator,
    CrunResultLink,
    CrunSubmittedTask,
    CrunTaskResult,
)

__all__ = [
    "CrunCreateTaskOperator",
    "CrunDetectFacesOperator",
    "CrunDetectedFace",
    "CrunDetectionResult",
    "CrunFaceSwapOperator",
    "CrunMultiFaceSwapOperator",
    "CrunResultLink",
    "CrunSubmittedTask",
    "CrunTaskResult",
]
