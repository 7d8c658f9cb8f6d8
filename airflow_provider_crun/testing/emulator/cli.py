"""Command line entry point: ``python -m airflow_provider_crun.testing.emulator`` / ``crun-emulator``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_crun.testing.emulator.core import CrunEmulator
from airflow_provider_crun.testing.emulator.faults import FaultRule, parse_fault_spec
from airflow_provider_crun.testing.emulator.media import MIN_LARGE_RESULT
from airflow_provider_crun.testing.emulator.process import URL_LINE_PREFIX

API_KEY_ENV = "CRUN_EMULATOR_API_KEY"


def _delays(text: str) -> tuple[float, float]:
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated seconds, got {text!r}") from None
    return first, second


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Parse a byte count such as ``300000000``, ``300M``, ``512K`` or ``1G`` (binary units)."""
    stripped = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = stripped[-1:] if stripped[-1:] in _SIZE_UNITS else ""
    try:
        value = int(float(stripped[: len(stripped) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a byte count such as 300M, got {text!r}") from None
    if value < MIN_LARGE_RESULT:
        raise argparse.ArgumentTypeError(f"a large result must be at least {MIN_LARGE_RESULT} bytes")
    return value


def _fault(text: str) -> FaultRule:
    try:
        return parse_fault_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI argument parser."""
    parser = argparse.ArgumentParser(
        prog="crun-emulator",
        description="Serve an emulation of the Crun API. Prints 'CRUN_EMULATOR_URL=<url>' first.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port, 0 for a free one (default 8089)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted API key, repeatable (default ${API_KEY_ENV} or 'test-key')",
    )
    parser.add_argument("--credits", type=float, default=1000, help="starting balance per key")
    parser.add_argument("--detection-cost", type=float, default=1)
    parser.add_argument("--task-cost", type=float, default=6)
    parser.add_argument("--detect-delays", type=_delays, default=(0.2, 0.2), metavar="STARTING,PROCESSING")
    parser.add_argument("--task-delays", type=_delays, default=(0.2, 0.5), metavar="PENDING,RUNNING")
    parser.add_argument("--detect-ttl", type=float, default=3600.0, help="detect_id lifetime in seconds")
    parser.add_argument("--default-faces", type=int, default=2)
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="make ids and probabilistic faults reproducible (default: random)",
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="default Retry-After of 429 faults")
    parser.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="ENDPOINT:KIND[:times=N|p=P][:retry_after=S][:delay=S][:code=C][:after_create=0|1]",
        help="inject a fault, repeatable (default: none)",
    )
    parser.add_argument(
        "--large-result-bytes",
        type=parse_size,
        metavar="SIZE",
        help="serve every task result as a PNG of exactly SIZE bytes (e.g. 300M), streamed in chunks",
    )
    parser.add_argument("--public-url", help="origin to put into media links instead of the bound URL")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    api_keys = args.api_keys or [os.environ.get(API_KEY_ENV) or "test-key"]
    emulator = CrunEmulator(
        api_keys,
        credits=args.credits,
        detection_cost=args.detection_cost,
        task_cost=args.task_cost,
        detect_delays=args.detect_delays,
        task_delays=args.task_delays,
        detect_ttl=args.detect_ttl,
        default_faces=args.default_faces,
        seed=args.seed,
        host=args.host,
        port=args.port,
        faults=args.fault,
        retry_after=args.retry_after,
        verbose=args.verbose,
        public_url=args.public_url,
        large_result_bytes=args.large_result_bytes,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with emulator:
        print(f"{URL_LINE_PREFIX}{emulator.url}", flush=True)
        logging.getLogger("airflow_provider_crun.testing.emulator").info(
            "Crun emulator serving %s (%d key(s), faults: %d)", emulator.url, len(api_keys), len(args.fault)
        )
        while not stop.wait(0.5):
            pass
    return 0
