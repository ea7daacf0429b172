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

import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles.drive import record
from oracles.drive_vector import check_vector_case, host_flags, judge_vector, vector_settings
from oracles.gen import Case
from oracles.gen_vector import (
    VECTOR_FAMILIES,
    VEX,
    VSPECS,
    VSpec,
    table_key,
    table_keys,
    vector_case,
    vector_cases,
    vspecs_of,
)
from oracles.known import VECTOR_UNICORN_BUGS, unicorn_scope, unicorn_vector_known_wrong
from oracles.native_run import NativeRunner, build_runner, unavailable_reason
from oracles.unicorn_run import UnicornRunner
from oracles.vector_state import HOST, KVM, UNICORN
from oracles_kvm.deviations import kvm_vector_deviation, kvm_vector_not_comparable
from oracles_kvm.judge import request_diffs
from oracles_kvm.kvm_run import KvmRunner
from oracles_kvm.kvm_run import unavailable_reason as kvm_unavailable

from vmmio.vmm.semantics import lookup
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn

_FLAGS = host_flags()
_WHY_NOT_NATIVE = unavailable_reason()


class VectorOracleReport(UserWarning):
    """Per oracle: cases drawn, compared (all agreed, or the test failed), and kept apart by reason."""


TALLY: Counter[tuple[str, str]] = Counter()  # (oracle, "agree" or why a case was not compared)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    for oracle in sorted({o for o, _ in TALLY}):
        rows = {k: n for (o, k), n in TALLY.items() if o == oracle}
        total = sum(rows.values())
        apart = ", ".join(f"{k} {n}" for k, n in sorted(rows.items()) if k != "agree") or "none"
        text = f"{oracle}: {total} vector cases, {rows.get('agree', 0)} agree; kept apart: {apart}"
        warnings.warn(VectorOracleReport(text), stacklevel=1)


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
        TALLY["host CPU", "agree"] += 1

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
            TALLY["unicorn", bug] += 1
            return
        event(case.form)
        check_vector_case(case, unicorn_runner.run, unicorn_scope(case), "unicorn")
        TALLY["unicorn", "agree"] += 1

    run()


# --------------------------------------------------------------------------------------------------
# KVM (Linux's instruction emulator)
# --------------------------------------------------------------------------------------------------

KVM_FAMILIES = ("mmx", "sse")  # Linux 6.18's emulator has no VEX/EVEX moves (see the test below)
# The vector moves Linux's emulator has semantics for (map, opcode, mandatory prefix); on any other its
# emulation fails (test_kvm_vector_not_emulated), so the cases are drawn from these.
_LINUX_EMULATES = {(1, op, pp) for op in (0x10, 0x11, 0x28, 0x29, 0x2B) for pp in (0, 1)}
_LINUX_EMULATES |= {(1, 0xE7, 1)} | {(1, op, pp) for op in (0x6F, 0x7F) for pp in (0, 1, 2)}


def _linux_emulates(spec: VSpec) -> bool:
    return (spec.opmap, spec.opcode, spec.pp) in _LINUX_EMULATES


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
    @given(case=vector_cases(family, None, _linux_emulates))
    def run(case: Case) -> None:
        why = kvm_vector_not_comparable(case)
        if why is not None:
            event(f"not compared with KVM: {why}")
            TALLY["KVM", why] += 1
            return
        kvm = kvm_runner.run(case)
        verdict = judge_vector(case, kvm.outcome, KVM, "KVM")
        message = verdict.message
        if verdict.agreed and verdict.vmmio is not None and kvm.outcome.requests != verdict.vmmio.requests:
            message = "request sequences differ:\n" + "\n".join(
                request_diffs(kvm.outcome.requests, verdict.vmmio.requests)
            )
        if message:
            key = kvm_vector_deviation(case, kvm, verdict.vmmio)
            if key is not None:
                event(f"known KVM behaviour: {key}")
                TALLY["KVM", key] += 1
                return
        event(case.form)
        record("kvm", case, not message)
        assert not message, message
        TALLY["KVM", "agree"] += 1

    run()


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------


def test_every_vector_form_has_a_generator() -> None:
    """Each row of vmmio's legacy/VEX/EVEX move tables is what some VSpec's cases decode to."""
    covered: set[tuple[object, ...]] = set()

    @settings(max_examples=2, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def sample(data: st.DataObject) -> None:
        for spec in VSPECS:
            case = data.draw(vector_case(spec, perturb=False))
            insn = decode(case.code + bytes(15), 64)
            assert isinstance(insn, Insn), f"vmmio cannot decode {case.code.hex()} ({case.form}): {insn}"
            assert lookup(insn) is not None, f"vmmio has no form for {case.code.hex()} ({case.form})"
            covered.add(table_key(insn))

    sample()
    assert sorted(map(str, table_keys() - covered)) == []


# --------------------------------------------------------------------------------------------------
# The known errors of Unicorn and the documented behaviours of KVM, each on its minimal case
# --------------------------------------------------------------------------------------------------

UNICORN_FULL = replace(UNICORN, x87_hi=True)  # everything the engine holds


@pytest.mark.parametrize("bug", sorted(VECTOR_UNICORN_BUGS))
def test_unicorn_vector_bugs_still_reproduce(bug: str, unicorn_runner: UnicornRunner) -> None:
    """Each excluded behaviour still makes Unicorn disagree with vmmio; when this fails, drop it."""
    case = VECTOR_UNICORN_BUGS[bug].case
    verdict = judge_vector(case, unicorn_runner.run(case), UNICORN_FULL, "unicorn")
    assert not verdict.agreed, f"Unicorn now agrees with vmmio on {case.form}: drop {bug!r}"


@pytest.mark.parametrize("bug", sorted(VECTOR_UNICORN_BUGS))
def test_host_cpu_referees_unicorn_vector_bugs(bug: str, native_runner: NativeRunner) -> None:
    """On each of them the host CPU agrees with vmmio: Unicorn is the one that is wrong."""
    case = VECTOR_UNICORN_BUGS[bug].case
    verdict = judge_vector(case, native_runner.run(case), HOST, "host CPU")
    assert verdict.agreed, verdict.message


@pytest.mark.parametrize(
    ("code", "form"),
    [
        ("660f6e03", "movd xmm0, [rbx]"),
        ("c5f8100b", "vmovups xmm1, [rbx]"),
        ("62f17c48100b", "vmovups zmm1, [rbx]"),
    ],
)
def test_kvm_vector_not_emulated(code: str, form: str, kvm_runner: KvmRunner) -> None:
    """Linux's emulator fails on vector moves it has no semantics for (every VEX/EVEX one, most SSE ones):
    KVM reports an emulation failure, which the oracle counts as VECTOR_DOCUMENTED["vector-not-emulated"]."""
    case = replace(VECTOR_UNICORN_BUGS["vex128-keeps-upper"].case, code=bytes.fromhex(code), form=form)
    kvm = kvm_runner.run(case)
    assert "InstEmulExit" in kvm.outcome.error and "NOT_EMULATED" in kvm.outcome.error, kvm.outcome
    assert kvm_vector_deviation(case, kvm) == "vector-not-emulated"
