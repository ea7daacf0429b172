"""Differential test: vmmio against raw Unicorn, instruction by instruction, for every emulated form.

Each case (tests/oracles/gen.py) is one instruction with random prefixes, ModRM/SIB shapes, immediates,
registers and flags whose memory operand lands in the MMIO window. vmmio runs it on the scripted
backend with the operand in a memory-like MMIO device; Unicorn runs the same bytes in 64-bit mode with
the window mapped as plain RAM holding the same bytes. Compared: all GPRs, RIP, the status flags that
are defined for the form, DF, the window and the RAM area; and vmmio's MMIO requests against the
planned accesses (sizes, addresses, order, reads before writes).

Unicorn is QEMU-derived and can be wrong; the host CPU (tests/test_oracle_native.py) is the referee.
Cases in `unicorn_known_wrong` were checked against the host and are kept out of this comparison.
VMMIO_ORACLE_CASES sets the number of cases (default: see oracles/drive.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles.drive import check_case, oracle_settings
from oracles.gen import CODE, FAMILIES, SPECS, Case, case_for, cases
from oracles.known import UNICORN_BUGS, unicorn_known_wrong
from oracles.outcome import compare
from oracles.unicorn_run import UnicornRunner
from oracles.vmmio_run import run_vmmio

from vmmio.vmm.semantics import FORMS, lookup
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn

if TYPE_CHECKING:
    from iced_x86._iced_x86_py import Register as IcedRegister

pytest.importorskip("unicorn")


@pytest.fixture(scope="module")
def unicorn_runner() -> Iterator[UnicornRunner]:
    yield UnicornRunner()


# Unicorn does not enforce where LOCK is legal (see oracles/known.py). It does enforce the 15-byte limit
# (#GP, reported through the runner's exception hook).
UNICORN_FAMILIES = [f for f in FAMILIES if f != "lock_ud"]


@pytest.mark.parametrize("family", UNICORN_FAMILIES)
def test_vmmio_matches_unicorn(family: str, unicorn_runner: UnicornRunner) -> None:
    """Random cases of one family of forms; any difference fails with the case and the diff."""

    @oracle_settings(family)
    @given(case=cases(family))
    def run(case: Case) -> None:
        bug = unicorn_known_wrong(case)
        if bug is not None:
            event(f"not compared with Unicorn: {bug}")
            return
        event(case.form)
        check_case(case, unicorn_runner.run, "unicorn")

    run()


@pytest.mark.parametrize("bug", sorted(UNICORN_BUGS))
def test_unicorn_bugs_still_reproduce(bug: str, unicorn_runner: UnicornRunner) -> None:
    """Each excluded behaviour still makes Unicorn disagree with vmmio (which agrees with the host CPU,
    see test_oracle_native.py); when this fails, Unicorn was fixed: drop the exclusion."""
    case = UNICORN_BUGS[bug].case
    assert unicorn_known_wrong(case) in (bug, None)
    diffs = compare(case, unicorn_runner.run(case), run_vmmio(case), "unicorn", "vmmio")
    assert diffs, f"Unicorn now agrees with vmmio on {case.form} ({case.code.hex()}): drop {bug!r}"


# --------------------------------------------------------------------------------------------------
# Tests of the generator itself: encodings and planned addresses checked by an independent decoder.
# --------------------------------------------------------------------------------------------------


def _iced_address(case: Case) -> int | None:
    """The linear address of the instruction's memory operand as iced-x86 decodes it, or None."""
    import iced_x86
    from iced_x86 import Register as R

    insn = iced_x86.Decoder(64, case.code, ip=CODE).decode()
    assert insn.len == len(case.code), f"iced decodes {insn.len} bytes of {case.code.hex()} ({case.form})"
    if not any(insn.op_kind(n) == iced_x86.OpKind.MEMORY for n in range(insn.op_count)):
        return None
    seg = {R.FS: case.fs_base, R.GS: case.gs_base}.get(insn.memory_segment, 0)
    if insn.is_ip_rel_memory_operand:
        return (seg + insn.ip_rel_memory_address) & ((1 << 64) - 1)
    order = [R.RAX, R.RCX, R.RDX, R.RBX, R.RSP, R.RBP, R.RSI, R.RDI]
    order += [R.R8, R.R9, R.R10, R.R11, R.R12, R.R13, R.R14, R.R15]
    full = dict(zip(order, case.gprs, strict=True))
    used = [r for r in (insn.memory_base, insn.memory_index) if r != R.NONE]
    a32 = any(iced_x86.RegisterExt.size(r) == 4 for r in used) or (not used and case.addr_size == 4)
    bits = 32 if a32 else 64

    def value(r: IcedRegister) -> int:
        return 0 if r == R.NONE else full[iced_x86.RegisterExt.full_register(r)]

    base, index = value(insn.memory_base), value(insn.memory_index)
    ea = insn.memory_displacement + base + index * insn.memory_index_scale
    return (seg + (ea & ((1 << bits) - 1))) & ((1 << 64) - 1)


@oracle_settings("alu")
@given(case=cases())
def test_generator_addresses_agree_with_iced(case: Case) -> None:
    """The generator's solved operand address is where iced-x86 says the instruction points (iced also
    keeps FS/GS when a null segment prefix follows). Not checked: register forms, strings, the BT
    register forms (the bit offset moves the access) and cases that fault before any access; POP with
    an RSP base is checked with RSP + size."""
    import iced_x86

    address = _iced_address(case)
    if address is None or "reg-form" in case.tags or case.family == "string" or not case.accesses:
        return
    if case.family == "bt" and case.form.split(", ")[1].startswith("r"):
        return
    pop = case.form.split()[0] == "pop"  # not POPCNT
    planned = case.accesses[-1] if pop else case.accesses[0]
    if pop:
        insn = iced_x86.Decoder(64, case.code, ip=CODE).decode()
        if insn.memory_base in (iced_x86.Register.RSP, iced_x86.Register.ESP):
            address += planned.size
    assert address == planned.addr, (
        f"{case.form} {case.code.hex()}: iced {address:#x}, planned {planned.addr:#x}"
    )


def test_every_registered_memory_form_has_a_generator() -> None:
    """Each semantic function in vmmio's form table is reachable from some generator spec, except the
    port I/O forms and the cache-line flushes, which have no data to compare."""
    covered: set[object] = set()

    def cover(specs: Sequence[Any], draw: Callable[[Any], st.SearchStrategy[Case]], examples: int) -> None:
        @settings(
            max_examples=examples, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(st.data())
        def sample(data: st.DataObject) -> None:
            for spec in specs:
                case = data.draw(draw(spec))
                insn = decode(case.code + bytes(15), 64)
                assert isinstance(insn, Insn), f"vmmio cannot decode {case.code.hex()} ({case.form}): {insn}"
                form = lookup(insn)
                assert form is not None, f"vmmio has no form for {case.code.hex()} ({case.form})"
                covered.add(form.fn)

        sample()

    cover(SPECS, case_for, 3)
    from oracles.gen_ctl import CTL_SPECS, ctl_case_for  # the stack, control, segment and system forms

    cover(CTL_SPECS, ctl_case_for, 6)
    out_of_scope = {"port_in", "port_out", "ins", "outs", "flush_line"}
    out_of_scope |= {"sse_move", "vex_move", "evex_move"}  # tests/oracles/gen_vector.py, checked there
    missing = {f.fn.__name__ for f in FORMS.values() if f.fn not in covered} - out_of_scope
    assert not missing, f"emulated forms without an oracle generator: {sorted(missing)}"
