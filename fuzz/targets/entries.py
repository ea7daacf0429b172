"""The entry protocol under random entries, against a reference vCPU that only sees the accepted ones.

Two identical worlds (`fuzz.world`) run a random program of emulated instructions on userspace MMIO,
in-kernel devices, RAM and ports. At each step the fuzzer picks an entry: the right fulfillment, one
with a wrong GPA/port, size, direction, data or kind, Default, Discard, or a fulfillment with nothing
pending, each with or without exit_consistent; or it calls set_regs/set_control.

Invariants (docs/abi.md, "Semantics contract"): an entry is accepted exactly when the table says so. A
rejected entry raises EntryError and changes nothing: registers, control state, the pending request,
RAM, in-kernel devices, injected exceptions, the hardware's progress. An accepted entry, given to the
reference too, gives the same exit and the same state. set_regs/set_control while a request is pending
raise VcpuBusy and change nothing. A request is pending exactly after an MMIO/INOUT exit. An entry with
exit_consistent, or any entry while an instruction still carries one, never runs guest code.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

from fuzz.core import FIXED, Stats, Target, Violation, Weighted
from fuzz.world import DATA, KDEV, KPORT, MMIO, RAM_END, RCX, RDI, RDX, RSI, RSP, STACK, World, differences
from vmmio.abi import (
    Default,
    Discard,
    EntryError,
    FulfillInout,
    FulfillMmio,
    InoutExit,
    InstEmulExit,
    MmioExit,
    SuspendedExit,
    VmEntry,
)
from vmmio.vmm.vcpu import VcpuBusy

ALU = range(8)  # add, or, adc, sbb, and, sub, xor, cmp
LOADABLE = (0, 1, 2, 5, 8, 9, 10, 11)  # registers a load may overwrite: not rBX/rSP/rSI/rDI


@dataclass(frozen=True)
class Step:
    """One entry (or register call) to try. `kind` is a row of KINDS; `data` feeds its choices."""

    kind: str = field(metadata=FIXED)
    data: int = 0
    consistent: bool = False


@dataclass(frozen=True)
class Case:
    program: tuple[bytes, ...]
    gprs: tuple[int, ...]
    rflags: int
    quirks: tuple[int, ...]  # hardware runs that report StoppedEvent
    steps: tuple[Step, ...]


# -- programs ----------------------------------------------------------------------------------------


def _address(rng: random.Random) -> int:
    """Where an operand goes: userspace MMIO (and its page ends), the in-kernel device, RAM, or the
    boundaries between them, where one access is split across two kinds of memory."""
    return rng.choice(
        (
            MMIO + rng.randrange(0x40),
            MMIO + 0x1000 - rng.randrange(1, 9),
            KDEV + rng.randrange(0x40),
            KDEV - rng.randrange(1, 9),
            DATA + rng.randrange(0x100),
            RAM_END - rng.randrange(1, 9),
        )
    )


def _imm(rng: random.Random, byte: int, pfx: bytes) -> bytes:
    """An immediate as wide as the operand: imm8, imm16 with 66, else imm32."""
    return rng.randbytes(1 if byte == 0 else 2 if pfx.startswith(b"\x66") else 4)


def _modrm_abs(reg: int, addr: int) -> bytes:
    """ModRM + SIB for an absolute [disp32], then the displacement."""
    return bytes((0x04 | (reg & 7) << 3, 0x25)) + struct.pack("<I", addr)


# ModRM forms on an absolute address: (opcodes, ModRM.reg or None for "a register", immediate?).
# The low opcode bit picks byte/full width where the row has two opcodes.
_RM_FORMS: tuple[tuple[tuple[int, ...], tuple[int, ...] | None, str], ...] = (
    ((0x88, 0x89, 0x8A, 0x8B), None, ""),  # mov
    (tuple(a * 8 + k for a in range(8) for k in range(4)), None, ""),  # add..cmp, both directions
    ((0x80, 0x81), tuple(range(8)), "z"),  # alu r/m, imm
    ((0x83,), tuple(range(8)), "b"),  # alu r/m, imm8
    ((0x84, 0x85, 0x86, 0x87), None, ""),  # test, xchg
    ((0xF6, 0xF7), (0,), "z"),  # test r/m, imm
    ((0xF6, 0xF7), (2, 3), ""),  # not, neg
    ((0xFE, 0xFF), (0, 1), ""),  # inc, dec
    ((0xFF,), (6,), ""),  # push r/m
    ((0x8F,), (0,), ""),  # pop r/m
    ((0x0FB6, 0x0FB7, 0x0FBE, 0x0FBF), None, ""),  # movzx, movsx
    ((0x0FA3, 0x0FAB, 0x0FB3, 0x0FBB), None, ""),  # bt, bts, btr, btc
    ((0x0FBA,), (4, 5, 6, 7), "b"),  # bt* r/m, imm8
    ((0x0FAE,), (7,), ""),  # clflush
)


_SIZES = ((b"", 0), (b"", 0), (b"\x66", 0), (b"", 0x48))  # default, 66, REX.W operand size


def _rm_insn(rng: random.Random) -> bytes:
    """A ModRM form of the table above with an operand size (none, 66, REX.W) and REX.R registers."""
    opcodes, regs, imm = rng.choice(_RM_FORMS)
    op = rng.choice(opcodes)
    reg = rng.choice(LOADABLE) if regs is None else rng.choice(regs)
    size, rex = rng.choice(_SIZES)
    rex |= 0x44 if reg >= 8 else 0
    pfx = size + (bytes((rex,)) if rex else b"")
    opbytes = bytes((0x0F, op & 0xFF)) if op > 0xFF else bytes((op,))
    tail = b"" if not imm else rng.randbytes(1) if imm == "b" else _imm(rng, op & 1, pfx)
    return pfx + opbytes + _modrm_abs(reg, _address(rng)) + tail


def _moffs_insn(rng: random.Random) -> bytes:
    """mov al/ax/eax/rax <-> [moffs64]."""
    size = rng.choice((b"", b"\x66", b"\x48"))
    return size + bytes((0xA0 + rng.randrange(4),)) + struct.pack("<Q", _address(rng))


def _string_insn(rng: random.Random) -> bytes:
    rep = rng.choice((b"", b"\xf3", b"\xf3", b"\xf2"))
    size = rng.choice((b"", b"\x66", b"\x48"))
    op = rng.choice((0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF, 0x6C, 0x6D, 0x6E, 0x6F))
    addr32 = b"\x67" if rng.random() < 0.1 else b""
    return addr32 + rep + size + bytes((op,))


def _port_insn(rng: random.Random) -> bytes:
    size = b"\x66" if rng.random() < 0.3 else b""
    if rng.random() < 0.5:
        port = rng.choice((KPORT, KPORT + 1, KPORT + 3, 0x80, 0x3F8, rng.randrange(256)))
        return size + bytes((rng.choice((0xE4, 0xE5, 0xE6, 0xE7)), port & 0xFF))
    return size + bytes((rng.choice((0xEC, 0xED, 0xEE, 0xEF)),))


def _load_count(rng: random.Random) -> bytes:
    """mov ecx/edx, [mmio]: userspace's answer becomes a REP count or a port number."""
    reg = rng.choice((RCX, RCX, RDX))
    return b"\x8b" + _modrm_abs(reg, MMIO + rng.randrange(0x40))


def _not_emulated(rng: random.Random) -> bytes:
    return b"\x0f\x28" + _modrm_abs(rng.randrange(8), _address(rng))  # movaps: an INST_EMUL exit


PROGRAM: Weighted[Callable[[random.Random], bytes]] = Weighted(
    (
        (10, _rm_insn),
        (1, _moffs_insn),
        (5, _string_insn),
        (3, _port_insn),
        (2, _load_count),
        (1, _not_emulated),
    )
)


# -- entries -------------------------------------------------------------------------------------------

KINDS: Weighted[str] = Weighted(
    (
        (40, "right"),
        (8, "default"),
        (6, "discard"),
        (5, "wrong_addr"),
        (5, "wrong_size"),
        (5, "wrong_dir"),
        (5, "wrong_data"),
        (4, "wrong_kind"),
        (4, "stray"),
        (4, "set_regs"),
    )
)


def _value(data: int, size: int) -> int:
    """The data of a read answer: small values half the time (they become REP counts and ports)."""
    return (data >> 1) % 5 if data & 1 else (data >> 1) & ((1 << (8 * size)) - 1)


def _stray(step: Step) -> VmEntry:
    """A fulfillment made up from `step.data` alone: nothing pending asked for it."""
    d = step.data
    if d & 1:
        size = (1, 2, 4, 8)[d >> 1 & 3]
        gpa = (MMIO + (d >> 3 & 0xFF)) & ~(size - 1)
        return FulfillMmio(gpa, size, bool(d >> 11 & 1), 0, step.consistent)
    return FulfillInout(d >> 3 & 0xFFFF, (1, 2, 4)[(d >> 1 & 3) % 3], bool(d >> 19 & 1), 0, step.consistent)


# A fulfillment as fields: (GPA or port, size, is_write or is_in, data); the sizes its kind allows.
Fields = tuple[int, int, bool, int]


def _wrong_addr(f: Fields, d: int, sizes: tuple[int, ...]) -> Fields:
    bit = 12 + d % 40 if len(sizes) == 4 else d % 16  # another page at the same offset, or another port
    return (f[0] ^ 1 << bit, f[1], f[2], f[3])


def _wrong_size(f: Fields, d: int, sizes: tuple[int, ...]) -> Fields:
    size = sizes[(sizes.index(f[1]) + 1 + d % (len(sizes) - 1)) % len(sizes)]
    addr = f[0] & ~(size - 1) if len(sizes) == 4 else f[0]  # keep an MMIO answer within its page
    return (addr, size, f[2], f[3] & ((1 << (8 * size)) - 1))


def _wrong_data(f: Fields, d: int, sizes: tuple[int, ...]) -> Fields:
    return (f[0], f[1], f[2], f[3] ^ 1 << (d % (8 * f[1])))


MISMATCH: dict[str, Callable[[Fields, int, tuple[int, ...]], Fields]] = {
    "right": lambda f, d, sizes: f,
    "wrong_addr": _wrong_addr,
    "wrong_size": _wrong_size,
    "wrong_dir": lambda f, d, sizes: (f[0], f[1], not f[2], f[3]),
    "wrong_data": _wrong_data,
}


def make_entry(step: Step, pending: MmioExit | InoutExit | None) -> VmEntry:
    """The entry `step` stands for, given what is pending: the right answer changed as its kind says."""
    kind, d, ec = step.kind, step.data, step.consistent
    if kind == "default" or (pending is None and kind in ("right", "wrong_data")):
        return Default(ec)
    if kind == "discard":
        return Discard(ec)
    if pending is None or kind == "stray":
        return _stray(step)
    if isinstance(pending, MmioExit):
        if kind == "wrong_kind":
            return FulfillInout(pending.gpa & 0xFFFF, (1, 2, 4)[d % 3], pending.is_write, 0, ec)
        data = pending.data if pending.is_write else _value(d, pending.size)
        f = MISMATCH[kind]((pending.gpa, pending.size, pending.is_write, data), d, (1, 2, 4, 8))
        if kind == "wrong_data" and not pending.is_write:  # any data answers a read
            f = (f[0], f[1], f[2], data)
        return FulfillMmio(*f, ec)
    if kind == "wrong_kind":
        return FulfillMmio(MMIO + (pending.port & 0xFF0), (1, 2, 4, 8)[d % 4], not pending.is_in, 0, ec)
    data = _value(d, pending.size) if pending.is_in else pending.data
    f = MISMATCH[kind]((pending.port, pending.size, pending.is_in, data), d, (1, 2, 4))
    if kind == "wrong_data" and pending.is_in:
        f = (f[0], f[1], f[2], data)
    return FulfillInout(*f, ec)


def accepts(entry: VmEntry, pending: MmioExit | InoutExit | None) -> bool:
    """docs/abi.md's acceptance table, written out again rather than calling `matches`."""
    if pending is None:
        return type(entry) is Default
    if type(entry) is Discard:
        return True
    if isinstance(pending, MmioExit) and type(entry) is FulfillMmio:
        same = (entry.gpa, entry.size, entry.is_write) == (pending.gpa, pending.size, pending.is_write)
        return same and (not pending.is_write or entry.data == pending.data)
    if isinstance(pending, InoutExit) and type(entry) is FulfillInout:
        same = (entry.port, entry.size, entry.is_in) == (pending.port, pending.size, pending.is_in)
        return same and (pending.is_in or entry.data == pending.data)
    return False


# -- the run -------------------------------------------------------------------------------------------


def generate(rng: random.Random) -> Case:
    program = tuple(PROGRAM(rng)(rng) for _ in range(rng.randint(2, 16)))
    gprs = [rng.choice((0, 1, rng.getrandbits(64))) for _ in range(16)]
    gprs[RCX] = rng.randrange(6)
    gprs[RDX] = rng.choice((KPORT, 0x3F8, 0x80, rng.randrange(0x10000)))
    gprs[RSI] = _address(rng)
    gprs[RDI] = _address(rng)
    gprs[RSP] = rng.choice((STACK, MMIO + 0x100))
    rflags = rng.getrandbits(12) & 0xCD5
    quirks = tuple(sorted(rng.sample(range(1, 80), rng.choice((0, 0, 1, 3)))))
    steps = tuple(
        Step(KINDS(rng), rng.getrandbits(48), rng.random() < 0.2) for _ in range(rng.randint(10, 60))
    )
    return Case(program, tuple(gprs), rflags, quirks, steps)


_REQUESTS = (MmioExit, InoutExit)


def _registers(fz: World, ref: World, step: Step) -> None:
    """set_regs/set_control: refused and harmless while a request is pending, else applied to both."""
    regs = fz.vcpu.regs
    regs.gprs[(RCX, RDX, RSI, RDI, 0)[step.data % 5]] = step.data >> 3
    before = fz.snapshot()
    if fz.vcpu.pending is None:
        for w in (fz, ref):
            w.vcpu.set_regs(regs)
            w.vcpu.set_control(w.vcpu.control)
        return
    calls: tuple[tuple[str, Callable[[], None]], ...] = (
        ("set_regs", lambda: fz.vcpu.set_regs(regs)),
        ("set_control", lambda: fz.vcpu.set_control(fz.vcpu.control)),
    )
    for name, call in calls:
        try:
            call()
        except VcpuBusy:
            pass
        else:
            raise Violation("busy-accepted", f"{name} accepted while {fz.vcpu.pending} is pending")
        after = fz.snapshot()
        if after != before:
            raise Violation("busy-changed", f"a refused {name} changed {differences(before, after)}")


def check(case: Case, stats: Stats) -> int:
    fz = World.build(case.program, case.gprs, case.rflags, case.quirks)
    ref = World.build(case.program, case.gprs, case.rflags, case.quirks)
    sticky = False  # an accepted fulfillment of the instruction in flight asked for exit_consistent
    for n, step in enumerate(case.steps):
        if step.kind == "set_regs":
            _registers(fz, ref, step)
            continue
        pending = fz.vcpu.pending
        entry = make_entry(step, pending)
        valid = accepts(entry, pending)
        before = fz.snapshot()
        start = perf_counter()
        try:
            ex = fz.run(entry)
        except EntryError as err:  # the violations below are about this rejection, hence from None
            stats.time(perf_counter() - start)
            stats.notes["rejected"] += 1
            if valid:
                raise Violation(
                    "valid-rejected", f"step {n}: {entry} for {pending} rejected: {err}"
                ) from None
            after = fz.snapshot()
            if after != before:
                changed = differences(before, after)
                raise Violation("rejected-changed", f"step {n}: rejected {entry} changed {changed}") from None
            continue
        stats.time(perf_counter() - start)
        if not valid:
            raise Violation("invalid-accepted", f"step {n}: {entry} accepted for {pending}, exit {ex}")
        try:
            ex_ref = ref.run(entry)
        except EntryError as err:
            raise Violation(
                "reference-rejects", f"step {n}: {entry}: {err}; the fuzzed vCPU took it"
            ) from None
        if ex != ex_ref:
            raise Violation("exit-differs", f"step {n}: {entry} gives {ex}, the reference {ex_ref}")
        after = fz.snapshot()
        if after != ref.snapshot():
            raise Violation("state-differs", f"step {n}: after {entry}: {differences(after, ref.snapshot())}")
        request = isinstance(ex, _REQUESTS)
        if fz.vcpu.pending != (ex if request else None):
            raise Violation("pending", f"step {n}: exit {ex}, pending {fz.vcpu.pending}")
        is_fulfill = isinstance(entry, FulfillMmio | FulfillInout)
        if entry.exit_consistent or (sticky and is_fulfill):
            ran = after[-1] != before[-1]
            if ran or not isinstance(ex, (*_REQUESTS, SuspendedExit, InstEmulExit)):
                why = "exit_consistent" if entry.exit_consistent else "an earlier exit_consistent"
                raise Violation("consistent-ran", f"step {n}: {entry} with {why} ran the guest: {ex}")
        sticky = request and is_fulfill and (sticky or entry.exit_consistent)
        if isinstance(ex, InstEmulExit) and ex.insn:  # as a VMM would: skip what the kernel handed back
            for w in (fz, ref):
                regs = w.vcpu.regs
                regs.rip += len(ex.insn)
                w.vcpu.set_regs(regs)
        stats.notes[
            f"{type(ex).__name__}.{ex.reason.name}" if isinstance(ex, InstEmulExit) else type(ex).__name__
        ] += 1
    return len(case.steps)


TARGET = Target("entries", "entry", 100_000, 5_000, generate, check, __name__)
