"""The Airflow version under test, for the few tests whose expected behaviour depends on it."""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from packaging.version import Version

AIRFLOW_VERSION = Version(_airflow_version)
# task_state_store (durable reattach) exists from Airflow 3.3; below it the operators run non-durable.
DURABLE_EXECUTION = AIRFLOW_VERSION.release >= (3, 3)
