"""
A stdlib-only emulator of the Crun API on loopback, for offline demos and tests.

.. code-block:: python

    from airflow_provider_crun.testing.emulator import CrunEmulator

    with CrunEmulator(api_key="test-key", task_delays=(0.1, 0.3)) as emu:
        emu.add_fault("CreateTask", "429", times=1, retry_after=0.1)
        ...  # point the hook at emu.url with emu.api_key

Run it standalone with ``python -m airflow_provider_crun.testing.emulator --help``, or
out of process from a test with :class:`EmulatorProcess`.
"""

from __future__ import annotations

from airflow_provider_crun.testing.emulator.core import CrunEmulator
from airflow_provider_crun.testing.emulator.faults import FaultInjector, FaultRule, parse_fault_spec
from airflow_provider_crun.testing.emulator.media import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    changed_faces,
    decode_png,
    encode_png,
    face_boxes,
    render_input,
    render_result,
)
from airflow_provider_crun.testing.emulator.process import EmulatorProcess
from airflow_provider_crun.testing.emulator.state import ApiError, EmulatorState, ManualClock, key_fingerprint

__all__ = [
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "ApiError",
    "CrunEmulator",
    "EmulatorProcess",
    "EmulatorState",
    "FaultInjector",
    "FaultRule",
    "ManualClock",
    "changed_faces",
    "decode_png",
    "encode_png",
    "face_boxes",
    "key_fingerprint",
    "parse_fault_spec",
    "render_input",
    "render_result",
]
