"""illumos bhyve-tests' inst_emul suite, ported: our own guests (guests/inst_emul_*.S) and harnesses.

The originals (usr/src/test/bhyve-tests/tests/inst_emul/ in illumos-gate, CDDL) were read for what
they check, not copied. Each test runs on vmmio's kernel over Unicorn and on the KVM reference, whose
own emulator (Linux's) answers the same questions; where they legitimately differ the test says so.

- exit_consistent (the MMIO half; vmmio has no RDMSR exit): an entry with exit_consistent finishes the
  instruction in flight and stops before the next; asked again it makes no progress. bhyve answers an
  unfulfilled request asked to be consistent with the same exit again; vmmio's ABI refuses the entry
  (EntryError) and changes nothing, which is the same guarantee: no progress without the answer.
- inout: REP INSB and REP OUTSB with a count of 1 are one port exit each, and more string I/O shapes.
- imul: IMUL forms against a patterned MMIO device (each 16-bit word holds its own address).
- rep_instrs: REP MOVS/STOS against an in-kernel device (the local APIC page) and REP INSB from an
  in-kernel port (the PIT) run to completion without an exit.
- triple_fault: a fault with no usable IDT shuts the vCPU down at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from guest_images import BACKENDS, get_regs, start

from vmmio.abi import (
    Default,
    EntryError,
    HltExit,
    InoutExit,
    MmioExit,
    ShutdownExit,
    ShutdownReason,
    SuspendedExit,
    VmExit,
)
from vmmio.devices import LocalApic, Pit8254, VirtualClock
from vmmio.devices.lapic import LAPIC_BASE, VERSION, VERSION_VALUE
from vmmio.machine import ExitSource, Layout, Machine
from vmmio.vmm.vcpu import Vcpu
from vmmio.x86.regs import DF

BUF = 0x20_0000  # RAM the guests use as their buffer

# --------------------------------------------------------------------------------------------------
# exit_consistent
# --------------------------------------------------------------------------------------------------

EC_MMIO = 0xC000_0000


def _expect_consistent_again(vcpu: ExitSource) -> None:
    """Already consistent: another such entry returns at once and the guest makes no progress."""
    before = get_regs(vcpu)
    assert isinstance(vcpu.run(Default(exit_consistent=True)), SuspendedExit)
    after = get_regs(vcpu)
    assert (after.gprs, after.rip, after.rflags) == (before.gprs, before.rip, before.rflags)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exit_consistent(backend: str) -> None:
    m = Machine(uart_sink=lambda _: None)
    vcpu = start(m, "inst_emul_exit_consistent", backend)

    # mov ecx, [rax] (2 bytes): one read
    ex = vcpu.run()
    assert ex == MmioExit(EC_MMIO, 4, False, 0)
    rip = get_regs(vcpu).rip
    for entry in (Default(exit_consistent=True), Default()):
        with pytest.raises(EntryError):  # no answer, no progress
            vcpu.run(entry)
        assert vcpu.pending == ex and get_regs(vcpu).rip == rip  # type: ignore[attr-defined]
    assert isinstance(vcpu.run(ex.fulfill(0x1234_5678, exit_consistent=True)), SuspendedExit)
    regs = get_regs(vcpu)
    assert (regs.rip, regs.rcx) == (rip + 2, 0x1234_5678)
    _expect_consistent_again(vcpu)

    # add dword ptr [rax + 4], 0x11 (4 bytes, after two NOPs): the write still comes before the stop
    ex = vcpu.run()
    assert ex == MmioExit(EC_MMIO + 4, 4, False, 0)
    rip = get_regs(vcpu).rip
    assert rip == regs.rip + 2
    ex = vcpu.run(ex.fulfill(0x100, exit_consistent=True))
    assert ex == MmioExit(EC_MMIO + 4, 4, True, 0x111)
    assert isinstance(vcpu.run(ex.fulfill()), SuspendedExit)  # the request stayed in effect
    assert get_regs(vcpu).rip == rip + 4
    _expect_consistent_again(vcpu)

    # rep movsd, 4 dwords from MMIO into RAM: vmmio stops between two iterations (a consistent point);
    # Linux's emulator goes on through the iterations, each read a normal exit, then stops
    ex = vcpu.run()
    assert ex == MmioExit(EC_MMIO + 0x10, 4, False, 0)
    rip = get_regs(vcpu).rip
    seen = [vcpu.run(ex.fulfill(0xA0, exit_consistent=True))]
    while isinstance(seen[-1], MmioExit):
        read = seen[-1]
        seen.append(vcpu.run(read.fulfill(0xA0 + read.gpa - EC_MMIO - 0x10)))
    regs = get_regs(vcpu)
    assert isinstance(seen[-1], SuspendedExit)
    done = 1 if backend == "unicorn" else 4
    assert seen[:-1] == [MmioExit(EC_MMIO + 0x10 + 4 * i, 4, False, 0) for i in range(1, done)]
    assert (regs.rcx, regs.rsi, regs.rdi) == (4 - done, EC_MMIO + 0x10 + 4 * done, BUF + 4 * done)
    # between iterations RIP stays at the instruction; Linux stops after the last with RCX = 0 and RIP
    # still there (RFLAGS.RF set), where running it again does nothing but step past it
    assert regs.rip == rip
    _expect_consistent_again(vcpu)
    ex = vcpu.run()
    while isinstance(ex, MmioExit):
        ex = vcpu.run(ex.fulfill(0xA0 + ex.gpa - EC_MMIO - 0x10))
    assert isinstance(ex, HltExit)
    assert m.vm.memory.read(BUF, 16) == struct.pack("<4I", 0xA0, 0xA4, 0xA8, 0xAC)


# --------------------------------------------------------------------------------------------------
# inout
# --------------------------------------------------------------------------------------------------

PORT = 0x55AA


@dataclass(frozen=True)
class Step:
    """One group of the inout guest: the port exits it makes, in order (IN answered with `answers`),
    then the registers at the HLT that ends it, and bytes of the buffer."""

    exits: list[InoutExit]
    answers: list[int]
    regs: dict[str, int]
    memory: dict[int, bytes] = field(default_factory=dict)


INOUT_PRELOAD = {BUF + 0x20: bytes.fromhex("11223344"), BUF + 0x40: bytes.fromhex("102030")}
INOUT_STEPS = [
    # REP INSB and REP OUTSB with a count of 1: one exit each (bhyve's case)
    Step([InoutExit(PORT, 1, True, 0)], [0xEE], {"rcx": 0, "rdi": BUF + 1}, {BUF: b"\xee"}),
    Step([InoutExit(PORT, 1, False, 0xEE)], [], {"rcx": 0, "rsi": BUF + 1}),
    # other sizes
    Step(
        [InoutExit(PORT, 2, True, 0), InoutExit(PORT, 4, False, 0x4433_2211)],
        [0xBEEF],
        {"rcx": 0, "rdi": BUF + 0x12, "rsi": BUF + 0x24},
        {BUF + 0x10: b"\xef\xbe"},
    ),
    # a count of 0: nothing at all
    Step([], [], {"rcx": 0, "rdi": BUF + 0x30}, {BUF + 0x30: b"\0"}),
    Step([InoutExit(PORT, 1, False, v) for v in (0x10, 0x20, 0x30)], [], {"rcx": 0, "rsi": BUF + 0x43}),
    # DF set: downwards
    Step(
        [InoutExit(PORT, 1, True, 0)] * 2,
        [0xA1, 0xA2],
        {"rcx": 0, "rdi": BUF + 0x4F},
        {BUF + 0x50: b"\xa2\xa1"},
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_inout(backend: str) -> None:
    m = Machine(uart_sink=lambda _: None)
    vcpu = start(m, "inst_emul_inout", backend)
    for at, data in INOUT_PRELOAD.items():
        m.vm.memory.write(at, data)
    for n, step in enumerate(INOUT_STEPS, 1):
        answers = iter(step.answers)
        seen: list[VmExit] = []
        ex = vcpu.run()
        while isinstance(ex, InoutExit) and len(seen) < 10:
            seen.append(ex)
            ex = vcpu.run(ex.fulfill(next(answers)) if ex.is_in else ex.fulfill())
        assert seen == step.exits, f"group {n}"
        assert isinstance(ex, HltExit), f"group {n}: {ex}"
        regs = get_regs(vcpu)
        assert {name: getattr(regs, name) for name in step.regs} == step.regs, f"group {n}"
        assert not regs.rflags & DF
        for at, data in step.memory.items():
            assert m.vm.memory.read(at, len(data)) == data, f"group {n}"


# --------------------------------------------------------------------------------------------------
# imul
# --------------------------------------------------------------------------------------------------

IMUL_DEV = 0xE000_0000
RDX_IN = 0x1111_2222_3333_4444
CF, OF = 0x1, 0x800
M64 = (1 << 64) - 1


class PatternDevice:
    """Each 16-bit word of a read holds the low 16 bits of its own address, ascending from the access's
    address (bhyve's imul device); a 1-byte read gets the low byte. Reads only; every access is logged."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.log: list[tuple[int, int, bool]] = []

    def read(self, offset: int, size: int) -> int:
        gpa = self.base + offset
        self.log.append((gpa, size, False))
        value = sum(((gpa + 2 * k) & 0xFFFF) << (16 * k) for k in range((size + 1) // 2))
        return value & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append((self.base + offset, size, True))


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _merge(old: int, value: int, bits: int) -> int:
    """A register write of `bits` bits: 32-bit writes zero-extend, narrower ones keep the rest."""
    if bits == 32:
        return value & 0xFFFF_FFFF
    mask = (1 << bits) - 1
    return (old & ~mask & M64) | (value & mask)


@dataclass(frozen=True)
class Imul:
    """One case of the imul guest, in its order: `form` is "mov", "rm" (two operands), "imm" (three)
    or "one" (one operand, into rDX:rAX); `offset` is the operand's place in the device."""

    form: str
    bits: int
    offset: int
    rax: int
    imm: int = 0

    def expect(self) -> tuple[int, int, int | None]:
        """RAX, RDX and CF|OF after the instruction (None: flags not defined, for MOV not checked)."""
        bits, rax = self.bits, self.rax & M64
        operand = PatternDevice(IMUL_DEV).read(self.offset, bits // 8)
        if self.form == "mov":
            return _merge(rax, operand, bits), RDX_IN, None
        if self.form in ("rm", "imm"):
            left = _signed(rax, bits) if self.form == "rm" else self.imm
            product = left * _signed(operand, bits)
            flags = 0 if product == _signed(product, bits) else CF | OF
            return _merge(rax, product, bits), RDX_IN, flags
        product = _signed(rax, bits) * _signed(operand, bits)
        flags = 0 if product == _signed(product, bits) else CF | OF
        if bits == 8:
            return _merge(rax, product, 16), RDX_IN, flags
        return _merge(rax, product, bits), _merge(RDX_IN, product >> bits, bits), flags


IMUL_CASES = [
    Imul("mov", 16, 0x1234, 0x0123_4567_89AB_CDEF),
    Imul("mov", 32, 0x1232, 0x0123_4567_89AB_CDEF),
    Imul("mov", 64, 0x1230, 0x0123_4567_89AB_CDEF),
    Imul("rm", 16, 0x1234, 0xDEAD_BEEF_CAFE_0002),
    Imul("rm", 32, 0x1232, 0xDEAD_BEEF_0000_0002),
    Imul("rm", 64, 0x1230, 0x10),
    Imul("rm", 32, 0x1232, 0x10000),
    Imul("rm", 16, 0x9234, 3),
    Imul("rm", 64, 0xFFF8, -1),
    Imul("imm", 16, 0x9234, 0, -5),
    Imul("imm", 32, 0x1232, 0, 0x12345),
    Imul("imm", 64, 0x9230, 0, -0x765_4321),
    Imul("imm", 64, 0x1230, 0, 0x7F),
    Imul("imm", 16, 0x0100, 0, 0x7FFF),
    Imul("one", 8, 0x12F5, 0xDEAD_BEEF_CAFE_BA0C),
    Imul("one", 8, 0x1202, 3),
    Imul("one", 16, 0x9234, 0x1234),
    Imul("one", 32, 0x1232, 0xFFFF_FFFF_8000_0000),
    Imul("one", 64, 0x9230, -7),
    Imul("one", 64, 0x0010, 2),
]


def test_imul_model_matches_bhyves_constants() -> None:
    """The pattern and the model give the values bhyve's guest checks for its three forms."""
    assert [c.expect()[0] & ((1 << c.bits) - 1) for c in IMUL_CASES[:6]] == [
        0x1234,
        0x1234_1232,
        0x1236_1234_1232_1230,
        0x2468,
        0x2468_2464,
        0x2361_2341_2321_2300,
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_imul(backend: str) -> None:
    layout = Layout(uart_mmio=None, uart_port=None, debug_exit_mmio=None, testdev_mmio=None)
    m = Machine(layout)
    device = PatternDevice(IMUL_DEV)
    m.add_mmio(IMUL_DEV, 0x1_0000, device)
    result = m.run(start(m, "inst_emul_imul", backend), max_exits=200)
    assert (result.reason, result.status) == ("exit", len(IMUL_CASES)), result
    assert device.log == [(IMUL_DEV + c.offset, c.bits // 8, False) for c in IMUL_CASES]
    for n, case in enumerate(IMUL_CASES):
        rax, rdx, rflags = struct.unpack("<3Q", m.vm.memory.read(BUF + 24 * n, 24))
        want_rax, want_rdx, want_flags = case.expect()
        assert (rax, rdx) == (want_rax, want_rdx), f"case {n} {case}: {rax:#x} {rdx:#x}"
        if want_flags is not None:
            assert rflags & (CF | OF) == want_flags, f"case {n} {case}: rflags {rflags:#x}"


# --------------------------------------------------------------------------------------------------
# rep_instrs
# --------------------------------------------------------------------------------------------------

PIT_PORT = 0x40


class Recorder:
    """A device model in vmmio's kernel, with every access it served logged."""

    def __init__(self, device: LocalApic | Pit8254) -> None:
        self.device = device
        self.log: list[tuple[int, int, bool, int]] = []

    def read(self, offset: int, size: int) -> int:
        value = self.device.read(offset, size)
        self.log.append((offset, size, False, value))
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append((offset, size, True, value))
        self.device.write(offset, size, value)


@pytest.mark.parametrize(("backend", "budget"), [("unicorn", None), ("unicorn", 7), ("kvm", None)])
def test_rep_instrs(backend: str, budget: int | None) -> None:
    """`budget`: vmmio's kernel's REP iterations per entry (default 64; 7 makes the guest re-fault)."""
    m = Machine(uart_sink=lambda _: None)
    clock = VirtualClock()
    apic = Recorder(LocalApic(clock))
    pit = Recorder(Pit8254(clock))
    m.vm.add_mmio_device(LAPIC_BASE, 0x1000, apic)
    m.vm.add_port_device(PIT_PORT, 4, pit)
    vcpu = start(m, "inst_emul_rep_instrs", backend, rep_budget=budget)
    mem = m.vm.memory

    def step() -> dict[str, int]:
        ex = vcpu.run()
        assert isinstance(ex, HltExit), f"{ex}: in-kernel devices must not exit"
        regs = get_regs(vcpu)
        return {"rcx": regs.rcx, "rsi": regs.rsi, "rdi": regs.rdi}

    # rep movsd: 16 dwords of the APIC page into RAM
    assert step() == {"rcx": 0, "rsi": LAPIC_BASE + 64, "rdi": BUF + 64}
    assert apic.log == [(4 * i, 4, False, apic.log[i][3]) for i in range(16)]
    assert mem.read(BUF, 64) == b"".join(v.to_bytes(4, "little") for *_, v in apic.log)
    assert apic.log[VERSION // 4][3] == VERSION_VALUE
    # rep stosb: 64 bytes onto the APIC page (byte writes, which the APIC ignores)
    apic.log.clear()
    assert step()["rcx"] == 0 and get_regs(vcpu).rdi == LAPIC_BASE + 64
    assert apic.log == [(i, 1, True, 0x61) for i in range(64)]
    assert apic.device.read(VERSION, 4) == VERSION_VALUE
    # rep insb: 64 reads of PIT counter 0 into RAM
    assert step() == {"rcx": 0, "rsi": LAPIC_BASE + 64, "rdi": BUF + 128}
    assert [entry[:3] for entry in pit.log] == [(0, 1, False)] * 64
    assert mem.read(BUF + 64, 64) == bytes(v for *_, v in pit.log)
    # rep stosd: 300 dwords, more than one budget of the kernel's REP iterations
    apic.log.clear()
    assert step()["rcx"] == 0 and get_regs(vcpu).rdi == LAPIC_BASE + 0x400 + 1200
    assert apic.log == [(0x400 + 4 * i, 4, True, 0x0BAD_F00D) for i in range(300)]


# --------------------------------------------------------------------------------------------------
# triple_fault
# --------------------------------------------------------------------------------------------------

TRIPLE_FAULTS = {0: "ud2 through not-present gates", 1: "ud2, IDT limit 0", 2: "kernel #UD", 3: "#GP"}


@pytest.mark.parametrize("variant", sorted(TRIPLE_FAULTS), ids=list(TRIPLE_FAULTS.values()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_triple_fault(backend: str, variant: int) -> None:
    m = Machine(uart_sink=lambda _: None)
    vcpu = start(m, "inst_emul_triple_fault", backend, rdi=variant)
    assert vcpu.run() == ShutdownExit(ShutdownReason.TRIPLE_FAULT)  # the first exit
    if isinstance(vcpu, Vcpu):  # vmmio's ABI: a vCPU in shutdown stays there
        assert vcpu.run() == ShutdownExit(ShutdownReason.TRIPLE_FAULT)
        assert "triple fault" in vcpu.shutdown_detail
