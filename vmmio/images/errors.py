"""The one exception the image loaders raise, and bounded readers that raise it instead of struct.error."""

from __future__ import annotations

import struct


class ImageError(ValueError):
    """An image (or the memory layout or boot options given with it) cannot be loaded.

    The message is one line naming the field or check that failed, so a CLI can print it as is and a
    test can match it. Every malformed input ends here: the loaders let no struct.error, IndexError,
    MemoryError or OverflowError escape.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


def unpack(what: str, fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    """struct.unpack_from that names `what` when the file ends before the field does."""
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise ImageError(
            f"{what} truncated: needs bytes {offset:#x}..{offset + size:#x}, file is {len(data):#x}"
        )
    return struct.unpack_from(fmt, data, offset)


def span(start: int, end: int) -> str:
    """A half-open address range as messages print it."""
    return f"[{start:#x}, {end:#x})"
