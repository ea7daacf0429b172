"""Random instructions through `Vcpu.run` in every mode: every outcome must be defined.

A case is a CPU mode (real, 16/32-bit protected with and without paging, compatibility, 64-bit; CPL 0
or 3; WP/SMEP/SMAP/AM), segment bases and limits, random registers biased towards the interesting
addresses, instruction bytes at RIP (the decoder target's generators, biased to the emulated forms),
one scripted hardware event (usually the NPF or I/O exit that instruction would cause) and the data
userspace answers with. Every request is answered until something else comes back.

Invariants: `run` returns one of the six exits and raises nothing. A request is pending exactly after an
MMIO/INOUT exit, an MMIO exit never names RAM or an in-kernel device, an I/O exit never an in-kernel
port. At most one exception is injected, shaped as its vector requires (error code, CR2 for #PF). When
the instruction faults or is handed back (InstEmulExit, at its own RIP with bytes that are at RIP),
neither registers nor RAM change; otherwise RIP ends on the instruction or right after it (or, for a
control transfer, wherever it went). Only REP string instructions may keep asking for more than STEPS
requests, or commit part of their work. RIP stays below 4 GiB outside 64-bit mode, and RFLAGS keeps its
fixed and reserved bits.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from time import perf_counter

from fuzz import x86gen
from fuzz.core import FIXED, Stats, Target, Violation, Weighted
from fuzz.modes import KDEV, KPORT, MMIO, MODES, PT_POOL, RAM_END, TOP, TOP_CODE, WINDOWS, Mode, template
from fuzz.world import MemDevice
from vmmio.abi import HltExit, InoutExit, InstEmulExit, MmioExit, ShutdownExit, SuspendedExit
from vmmio.backends.base import BackendEvent, HltEvent, IoEvent, NpfEvent, ShutdownEvent, StoppedEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.semantics import lookup
from vmmio.vmm.vcpu import Vcpu
from vmmio.vmm.vm import Vm
from vmmio.x86.decode import decode
from vmmio.x86.faults import GuestFault
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.paging import TranslationError
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import CR0_AM, CR0_WP, CR4_SMAP, CR4_SMEP, Control, Regs

# Requests answered per case before it counts as "still asking": ENTER with nesting level 31 makes 62
# (rBP, then 30 frame pointers read and pushed, then the new one).
STEPS = 64
EXITS = (MmioExit, InoutExit, InstEmulExit, HltExit, SuspendedExit, ShutdownExit)
ERROR_CODE = frozenset((8, 10, 11, 12, 13, 14, 17, 21, 29, 30))  # SDM vol. 3, table 6-1
RFLAGS_RESERVED = (1 << 3) | (1 << 5) | (1 << 15) | ~((1 << 22) - 1)
FEATURES = ((1, "cr0", CR0_WP), (2, "cr4", CR4_SMEP), (4, "cr4", CR4_SMAP), (8, "cr0", CR0_AM))
PT_END = 0x9_8000  # the page tables live in [PT_POOL, PT_END): their A/D bits may change on a fault
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Event:
    """The one thing the hardware reports: kind is npf, fetch, io, hlt, stop or shutdown."""

    kind: str = field(metadata=FIXED)
    gpa: int = 0
    port: int = 0
    size: int = field(default=1, metadata=FIXED)
    is_in: bool = False


@dataclass(frozen=True)
class Case:
    mode: str = field(metadata=FIXED)
    cpl: int = field(metadata=FIXED)
    features: int  # bits of FEATURES
    cs_base: int = field(metadata=FIXED)
    rip: int = field(metadata=FIXED)
    code: bytes = b""
    gprs: tuple[int, ...] = ()
    rflags: int = 2
    bases: tuple[int, ...] = ()  # ES, SS, DS, FS, GS
    limits: tuple[int, ...] = ()
    event: Event = Event("hlt")
    answers: tuple[int, ...] = ()


# -- building a case's machine -----------------------------------------------------------------------


def control(case: Case) -> Control:
    mode = MODES[case.mode]
    ctl = mode.control(case.cpl, case.cs_base, case.bases, case.limits)
    for bit, reg, value in FEATURES:
        if case.features & bit and mode.bits:
            setattr(ctl, reg, getattr(ctl, reg) | value)
    return ctl


def code_address(mode: Mode, cs_base: int, rip: int) -> int:
    """Guest-physical address of the code at CS:RIP (identity-mapped, but for the top page)."""
    la = (cs_base + rip) & 0xFFFF_FFFF
    return TOP_CODE + (la & 0xFFF) if mode.paging and la >= TOP else la


@dataclass
class Rig:
    vm: Vm
    backend: ScriptedBackend
    vcpu: Vcpu


def build(case: Case) -> Rig:
    mode = MODES[case.mode]
    vm = Vm()
    region = vm.add_ram(0, RAM_END)
    if mode.paging is not None:  # the template is zero outside the page tables, as fresh RAM is
        region.view[PT_POOL:PT_END] = template(mode.paging)[0][PT_POOL:PT_END]
    wrap = (1 << 64) - 1 if mode.bits == 64 else 0xFFFF_FFFF
    for i, byte in enumerate(case.code):  # byte by byte: the code may wrap at 4 GiB to linear 0
        at = code_address(mode, case.cs_base, (case.rip + i) & wrap)
        if at < RAM_END:
            region.view[at] = byte
    vm.add_mmio_device(KDEV, 0x1000, MemDevice(0x1000))
    vm.add_port_device(KPORT, 4, MemDevice(4))
    regs = Regs(list((case.gprs + (0,) * 16)[:16]), case.rip, case.rflags)
    backend = ScriptedBackend(regs, control(case), [_event(case.event)])
    return Rig(vm, backend, vm.create_vcpu(backend))


def code_bytes(m: Rig, case: Case) -> bytes:
    """The 15 bytes at CS:RIP as the CPU would fetch them, as far as they are RAM."""
    out = bytearray()
    mode = MODES[case.mode]
    wrap = (1 << 64) - 1 if mode.bits == 64 else 0xFFFF_FFFF
    view = m.vm.memory.ram[0].view
    for i in range(15):
        gpa = code_address(mode, case.cs_base, (case.rip + i) & wrap)
        if gpa >= RAM_END:
            break
        out.append(view[gpa])
    return bytes(out)


def _event(e: Event) -> BackendEvent:
    table: dict[str, BackendEvent] = {
        "npf": NpfEvent(e.gpa, e.is_in),
        "fetch": NpfEvent(e.gpa, False, True),
        "io": IoEvent(e.port & 0xFFFF, e.size, e.is_in),
        "hlt": HltEvent(),
        "stop": StoppedEvent(),
        "shutdown": ShutdownEvent(),
    }
    return table[e.kind]


# -- generating --------------------------------------------------------------------------------------

_MODE_NAMES = tuple(MODES)
_ADDRESSES = (0, 1, MMIO, MMIO + 0xFFC, MMIO + 0xFFF, RAM_END - 2, KDEV, KDEV + 0xFFE, 0x1000, 0x5_0000,
              0xFFFF, 0xFFFF_FFFF, 1 << 47, (1 << 47) - 4, _U64, 1 << 63, *WINDOWS, 0x80C0_0FFE,
              TOP)  # fmt: skip
CODE: Weighted[x86gen.Gen] = Weighted(((4, x86gen.emulated), (3, x86gen.instruction)))
RFLAGS_BITS = sum(1 << b for b in (0, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21))
VM = 1 << 17


def _value(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.5:
        return rng.choice(_ADDRESSES) + rng.choice((0, 0, 1, 2, 4, 8, -1, -2, 0x10))
    if r < 0.7:
        return rng.randrange(16)
    return rng.getrandbits(64)


def _code_at(rng: random.Random, mode: Mode) -> tuple[int, int]:
    """(CS base, RIP): start of a page, a page's end (the fetch crosses), RAM's end (it crosses into
    MMIO), the top of the 4 GiB linear space (it wraps), and for 16-bit code the end of the segment."""
    choices = [(0, 0x1000 + rng.randrange(0x100)), (0, 0x2000 - rng.randint(1, 15))]
    if mode.bits in (0, 16):
        choices += [(0x9_0000, 0x1_0000 - rng.randint(1, 15)), (0, 0x1_0000 - rng.randint(1, 3))]
    else:
        choices += [(0, RAM_END - rng.randint(1, 15))]
        if mode.paging is not None and mode.bits != 64:
            choices += [(0, 0x1_0000_0000 - rng.randint(1, 15))] * 2
    return rng.choice(choices)


def _first_access(case: Case) -> BackendEvent | None:
    """The exit the instruction would cause: its port, or the GPA of its first memory operand. It uses
    vmmio's decoder and page walker; if they fail, the check of the case reports it."""
    try:
        return _translated(case)
    except Exception:
        return None


def _translated(case: Case) -> BackendEvent | None:
    m = build(case)
    ctl = m.backend.control
    insn = decode(code_bytes(m, case), ctl.code_size)
    if not isinstance(insn, Insn):
        return None
    gprs = list((case.gprs + (0,) * 16)[:16])
    op = insn.opcode if insn.opmap == OpMap.ONE else -1
    if op in (0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F):
        port = insn.imm & 0xFF if op < 0xEC else gprs[2] & 0xFFFF
        return IoEvent(port, min(insn.width, 4), op in (0xE4, 0xE5, 0xEC, 0xED, 0x6C, 0x6D))
    mask = (1 << (8 * insn.addr_size)) - 1
    if op in (0xA4, 0xA5, 0xA6, 0xA7, 0xAC, 0xAD):
        seg, ea = (insn.seg_override if insn.seg_override >= 0 else 3), gprs[6] & mask
    elif op in (0xAA, 0xAB, 0xAE, 0xAF):
        seg, ea = 0, gprs[7] & mask
    elif insn.mem is not None and not insn.mem.vsib:
        seg, ea = insn.mem.seg, insn.mem.effective_address(gprs, case.rip + insn.length)
    else:
        return None
    try:
        la = linear_address(ctl, ctl.code_size, seg, ea, 1, 0, case.rflags)
        return NpfEvent(m.vm.walker.translate(ctl, la, 0, False))
    except (GuestFault, TranslationError):
        return None


def generate(rng: random.Random) -> Case:
    name = rng.choice(_MODE_NAMES)
    mode = MODES[name]
    cpl = 0 if mode.bits == 0 else rng.choice((0, 0, 3))
    cs_base, rip = _code_at(rng, mode)
    bits = 64 if mode.bits == 64 else 32 if mode.bits == 32 else 16
    code = CODE(rng)(rng, bits) + rng.randbytes(rng.randint(0, 8))
    gprs = tuple(_value(rng) for _ in range(16))
    rflags = 2 | rng.getrandbits(22) & RFLAGS_BITS & ~(VM if rng.random() < 0.95 else 0)
    bases = tuple(rng.choice((0, 0, 0, MMIO, KDEV, 0x8000_0000, rng.getrandbits(32))) for _ in range(5))
    limits = tuple(
        rng.choice((0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF, 0xFFF, rng.getrandbits(32))) for _ in range(5)
    )
    features = rng.getrandbits(4) if rng.random() < 0.3 else 0
    answers = tuple(rng.choice((0, 1, rng.getrandbits(64))) for _ in range(rng.randint(1, 4)))
    case = Case(name, cpl, features, cs_base, rip, code, gprs, rflags, bases, limits, Event("hlt"), answers)
    r = rng.random()
    smart = _first_access(case) if r < 0.7 else None
    if isinstance(smart, NpfEvent):
        event = Event("npf", smart.gpa, is_in=smart.is_write)
    elif isinstance(smart, IoEvent):
        event = Event("io", port=smart.port, size=smart.size, is_in=smart.is_in)
    elif r < 0.85:
        event = Event("npf", rng.choice((MMIO, MMIO + 0x1000, KDEV, 0x1000, rng.getrandbits(40))))
    elif r < 0.93:
        port = rng.choice((KPORT, 0x80, 0x3F8, rng.getrandbits(16)))
        event = Event("io", port=port, size=rng.choice((1, 2, 4)), is_in=rng.random() < 0.5)
    else:
        event = Event(rng.choice(("fetch", "hlt", "stop", "shutdown")), code_address(mode, cs_base, rip))
    return Case(name, cpl, features, cs_base, rip, code, gprs, rflags, bases, limits, event, answers)


# -- checking ----------------------------------------------------------------------------------------


def _ram(m: Rig) -> int:
    """A checksum of RAM outside the page tables (whose A/D bits a walk may set even when it faults)."""
    view = m.vm.memory.ram[0].view
    return zlib.crc32(view[PT_END:], zlib.crc32(view[:PT_POOL]))


def _check_request(m: Rig, ex: MmioExit | InoutExit) -> None:
    if m.vcpu.pending != ex:
        raise Violation("pending", f"{ex} returned, {m.vcpu.pending} pending")
    if isinstance(ex, MmioExit):
        for gpa in (ex.gpa, ex.gpa + ex.size - 1):
            if m.vm.memory.find(gpa) is not None:
                raise Violation("mmio-exit-on-ram", f"{ex} names RAM or an in-kernel device")
    elif m.vm.ports.lookup(ex.port) is not None:
        raise Violation("io-exit-on-kernel-port", f"{ex} names an in-kernel port")


def _answer(ex: MmioExit | InoutExit, value: int) -> object:
    if isinstance(ex, MmioExit):
        return ex.fulfill(None if ex.is_write else value & ((1 << (8 * ex.size)) - 1))
    return ex.fulfill(None if not ex.is_in else value & ((1 << (8 * ex.size)) - 1))


def _check_injected(case: Case, injected: list[tuple[int, int | None, int | None]]) -> None:
    if len(injected) > 1:
        raise Violation("injected-twice", f"{injected}")
    for vector, error_code, cr2 in injected:
        wanted = vector in ERROR_CODE  # real mode pushes none, so there either is fine
        if not 0 <= vector < 32 or (MODES[case.mode].bits and (error_code is not None) != wanted):
            raise Violation("injected-shape", f"vector {vector}, error code {error_code}")
        if (cr2 is not None) != (vector == 14):
            raise Violation("injected-cr2", f"vector {vector}, cr2 {cr2}")


_PORT_OPS = frozenset((0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F))
_STRING_OPS = frozenset((*range(0xA4, 0xA8), *range(0xAA, 0xB0), 0x6C, 0x6D, 0x6E, 0x6F))
_STACK_OPS = frozenset(((0xFF, 6), (0x8F, 0)))  # push/pop r/m: memory even with a register operand
_TRANSFERS = "vmmio.vmm.semantics.control"  # CALL/JMP/RET/IRET: RIP ends at the target
# Families whose forms reach memory without a memory operand: the stack, descriptor tables (in real mode
# a segment load or far jump reaches none: performed after an NPF, as any form that makes no access is).
_IMPLICIT_MEMORY = frozenset(
    f"vmmio.vmm.semantics.{name}" for name in ("stack", "control", "segments", "system")
)
# MASKMOVQ/MASKMOVDQU/VMASKMOVDQU store to DS:rDI, their ModRM naming registers only; an all-zero mask
# may still fault (SDM: implementation dependent), so an NPF from one is genuine.
_IMPLICIT_STORES = frozenset(((OpMap.M0F, 0xF7),))


def _check_exit_kind(case: Case, insn: Insn, module: str) -> None:
    """An instruction the kernel performed must be one that can cause the exit the hardware reported:
    docs/abi.md's GPA_MISMATCH is for the code changing between the exit and the decode. `module`: where
    its semantics live."""
    one = insn.opmap == OpMap.ONE
    ports = one and insn.opcode in _PORT_OPS
    memory = (
        insn.mem is not None
        or module in _IMPLICIT_MEMORY
        or (one and (insn.opcode in _STRING_OPS or (insn.opcode, insn.reg & 7) in _STACK_OPS))
        or (insn.opmap, insn.opcode) in _IMPLICIT_STORES
    )
    # A form that makes no access at all cannot contradict an NPF and is performed (vcpu._complete);
    # port I/O without a memory operand can (IN/OUT are refused as GPA_MISMATCH).
    if case.event.kind == "npf" and ports and not memory:
        raise Violation("npf-from-port-io", f"{insn.mnemonic} performed after an NPF at {case.event.gpa:#x}")
    if case.event.kind == "io" and not ports:
        raise Violation(
            "io-exit-without-port",
            f"{insn.mnemonic} performed after an I/O exit on port {case.event.port:#x}",
        )


def check(case: Case, stats: Stats) -> int:
    m = build(case)
    mode = MODES[case.mode]
    before, ram = m.backend.regs.copy(), _ram(m)
    code = code_bytes(m, case)
    insn = decode(code, m.backend.control.code_size)
    form = lookup(insn) if isinstance(insn, Insn) else None
    rep_string = form is not None and form.string and isinstance(insn, Insn) and insn.rep != 0
    entry = None
    ex: object = None
    requested = False
    for n in range(STEPS):
        start = perf_counter()
        ex = m.vcpu.run(entry)  # type: ignore[arg-type]
        stats.time(perf_counter() - start)
        if not isinstance(ex, EXITS):
            raise Violation("exit-type", f"run returned {ex!r}")
        if not isinstance(ex, MmioExit | InoutExit):
            break
        _check_request(m, ex)
        requested = True
        entry = _answer(ex, case.answers[n % len(case.answers)] if case.answers else 0)
    else:
        if not rep_string:
            raise Violation("still-asking", f"{STEPS} requests and {ex} from a non-REP instruction")
        stats.notes["capped"] += 1
        return 1
    if m.vcpu.pending is not None:
        raise Violation("pending", f"{ex} returned, {m.vcpu.pending} pending")
    regs, injected = m.backend.regs, m.backend.injected
    _check_injected(case, injected)
    if mode.bits != 64 and regs.rip >> 32:
        raise Violation("rip-width", f"RIP {regs.rip:#x} in {case.mode} after {insn}")
    if regs.rflags & RFLAGS_RESERVED or not regs.rflags & 2:
        raise Violation("rflags", f"RFLAGS {regs.rflags:#x}, was {before.rflags:#x}")
    if isinstance(ex, InstEmulExit):
        if ex.rip != case.rip:
            raise Violation("inst-emul-rip", f"{ex} for the instruction at {case.rip:#x}")
        if not (code.startswith(ex.insn) or ex.insn.startswith(code)):
            raise Violation("inst-emul-bytes", f"{ex}: not the bytes at RIP ({code.hex()})")
    untouched = isinstance(ex, InstEmulExit) or injected or case.event.kind in ("hlt", "stop", "shutdown")
    width = (1 << 64) - 1 if mode.bits == 64 else 0xFFFF_FFFF  # EIP wraps at 4 GiB outside 64-bit mode
    transfer = form is not None and form.fn.__module__ == _TRANSFERS
    done = isinstance(insn, Insn) and (transfer or regs.rip == (case.rip + insn.length) & width)
    if untouched or not done:
        if not rep_string and regs != before:
            raise Violation("changed-without-completing", f"{ex}, injected {injected}: {before} -> {regs}")
        if not rep_string and _ram(m) != ram:
            raise Violation("ram-changed-without-completing", f"{ex}, injected {injected}")
        if regs.rip != case.rip:
            raise Violation("rip-moved", f"{ex}, injected {injected}: RIP {case.rip:#x} -> {regs.rip:#x}")
    if isinstance(insn, Insn) and (requested or (done and not untouched)):
        _check_exit_kind(case, insn, form.fn.__module__ if form is not None else "")
    outcome = type(ex).__name__ + (f".{ex.reason.name}" if isinstance(ex, InstEmulExit) else "")
    stats.notes["injected" if injected else "done" if done else outcome] += 1
    return 1


TARGET = Target("insns", "run()", 200_000, 10_000, generate, check, __name__)
