"""A device that ends the run: the guest writes its exit status to it."""

from __future__ import annotations


class GuestExit(Exception):
    """Raised by the debug-exit device to stop the run loop with the guest's status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class DebugExit:
    """Any write ends the run with the written value as the exit status; reads return 0."""

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        raise GuestExit(value)
