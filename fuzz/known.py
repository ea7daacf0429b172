"""vmmio bugs this fuzzer found that are not fixed yet: counted and shown apart from new failures.

A failure is known when its target and signature (the violated invariant's key, see `fuzz.core`) match
a row and, if the row has one, its `matches` predicate accepts the case. Known failures are still
printed with a shrunk reproducer, so they stay visible; they do not make `make fuzz` fail. Delete the
row when vmmio is fixed: the fuzzer then checks the fix like any other invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownBug:
    id: str
    target: str
    signatures: tuple[str, ...]
    summary: str
    matches: Callable[[object], bool] | None = None


KNOWN: tuple[KnownBug, ...] = ()


def classify(target: str, sig: str, case: object) -> KnownBug | None:
    """The known bug this failure is, or None for a new failure."""
    for bug in KNOWN:
        if bug.target == target and sig in bug.signatures and (bug.matches is None or bug.matches(case)):
            return bug
    return None
