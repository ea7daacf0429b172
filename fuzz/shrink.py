"""Greedy shrinking of a failing case while it keeps failing the same way.

Candidates come from the case's structure: bytes lose chunks, then single bytes, then have bytes
zeroed; tuples (sequences of steps) lose chunks and elements, then have their elements shrunk; ints go
to 0 or halve; bools go to False. Every candidate is strictly smaller by that order, so the loop ends;
a budget of attempts and seconds bounds it when a check is slow.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

C = TypeVar("C")


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """(start, length) of runs to delete from a sequence of n items: all, halves, ..., single items."""
    size = n
    while size >= 1:
        for start in range(0, n - size + 1, size):
            yield start, size
        size //= 2


def _bytes(value: bytes) -> Iterator[bytes]:
    for start, size in _chunks(len(value)):
        yield value[:start] + value[start + size :]
    for i, b in enumerate(value):
        if b:
            yield value[:i] + b"\0" + value[i + 1 :]
    for i, b in enumerate(value):
        if b > 1:
            yield value[:i] + bytes((b >> 1,)) + value[i + 1 :]


def _tuple(value: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    for start, size in _chunks(len(value)):
        yield value[:start] + value[start + size :]
    for i, item in enumerate(value):
        for smaller in candidates(item):
            yield (*value[:i], smaller, *value[i + 1 :])


def _int(value: int) -> Iterator[int]:
    if value > 0:
        yield 0
        if value > 1:
            yield value >> 1
            yield value & (value - 1)  # clear the lowest set bit


def candidates(value: Any) -> Iterator[Any]:
    """Strictly smaller variants of `value`, most promising first."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.metadata.get("shrink", True):
                for smaller in candidates(getattr(value, f.name)):
                    yield dataclasses.replace(value, **{f.name: smaller})
    elif isinstance(value, bytes):
        yield from _bytes(value)
    elif isinstance(value, tuple):
        yield from _tuple(value)
    elif isinstance(value, bool):
        if value:
            yield False
    elif isinstance(value, int):
        yield from _int(value)


def shrink(case: C, fails: Callable[[C], bool], attempts: int = 3000, seconds: float = 30.0) -> C:
    """The smallest case found that still `fails`, trying candidates greedily from the start."""
    deadline = time.monotonic() + seconds
    improved = True
    while improved and attempts > 0 and time.monotonic() < deadline:
        improved = False
        for candidate in candidates(case):
            attempts -= 1
            if fails(candidate):
                case = candidate
                improved = True
                break
            if attempts <= 0 or time.monotonic() >= deadline:
                break
    return case
