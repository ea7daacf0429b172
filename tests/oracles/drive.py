"""What both oracle tests share: case budgets, Hypothesis settings and the per-case check."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from hypothesis import HealthCheck, settings

from oracles.gen import CODE, FAMILIES, STATUS, Case
from oracles.outcome import Outcome, check_requests, compare, failure_message, iterations
from oracles.vmmio_run import run_vmmio
from vmmio.x86.regs import DF

__all__ = ["budget", "check_case", "oracle_settings", "record"]

DEFAULT_CASES = 2789
"""Cases per oracle test module in `make test`: the first twelve families get the 1500 they had (1495), the
families of the integer forms about 600 and gen_ctl's 677 more. VMMIO_ORACLE_CASES overrides it (e.g. 50000
for verify)."""

# Share of the budget per family: roughly by how many distinct forms and encodings a family has.
SHARES = {
    "mov": 10,
    "movx": 8,
    "xchg": 4,
    "alu": 16,
    "alu_imm": 12,
    "test": 6,
    "unary": 8,
    "bt": 12,
    "stack": 8,
    "string": 16,
    "lock_ud": 4,
    "too_long": 4,
    # the rest of the integer instruction set
    "atomic": 5,
    "shift": 8,
    "shxd": 4,
    "muldiv": 6,
    "condition": 4,
    "bitscan": 3,
    "bitcount": 3,
    "extmove": 3,
    "crc32": 2,
    "adx": 2,
    "bmi": 4,
    # oracles/gen_ctl.py
    "stack_ops": 10,
    "branch": 8,
    "enter_leave": 5,
    "sreg": 10,
    "far": 10,
    "system": 6,
}
assert set(SHARES) == set(FAMILIES)


def budget(family: str) -> int:
    """Examples for one family: its share of VMMIO_ORACLE_CASES (default DEFAULT_CASES), at least 10."""
    total = int(os.environ.get("VMMIO_ORACLE_CASES", DEFAULT_CASES))
    return max(10, total * SHARES[family] // sum(SHARES.values()))


def oracle_settings(family: str) -> settings:
    """Deterministic runs (derandomize, no example database) sized by `budget`."""
    return settings(
        max_examples=budget(family),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def record(oracle: str, case: Case, agreed: bool) -> None:
    """Append one verdict to $VMMIO_VERIFY_LOG (JSON lines) for `make verify`'s summary."""
    path = os.environ.get("VMMIO_VERIFY_LOG")
    if path:
        row = {"oracle": oracle, "family": case.family, "form": case.form, "ok": agreed}
        with open(path, "a") as log:
            log.write(json.dumps(row) + "\n")


def check_case(case: Case, run_oracle: Callable[[Case], Outcome], oracle: str) -> None:
    """Run `case` on the oracle and on vmmio and fail with a full report on any disagreement."""
    want = run_oracle(case)
    got = run_vmmio(case)
    diffs = compare(case, want, got, oracle, "vmmio")
    if case.expect and want.fault != case.expect and not want.error:
        diffs.append(f"{oracle} did not raise {case.expect} (generator or oracle problem)")
    if not diffs and not want.error:
        diffs = check_requests(case, got.requests, iterations(case, case.gprs[1], want.gprs[1]))
        # Only status flags and DF (and the case's extra flags) may change; vmmio must not touch the rest.
        if (got.rflags ^ case.rflags) & ~(STATUS | DF | case.extra_flags):
            diffs.append(f"vmmio changed non-status RFLAGS bits: {case.rflags:#x} -> {got.rflags:#x}")
        end = case.next_rip or CODE + len(case.code)
        if not case.expect and not got.fault and got.rip != end:
            diffs.append(f"vmmio RIP {got.rip:#x} is not {end:#x}, where the instruction goes")
    record(oracle, case, not diffs)
    assert not diffs, failure_message(case, oracle, diffs, got.requests)
