"""``python -m airflow_provider_crun.testing.emulator``; ``main`` backs the ``crun-emulator`` script."""

from __future__ import annotations

import sys

from airflow_provider_crun.testing.emulator.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
