"""A memory-like test device: reads return what was written, every access is recorded."""

from __future__ import annotations


class MemoryDevice:
    def __init__(self, size: int = 0x1000, fill: bytes = b"") -> None:
        self.data = bytearray(size)
        self.data[: len(fill)] = fill
        self.trace: list[tuple[int, int, bool, int]] = []

    def read(self, offset: int, size: int) -> int:
        value = int.from_bytes(self.data[offset : offset + size], "little")
        self.trace.append((offset, size, False, value))
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.data[offset : offset + size] = value.to_bytes(size, "little")
        self.trace.append((offset, size, True, value))
