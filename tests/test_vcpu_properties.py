"""Hostile input: any instruction bytes, any register state, any entry from userspace.

Every case must end in a defined outcome (an exit, or an exception injected into the guest) and the
vCPU must never be left half-changed.
"""

from __future__ import annotations

from harness import CODE, DATA, MMIO, Guest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vmmio.abi import (
    Default,
    Discard,
    EntryError,
    FulfillInout,
    FulfillMmio,
    HltExit,
    InoutExit,
    InstEmulExit,
    MmioExit,
    VmEntry,
    VmExit,
)
from vmmio.vmm.semantics import FORMS, lookup
from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn

RAX, RCX, RDX, RBX = range(4)
U64 = (1 << 64) - 1

# Register values that point at interesting places as often as at random ones.
reg_values = st.one_of(
    st.sampled_from([0, 1, 3, U64, MMIO, MMIO + 0xFFC, MMIO + 0xFFF, DATA, 1 << 63, (1 << 47) - 2]),
    st.integers(0, U64),
)

# Opcode bytes of the emulated forms, so that half the cases reach the semantics, not only the decoder.
# Opcode spaces (registry.space): legacy maps, then VEX (C4, W0 vvvv=1111 L0) and EVEX (62, W0 vvvv=1111,
# no masking) over maps 0F, 0F38, 0F3A.
_ESCAPES = {0: b"", 1: b"\x0f", 2: b"\x0f\x38", 3: b"\x0f\x3a"}
_ESCAPES |= {0x10 | m: bytes([0xC4, 0xE0 | m, 0x78]) for m in (1, 2, 3)}
_ESCAPES |= {0x20 | m: bytes([0x62, 0xF0 | m, 0x7C, 0x08]) for m in (1, 2, 3)}
_OPCODES = sorted({_ESCAPES[m] + bytes([op]) for m, op, *_ in FORMS})
codes = st.one_of(
    st.binary(min_size=1, max_size=16),
    st.tuples(st.sampled_from(_OPCODES), st.binary(min_size=1, max_size=10)).map(lambda t: t[0] + t[1]),
)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(
    code=codes,
    prefix=st.sampled_from([b"", b"\x66", b"\x67", b"\xf3", b"\xf2", b"\xf0", b"\x48", b"\x64", b"\x0f"]),
    gprs=st.lists(reg_values, min_size=16, max_size=16),
    rflags=st.integers(0, 0xFFF).map(lambda f: (f & 0xCD5) | 0x2),
    answers=st.lists(st.integers(0, U64), min_size=1, max_size=8),
)
def test_any_bytes_end_in_a_defined_outcome(
    code: bytes, prefix: bytes, gprs: list[int], rflags: int, answers: list[int]
) -> None:
    code = prefix + code
    g = Guest(code, dict(enumerate(gprs)), rflags)
    g.fault(MMIO)
    before = g.regs.copy()
    decoded = decode(code + bytes(16), 64)
    form = lookup(decoded) if isinstance(decoded, Insn) else None
    is_rep_string = form is not None and form.string and isinstance(decoded, Insn) and decoded.rep != 0

    entry: VmEntry | None = None
    last: VmExit | None = None
    for n in range(64):
        last = g.vcpu.run(entry)
        data = answers[n % len(answers)]
        if isinstance(last, MmioExit):
            assert last.size in (1, 2, 4, 8) and (last.gpa & 0xFFF) + last.size <= 0x1000
            entry = last.fulfill(None if last.is_write else data & ((1 << (8 * last.size)) - 1))
        elif isinstance(last, InoutExit):
            entry = last.fulfill(None if not last.is_in else data & ((1 << (8 * last.size)) - 1))
        else:
            break
    else:
        assert is_rep_string, "only REP string instructions may keep asking"
        return

    event(f"outcome: {type(last).__name__}{' + injected' if g.backend.injected else ''}")
    if isinstance(last, InstEmulExit):
        assert last.rip == CODE
        assert g.regs == before or is_rep_string
    elif g.backend.injected:
        assert len(g.backend.injected) == 1
        assert g.regs.rip == CODE
        assert g.regs == before or is_rep_string
    else:
        assert isinstance(last, HltExit)
        assert isinstance(decoded, Insn) and form is not None
        assert g.regs.rip in (CODE, CODE + decoded.length)
        assert g.regs.rip == CODE + decoded.length or is_rep_string


def _fulfill_mmio(draw: st.DrawFn) -> FulfillMmio:
    size = draw(st.sampled_from([1, 2, 4, 8]))
    gpa = draw(st.sampled_from([MMIO, MMIO + 4, MMIO + 8, DATA]))
    data = draw(st.integers(0, (1 << (8 * size)) - 1))
    return FulfillMmio(gpa, size, draw(st.booleans()), data, draw(st.booleans()))


@st.composite
def entries(draw: st.DrawFn) -> VmEntry:
    kind = draw(st.sampled_from(["default", "discard", "mmio", "inout"]))
    consistent = draw(st.booleans())
    if kind == "default":
        return Default(consistent)
    if kind == "discard":
        return Discard(consistent)
    if kind == "mmio":
        return _fulfill_mmio(draw)
    size = draw(st.sampled_from([1, 2, 4]))
    port = draw(st.integers(0, 0xFFFF))
    return FulfillInout(
        port, size, draw(st.booleans()), draw(st.integers(0, (1 << (8 * size)) - 1)), consistent
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(script=st.lists(entries(), max_size=12))
def test_random_entries_never_corrupt_a_pending_request(script: list[VmEntry]) -> None:
    g = Guest(bytes.fromhex("0103"), {RBX: MMIO, RAX: 1})  # add [rbx], eax: a read, then a write
    g.fault(MMIO)
    pending = g.vcpu.run()
    assert pending == MmioExit(MMIO, 4, False, 0)
    before = g.regs.copy()
    for entry in script:
        try:
            ex = g.vcpu.run(entry)
        except EntryError:
            assert g.vcpu.pending == pending
            assert g.regs == before
            continue
        if isinstance(entry, Discard):
            assert g.regs == before
        else:
            assert isinstance(entry, FulfillMmio) and pending.matches(entry)
            assert ex == MmioExit(MMIO, 4, True, (entry.data + 1) & 0xFFFFFFFF)
        return
