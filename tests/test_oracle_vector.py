"""Differential tests of the vector moves: vmmio against the host CPU, Unicorn and KVM.

Cases come from tests/oracles/gen_vector.py (every MMX/SSE/VEX/EVEX move form, random encodings, operand
placements, vector states and masks); the comparison and the request-sequence rule are in
tests/oracles/drive_vector.py. The host CPU is the reference for everything it has (VEX.256 and EVEX
included; forms whose CPUID features the host lacks are not drawn, and the family is skipped with the
reason when none is left). Unicorn runs the SSE and MMX forms and VEX.128 (which its QEMU core executes
as SSE although it reports no AVX); where it is wrong (tests/oracles/known.py) the host CPU referees.
KVM runs what Linux's emulator handles. VMMIO_ORACLE_CASES scales the case counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import event, given
from oracles.drive import record
from oracles.drive_vector import check_vector_case, host_flags, judge_vector, vector_settings
from oracles.gen import Case
from oracles.gen_vector import VECTOR_FAMILIES, VEX, VSpec, vector_cases, vspecs_of
from oracles.known import unicorn_scope, unicorn_vector_known_wrong
from oracles.native_run import NativeRunner, build_runner, unavailable_reason
from oracles.unicorn_run import UnicornRunner
from oracles.vector_state import HOST, KVM
from oracles_kvm.deviations import kvm_vector_deviation, kvm_vector_not_comparable
from oracles_kvm.kvm_run import KvmRunner
from oracles_kvm.kvm_run import unavailable_reason as kvm_unavailable

_FLAGS = host_flags()
_WHY_NOT_NATIVE = unavailable_reason()


@pytest.fixture(scope="module")
def native_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeRunner]:
    if _WHY_NOT_NATIVE is not None:
        pytest.skip(_WHY_NOT_NATIVE)
    runner = NativeRunner(build_runner(tmp_path_factory.mktemp("vector_oracle")))
    yield runner
    runner.close()


@pytest.mark.parametrize("family", VECTOR_FAMILIES)
def test_vector_moves_match_host_cpu(family: str, native_runner: NativeRunner) -> None:
    """Random cases of one family of vector moves, on the host CPU and on vmmio."""
    if not vspecs_of(family, _FLAGS):
        pytest.skip(f"the host CPU has none of the {family} forms' features (flags: {sorted(_FLAGS)[:8]}...)")

    @vector_settings(family)
    @given(case=vector_cases(family, _FLAGS))
    def run(case: Case) -> None:
        event(case.form)
        check_vector_case(case, native_runner.run, HOST, "host CPU")

    run()


# --------------------------------------------------------------------------------------------------
# Unicorn
# --------------------------------------------------------------------------------------------------

UNICORN_FAMILIES = ("mmx", "sse", "vex")


# VEX forms with no SSE counterpart (broadcasts, masked moves): #UD on Unicorn, whose CPUID has no AVX.
_AVX_ONLY = {(2, op) for op in (0x18, 0x19, 0x1A, 0x2C, 0x2D, 0x2E, 0x2F, 0x58, 0x59, 0x5A, 0x78, 0x79)}
_AVX_ONLY |= {(2, 0x8C), (2, 0x8E)}


def _unicorn_runs(spec: VSpec) -> bool:
    """Unicorn has no AVX; its QEMU core runs the 128-bit VEX forms of SSE moves as the SSE moves."""
    return spec.enc != VEX or (spec.l == 0 and (spec.opmap, spec.opcode) not in _AVX_ONLY)


@pytest.fixture(scope="module")
def unicorn_runner() -> Iterator[UnicornRunner]:
    pytest.importorskip("unicorn")
    yield UnicornRunner()


@pytest.mark.parametrize("family", UNICORN_FAMILIES)
def test_vector_moves_match_unicorn(family: str, unicorn_runner: UnicornRunner) -> None:
    """Random SSE/MMX/VEX.128 cases on raw Unicorn and on vmmio; its known errors are kept out."""

    @vector_settings(family, 0.5)
    @given(case=vector_cases(family, None, _unicorn_runs))
    def run(case: Case) -> None:
        bug = unicorn_vector_known_wrong(case)
        if bug is not None:
            event(f"not compared with Unicorn: {bug}")
            return
        event(case.form)
        check_vector_case(case, unicorn_runner.run, unicorn_scope(case), "unicorn")

    run()


# --------------------------------------------------------------------------------------------------
# KVM (Linux's instruction emulator)
# --------------------------------------------------------------------------------------------------

KVM_FAMILIES = ("mmx", "sse")  # Linux 6.18's emulator has no VEX/EVEX moves (see the test below)


@pytest.fixture(scope="module")
def kvm_runner() -> Iterator[KvmRunner]:
    why = kvm_unavailable()
    if why is not None:
        pytest.skip(why)
    runner = KvmRunner()
    yield runner
    runner.close()


@pytest.mark.parametrize("family", KVM_FAMILIES)
def test_vector_moves_match_kvm(family: str, kvm_runner: KvmRunner) -> None:
    """Random MMX/SSE cases on KVM and on vmmio; what Linux's emulator does not do is kept apart."""

    @vector_settings(family, 0.5)
    @given(case=vector_cases(family))
    def run(case: Case) -> None:
        why = kvm_vector_not_comparable(case)
        if why is not None:
            event(f"not compared with KVM: {why}")
            return
        kvm = kvm_runner.run(case)
        verdict = judge_vector(case, kvm.outcome, KVM, "KVM")
        if not verdict.agreed:
            key = kvm_vector_deviation(case, kvm)
            if key is not None:
                event(f"known KVM behaviour: {key}")
                return
        event(case.form)
        record("kvm", case, verdict.agreed)
        assert verdict.agreed, verdict.message

    run()
