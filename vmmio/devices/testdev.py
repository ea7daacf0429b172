"""A memory-like test device: reads return what was written, every access is recorded."""

from __future__ import annotations

from vmmio.abi import reverse_elements


class MemoryDevice:
    """`size` bytes of memory behind a device window. `trace` records every access as (offset, size,
    is_write, value) while `record` is set (a benchmark turns it off: a framebuffer keeps no log)."""

    def __init__(self, size: int = 0x1000, fill: bytes = b"", *, record: bool = True) -> None:
        self.data = bytearray(size)
        self.data[: len(fill)] = fill
        self.trace: list[tuple[int, int, bool, int]] = []
        self.record = record

    def read(self, offset: int, size: int) -> int:
        value = int.from_bytes(self.data[offset : offset + size], "little")
        if self.record:
            self.trace.append((offset, size, False, value))
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.data[offset : offset + size] = value.to_bytes(size, "little")
        if self.record:
            self.trace.append((offset, size, True, value))

    def read_elements(self, offset: int, size: int, count: int, step: int) -> bytes:
        """`count` reads of `size` bytes from `offset` on, `step` apart (one slice of the memory)."""
        if step == size:
            data = bytes(self.data[offset : offset + count * size])
        elif step == -size:
            data = reverse_elements(bytes(self.data[offset - (count - 1) * size : offset + size]), size)
        else:
            data = bytes(self.data[offset : offset + size]) * count
        self._record(offset, size, count, step, False, data)
        return data

    def write_elements(self, offset: int, size: int, data: bytes, step: int) -> None:
        """`len(data) // size` writes of `size` bytes from `offset` on, `step` apart."""
        count = len(data) // size
        if step == size:
            self.data[offset : offset + count * size] = data
        elif step == -size:
            self.data[offset - (count - 1) * size : offset + size] = reverse_elements(data, size)
        else:
            self.data[offset : offset + size] = data[-size:]
        self._record(offset, size, count, step, True, data)

    def _record(self, offset: int, size: int, count: int, step: int, is_write: bool, data: bytes) -> None:
        if self.record:
            self.trace += [
                (offset + i * step, size, is_write, int.from_bytes(data[i * size : (i + 1) * size], "little"))
                for i in range(count)
            ]
