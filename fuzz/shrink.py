"""Greedy shrinking of a failing case while it keeps failing the same way.

Candidates come from the case's structure: bytes and tuples (sequences of steps) lose runs of items
or have runs zeroed; tuple elements are shrunk in turn; ints go to 0, halve or lose a bit; bools go to
False. A coarse pass (runs of at least 1/16 of the sequence, ints to 0) over every field comes before
the fine pass, so a big field cannot use up the budget before a small one is tried. Every candidate is
strictly smaller (shorter, more zeros, or smaller numbers), so the loop ends; a budget of attempts and
seconds bounds it when a check is slow.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

C = TypeVar("C")
COARSE = 16  # the coarse pass cuts sequences into at most this many runs


def _runs(n: int, fine: bool) -> Iterator[tuple[int, int]]:
    """(start, length) of runs of a sequence of n items: all of it, halves, quarters, ... down to
    n / COARSE items in the coarse pass, and below that to single items in the fine pass."""
    size = n if not fine else max(1, n // COARSE // 2)
    smallest = max(1, n // COARSE) if not fine else 1
    while size >= smallest:
        for start in range(0, n - size + 1, size):
            yield start, size
        size //= 2


def _bytes(value: bytes, fine: bool) -> Iterator[bytes]:
    for start, size in _runs(len(value), fine):
        yield value[:start] + value[start + size :]
    for start, size in _runs(len(value), fine):
        if any(value[start : start + size]):
            yield value[:start] + bytes(size) + value[start + size :]
    if fine:
        for i, b in enumerate(value):
            if b > 1:
                yield value[:i] + bytes((b >> 1,)) + value[i + 1 :]


def _tuple(value: tuple[Any, ...], fine: bool) -> Iterator[tuple[Any, ...]]:
    for start, size in _runs(len(value), fine):
        yield value[:start] + value[start + size :]
    for i, item in enumerate(value):
        for smaller in candidates(item, fine):
            yield (*value[:i], smaller, *value[i + 1 :])


def _int(value: int, fine: bool) -> Iterator[int]:
    if value > 0 and not fine:
        yield 0
    if value > 1 and fine:
        yield value >> 1
        yield value & (value - 1)  # clear the lowest set bit


def candidates(value: Any, fine: bool = True) -> Iterator[Any]:
    """Strictly smaller variants of `value`, most promising first, for one pass."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.metadata.get("shrink", True):
                for smaller in candidates(getattr(value, f.name), fine):
                    yield dataclasses.replace(value, **{f.name: smaller})
    elif isinstance(value, bytes):
        yield from _bytes(value, fine)
    elif isinstance(value, tuple):
        yield from _tuple(value, fine)
    elif isinstance(value, bool):
        if value and not fine:
            yield False
    elif isinstance(value, int):
        yield from _int(value, fine)


def shrink(case: C, fails: Callable[[C], bool], attempts: int = 20_000, seconds: float = 30.0) -> C:
    """The smallest case found that still `fails`: the first failing candidate is taken, and the
    search starts again from it, coarse pass first."""
    deadline = time.monotonic() + seconds
    improved = True
    while improved and attempts > 0 and time.monotonic() < deadline:
        improved = False
        for candidate in itertools.chain(candidates(case, False), candidates(case, True)):
            attempts -= 1
            if fails(candidate):
                case = candidate
                improved = True
                break
            if attempts <= 0 or time.monotonic() >= deadline:
                break
    return case
