"""What long work reports and how it is stopped: `Progress` (which job, which step, done of total) and `CancelToken`
(checked between steps and inside long loops; `check()` raises `Cancelled`)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """`done` of `total` units of `job` (a label such as "int8 (minmax, onnxruntime) b8"), now in `step`."""

    job: str
    step: str
    done: int
    total: int

    @property
    def text(self) -> str:
        return f"{self.job}: step {self.done + 1} of {self.total}: {self.step}" if self.done < self.total \
            else f"{self.job}: done"


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Set once by whoever owns the work (a newer selection, a cancel button); polled by the work itself."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if `cancel()` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled before it finished")


def check(cancel: CancelToken | None) -> None:
    """`cancel.check()` where a token was given."""
    if cancel is not None:
        cancel.check()
