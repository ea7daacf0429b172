"""The one exception the image loaders raise, and the range notation its messages use."""

from __future__ import annotations


class ImageError(ValueError):
    """An image (or the memory layout or boot options given with it) cannot be loaded.

    The message is one line naming the field or check that failed, so a CLI can print it as is and a
    test can match it. Every malformed input ends here: the loaders let no struct.error, IndexError,
    MemoryError or OverflowError escape.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


def span(start: int, end: int) -> str:
    """A half-open address range as messages print it."""
    return f"[{start:#x}, {end:#x})"
