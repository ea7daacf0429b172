"""Differential test: vmmio against the host CPU, instruction by instruction, for every emulated form.

The same cases as tests/test_oracle_unicorn.py run on the host (x86_64 Linux, gcc) through a small C
runner (tests/oracles/native_run.py) that maps the MMIO window, the RAM area and the code page at the
cases' own addresses, so the instruction sees exactly the registers, flags, FS/GS bases and bytes vmmio
sees, with the window as ordinary memory. PUSH/POP use the case's own stack in the RAM area or the
window; the runner's signal handling runs on an alternate stack, so nothing else touches it. The host
CPU is the referee when vmmio and Unicorn disagree: it wins.

Flags the SDM leaves undefined for a form are not compared (table in tests/oracles/gen.py). Locked
accesses are kept within one cache line: split locks trap or are throttled on some hosts.
VMMIO_ORACLE_CASES sets the number of cases (default: see oracles/drive.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import event, given
from oracles.drive import check_case, oracle_settings
from oracles.gen import FAMILIES, WINDOW, WINDOW_SIZE, Access, Case, cases
from oracles.gen_ctl import HOST_SKIPS
from oracles.known import UNICORN_BUGS
from oracles.native_run import NativeRunner, build_runner, unavailable_reason
from oracles.vmmio_run import run_vmmio

_WHY_NOT = unavailable_reason()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


@pytest.fixture(scope="module")
def native_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeRunner]:
    runner = NativeRunner(build_runner(tmp_path_factory.mktemp("native_oracle")))
    yield runner
    runner.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_vmmio_matches_host_cpu(family: str, native_runner: NativeRunner) -> None:
    """Random cases of one family of forms; any difference fails with the case and the diff."""
    if family in HOST_SKIPS:
        pytest.skip(HOST_SKIPS[family])

    @oracle_settings(family)
    @given(case=cases(family))
    def run(case: Case) -> None:
        event(case.form)
        check_case(case, native_runner.run, "host CPU")

    run()


@pytest.mark.parametrize("bug", sorted(UNICORN_BUGS))
def test_host_cpu_referees_unicorn_bugs(bug: str, native_runner: NativeRunner) -> None:
    """The cases Unicorn gets wrong (kept out of its comparison) are right in vmmio, per the host CPU."""
    case = UNICORN_BUGS[bug].case
    if case.env == "kernel":
        pytest.skip("a privileged form: the host CPU runs at CPL 3 (the reason cites the SDM)")
    check_case(case, native_runner.run, "host CPU")


# --------------------------------------------------------------------------------------------------
# Regressions: disagreements with the host CPU that are vmmio bugs (or choices) to be fixed.
# --------------------------------------------------------------------------------------------------


def _movsxd16(offset: int) -> Case:
    """`movsxd ax, [rax]` (66 63 00) with its operand at WINDOW + offset."""
    gprs = [0] * 16
    gprs[0] = WINDOW + offset
    plan = (Access(WINDOW + offset, 4, False),)
    return Case(
        "movsxd r16, r/m16", "movx", b"\x66\x63\x00", tuple(gprs), 0x2, 0, 0, 1, (), WINDOW + offset, plan
    )


def test_regression_movsxd_r16_reads_a_dword(native_runner: NativeRunner) -> None:
    """Regression (found by this oracle): vmmio asked the device for 2 bytes for `66 63` (the SDM's
    MOVSXD r16, r/m16) where the host CPU, QEMU and KVM read a dword. With the operand 2 bytes before
    the end of the mapped window the host faults on the first unmapped byte; vmmio must ask for 4."""
    probe = native_runner.run(_movsxd16(WINDOW_SIZE - 2))
    if not probe.fault:
        pytest.skip("this host reads only a word for MOVSXD r16, as the SDM's r/m16 says")
    assert probe.fault == f"#PF at {WINDOW + WINDOW_SIZE:#x}", probe
    got = run_vmmio(_movsxd16(0x10))
    assert [(r.gpa, r.size, r.write) for r in got.requests] == [(WINDOW + 0x10, 4, False)]
