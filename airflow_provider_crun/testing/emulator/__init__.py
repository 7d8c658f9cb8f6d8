"""
An emulator of the Crun API on loopback, for offline demos and tests.

It needs only the standard library and Pillow (``pip install 'airflow-provider-crun[emulator]'``),
which draws its pictures: group photos whose faces are told apart by colour and shape,
portraits to swap in, and results that show what each swapped face became.

.. code-block:: python

    from airflow_provider_crun.testing.emulator import CrunEmulator

    with CrunEmulator(api_key="test-key", task_delays=(0.1, 0.3)) as emu:
        emu.add_fault("CreateTask", "429", times=1, retry_after=0.1)
        image_url = emu.input_image_url("group", faces=3)
        new_face = emu.face_image_url("alice")
        ...  # point the hook at emu.url with emu.api_key

Ids are random unless a ``seed`` is given. ``large_result_bytes`` makes task results large
files that are generated and streamed in chunks, for memory tests of downloads.

Run it standalone with ``python -m airflow_provider_crun.testing.emulator --help``, or
out of process from a test with :class:`EmulatorProcess`.
"""

from __future__ import annotations

from airflow_provider_crun.testing.emulator.core import CrunEmulator
from airflow_provider_crun.testing.emulator.faults import FaultInjector, FaultRule, parse_fault_spec
from airflow_provider_crun.testing.emulator.media import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    Media,
    Target,
    changed_faces,
    face_boxes,
    input_png,
    large_png,
    portrait_png,
    render_input,
    render_portrait,
    render_result,
)
from airflow_provider_crun.testing.emulator.model import ApiError, ManualClock, key_fingerprint
from airflow_provider_crun.testing.emulator.process import EmulatorProcess
from airflow_provider_crun.testing.emulator.state import EmulatorState

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
    "Media",
    "Target",
    "changed_faces",
    "face_boxes",
    "input_png",
    "key_fingerprint",
    "large_png",
    "parse_fault_spec",
    "portrait_png",
    "render_input",
    "render_portrait",
    "render_result",
]
