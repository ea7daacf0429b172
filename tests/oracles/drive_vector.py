"""The per-case check of the vector oracles: budgets, the host's CPU flags, and the comparison.

A vector case agrees when the oracle and vmmio end in the same state (GPRs, RIP, flags, window, RAM,
the fault if any, and the vector state within what the oracle holds) and vmmio's requests are exactly
the planned accesses cut by the kernel's rule (`vmmio.abi.split_access` on each page's part), or, when
the instruction faults, a prefix of them (LDMXCSR reads before its #GP; nothing else may come first).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

from oracles.drive import record
from oracles.gen import PAGE, WINDOW, WINDOW_SIZE, Case
from oracles.outcome import Outcome, Request, compare, failure_message
from oracles.vector_state import Scope, diffs
from oracles.vmmio_run import run_vmmio
from vmmio.abi import split_access

__all__ = [
    "VECTOR_DEFAULT_CASES",
    "VectorVerdict",
    "check_vector_case",
    "host_flags",
    "judge_vector",
    "planned_requests",
    "vector_settings",
]

VECTOR_DEFAULT_CASES = 3000
"""Vector cases on the host CPU in `make test`, shared by the families (Unicorn and KVM run half as many);
VMMIO_ORACLE_CASES replaces it, as it does the integer families' count (`make verify`: 50000)."""

SHARES = {"mmx": 2, "sse": 6, "vex": 7, "evex": 5}


def vector_settings(family: str, scale: float = 1.0) -> settings:
    total = int(os.environ.get("VMMIO_ORACLE_CASES", VECTOR_DEFAULT_CASES))
    n = max(10, int(total * scale) * SHARES[family] // sum(SHARES.values()))
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def host_flags() -> frozenset[str]:
    """The host CPU's feature flags, as /proc/cpuinfo names them (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def planned_requests(case: Case) -> list[tuple[int, int, bool]]:
    """The requests the planned accesses must appear as: each access cut at page boundaries, each part
    by the one rule of `split_access`, in order."""
    out: list[tuple[int, int, bool]] = []
    for a in case.accesses:
        addr, end = a.addr, a.addr + a.size
        while addr < end:
            part = min(end, (addr // PAGE + 1) * PAGE) - addr
            if WINDOW <= addr < WINDOW + WINDOW_SIZE:
                out += [(g, n, a.write) for _, g, n in split_access(addr, part)]
            addr += part
    return out


def _request_diffs(case: Case, faulted: bool, requests: list[Request]) -> list[str]:
    got = [(r.gpa, r.size, r.write) for r in requests]
    text = ", ".join(f"{'W' if w else 'R'}{n}@{g:#x}" for g, n, w in got) or "none"
    if "perturbed" in case.tags:  # no plan: only the rule every request obeys
        bad = [r for r in got if r[1] not in (1, 2, 4, 8) or r[0] // PAGE != (r[0] + r[1] - 1) // PAGE]
        return [f"requests not 1/2/4/8 bytes within a page: {bad}"] if bad else []
    want = planned_requests(case)
    if got == want or (faulted and got == want[: len(got)]):
        return []
    planned = ", ".join(f"{'W' if w else 'R'}{n}@{g:#x}" for g, n, w in want) or "none"
    return [f"vmmio requests {text}; planned {planned}" + (" (or a prefix: it faults)" if faulted else "")]


@dataclass(frozen=True)
class VectorVerdict:
    agreed: bool
    message: str = ""
    vmmio: Outcome | None = None  # vmmio's outcome of the case


def judge_vector(case: Case, want: Outcome, scope: Scope, oracle: str) -> VectorVerdict:
    """Compare the oracle's outcome of `case` with vmmio's (see the module docstring)."""
    got = run_vmmio(case)
    problems = compare(case, want, got, oracle, "vmmio")
    if not want.error and not got.error:
        if want.vector is not None and got.vector is not None:
            problems += diffs(want.vector, got.vector, scope, oracle, "vmmio")
        problems += _request_diffs(case, bool(want.fault), got.requests)
    if not problems:
        return VectorVerdict(True, vmmio=got)
    return VectorVerdict(False, failure_message(case, oracle, problems, got.requests), got)


def check_vector_case(case: Case, run_oracle: Callable[[Case], Outcome], scope: Scope, oracle: str) -> None:
    verdict = judge_vector(case, run_oracle(case), scope, oracle)
    record(oracle, case, verdict.agreed)
    assert verdict.agreed, verdict.message
