"""A vCPU's linear->physical translation cache: the page walks of its exits, remembered.

An entry holds the page frame a walk found and the paging-structure entries that walk read (with their
values after its A/D updates). It is used only while the vCPU runs under the same `Control` object (a
backend hands out a new one whenever CR0, CR3, CR4, EFER, the CPL or a segment changes) and while every
one of those entries still holds its value: then a new walk would read exactly the same entries and give
the same frame with no A/D update, so the cache never changes a result. That condition covers what makes
a CPU walk again: a CR3/CR0/CR4/EFER write (new control state), and a paging-structure change, whether
the kernel's own write or the guest's followed by INVLPG (the guest's stores are invisible here, so the
entries are compared rather than trusted, which a TLB would do until INVLPG).

Checking is one `itemgetter` call per table view (usually one: all tables in one RAM region), so a hit
costs a small fraction of a walk. Walks that fault are not cached: the walker raises them every time.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from vmmio.x86.paging import Checks, Updates, Walker
from vmmio.x86.state import Control

TLB_LIMIT = 256  # entries; cleared whole when full (exits touch a handful of pages)
_NO_UPDATES: Updates = []

# One view's share of a walk's entries: (view, getter of the indices read, their expected values).
Group = tuple[memoryview, Any, Any]
Groups = tuple[Group, ...]


def holds(groups: Groups) -> bool:
    """Whether a translation checked by `groups` still stands (every entry holds its value)."""
    for view, get, expected in groups:  # noqa: SIM110 -- all() over a generator costs twice as much
        if get(view) != expected:
            return False
    return True


def _groups(checks: Checks) -> Groups:
    """The entries of `checks` as one (view, itemgetter, expected) per distinct view."""
    by_view: dict[int, tuple[memoryview, list[int], list[int]]] = {}
    for view, index, value in checks:
        slot = by_view.setdefault(id(view), (view, [], []))
        slot[1].append(index)
        slot[2].append(value)
    # itemgetter of one index returns the item itself, of several a tuple: expect the same shape.
    return tuple(
        (view, itemgetter(*indices), values[0] if len(values) == 1 else tuple(values))
        for view, indices, values in by_view.values()
    )


class Tlb:
    """Translations of one vCPU under its current control state (see the module docstring)."""

    __slots__ = ("_ctl", "_entries", "_walker", "walks")

    def __init__(self, walker: Walker) -> None:
        self._walker = walker
        self._ctl: Control | None = None
        # (page of la) | access bits | AC -> (page frame, groups to check).
        self._entries: dict[int, tuple[int, Groups]] = {}
        self.walks = 0  # walks made (misses), for tests and benchmarks

    def walk(self, ctl: Control, la: int, access: int, ac_flag: bool) -> tuple[int, Updates, Groups]:
        """What `Walker.walk` returns for these arguments, from the cache when it is still valid, and
        the checks (`holds`) under which the same result stands without asking again."""
        if ctl is not self._ctl:
            self._entries.clear()
            self._ctl = ctl
        key = (la & ~0xFFF) | access | ac_flag
        hit = self._entries.get(key)
        if hit is not None:
            groups = hit[1]
            for view, get, expected in groups:
                if get(view) != expected:
                    break
            else:
                return hit[0] | (la & 0xFFF), _NO_UPDATES, groups
        gpa, updates, checks = self._walker.walk_checked(ctl, la, access, ac_flag)
        self.walks += 1
        entries = self._entries
        if len(entries) >= TLB_LIMIT:
            entries.clear()
        groups = _groups(checks)
        entries[key] = (gpa & ~0xFFF, groups)
        return gpa, updates, groups

    def flush(self) -> None:
        """Forget every translation (the vCPU's state was loaded from outside)."""
        self._entries.clear()
        self._ctl = None
