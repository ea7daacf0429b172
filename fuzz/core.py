"""What a fuzz target is, how a failure is named, and how a failing case is rendered as a replay snippet.

A target is data: a generator of cases from a seeded RNG and a check that raises on a violated
invariant. Cases are frozen dataclasses of bytes, ints, bools, strings and tuples, so one generic
shrinker (`fuzz.shrink`) and one renderer (`render`) work for every target, and a reproducer is the
case's own constructor call.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import itertools
import random
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

C = TypeVar("C")

# Field metadata: the shrinker leaves this field alone (a mode, a size whose other values are invalid).
FIXED: dict[str, Any] = {"shrink": False}


class Violation(AssertionError):
    """An invariant did not hold. `key` names the invariant: shrinking keeps to cases failing the same
    way, and `fuzz.known` recognises a known bug by it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"[{key}] {message}")
        self.key = key


class Timeout(Exception):
    """One case ran longer than the runner allows: a hang is a finding too."""


@dataclass
class Stats:
    """What a check reports besides pass/fail: the worst time of its unit, and outcome counts."""

    worst: float = 0.0
    notes: Counter[str] = field(default_factory=Counter)

    def time(self, seconds: float) -> None:
        if seconds > self.worst:
            self.worst = seconds


@dataclass(frozen=True)
class Target(Generic[C]):
    """One fuzz target.

    `check(case, stats)` raises (a Violation, or whatever vmmio raised) when the case breaks an
    invariant and returns how many units (inputs, records, entries, instructions, images) it ran.
    `module` is where the case classes live, for reproducers.
    """

    name: str
    unit: str  # what one count is, and what `worst` times
    default: int
    shard: int  # units per shard: the grain of parallelism and of seeding
    generate: Callable[[random.Random], C]
    check: Callable[[C, Stats], int]
    module: str

    def replay(self, case: C) -> None:
        """Run one case outside the runner: raises as the fuzzer saw it."""
        self.check(case, Stats())


def signature(exc: BaseException) -> str:
    """A failure's identity: the invariant's key, or the exception type and the function that raised."""
    if isinstance(exc, Violation):
        return exc.key
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" in {Path(frames[-1].filename).name}:{frames[-1].name}" if frames else ""
    return f"{_qualified(type(exc))}{where}"


def _qualified(cls: type) -> str:
    """`ValueError`, but `struct.error` rather than a bare `error`."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def describe(exc: BaseException) -> str:
    """The message printed with a failure: a Violation's text, or the exception and where it came from."""
    if isinstance(exc, Violation):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{_qualified(type(exc))}: {exc} (at {where})"


def run_case(target: Target[C], case: C, stats: Stats) -> tuple[int, BaseException | None]:
    """Units run and the failure, if any. Only Exception is caught: Ctrl-C stops the fuzzer."""
    try:
        return target.check(case, stats), None
    except Exception as exc:
        return 1, exc


def render(value: object, ns: str = "t") -> str:
    """Python source that rebuilds `value`: bytes as bytes.fromhex, dataclasses as `ns.Class(...)`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        args = ", ".join(f"{f.name}={render(getattr(value, f.name), ns)}" for f in dataclasses.fields(value))
        return f"{ns}.{type(value).__name__}({args})"
    if isinstance(value, bytes | bytearray):
        return _render_bytes(bytes(value))
    if isinstance(value, tuple):
        inner = ", ".join(render(v, ns) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, bool | enum.Enum) or not isinstance(value, int):
        return repr(value)
    return hex(value) if value >= 4096 else str(value)


def _render_bytes(data: bytes) -> str:
    """bytes.fromhex('...'), with runs of ZERO_RUN or more zero bytes as `bytes(n)` so that a shrunk
    image (mostly zeroed) stays readable."""
    parts = []
    for zero, run in itertools.groupby(data, key=lambda b: b == 0):
        chunk = bytes(run)
        if zero and len(chunk) >= ZERO_RUN:
            parts.append(f"bytes({len(chunk)})")
        elif parts and parts[-1].startswith("bytes.fromhex"):
            parts[-1] = f"bytes.fromhex({parts[-1][15:-2] + chunk.hex()!r})"
        else:
            parts.append(f"bytes.fromhex({chunk.hex()!r})")
    return " + ".join(parts) or "b''"


ZERO_RUN = 16


def reproducer(target: Target[C], case: C) -> str:
    """A snippet to paste into `python` at the repository root: it raises as the fuzzer saw."""
    return (
        f"import {target.module} as t\n"
        f"from fuzz.targets import TARGETS\n"
        f"TARGETS[{target.name!r}].replay({render(case)})"
    )


class Weighted(Generic[C]):
    """A weighted choice from a (weight, value) table, the way generators pick what to build."""

    def __init__(self, table: tuple[tuple[float, C], ...]) -> None:
        self.values = [v for _, v in table]
        self.cum = list(itertools.accumulate(w for w, _ in table))

    def __call__(self, rng: random.Random) -> C:
        return self.values[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]
