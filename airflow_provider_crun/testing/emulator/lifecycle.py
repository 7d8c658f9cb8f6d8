"""The ``with`` protocol shared by the in-process emulator and the emulator subprocess."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """An object that ``with`` starts and always stops again; subclasses implement both."""

    def start(self) -> Self:
        """Start, and return ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop; must be safe to call when not started, also after a failed start."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
