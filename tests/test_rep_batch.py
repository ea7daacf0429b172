"""Batched REP (Capability.REP_BATCH): one request per run of string elements, with the same guest results
as one element per exit.

The differential rows run each REP string instruction twice on the scripted backend, with and without
batching, against a device that keeps every element access it sees, and compare the registers, RAM, the
device, the element accesses in order and the faults. The other tests pin the protocol: where runs end,
partial completion, faults between runs, exit_consistent, Discard, mismatched fulfillments, and that a
vCPU which never enables batching sees one-element exits only. The end-to-end rows do the same on
Unicorn through `Machine.service_batch`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from harness import CODE, DATA, KDEV, MMIO, Guest
from kvm_util import assemble, have_assembler

from vmmio.abi import (
    Capability,
    Default,
    Discard,
    EntryError,
    FulfillInoutBatch,
    FulfillMmio,
    FulfillMmioBatch,
    HltExit,
    InoutBatchExit,
    InoutExit,
    MmioBatchExit,
    MmioExit,
    SuspendedExit,
    VmEntry,
    VmExit,
)
from vmmio.devices import MemoryDevice
from vmmio.insn_at import Where
from vmmio.machine import TESTDEV_MMIO, TESTDEV_SIZE, Machine, Serviced
from vmmio.record import Recorder, RecordError
from vmmio.trace import exit_fields, text_line
from vmmio.vmm.vcpu import VcpuBusy
from vmmio.x86.faults import PF
from vmmio.x86.pagetables import RW, P
from vmmio.x86.regs import RFLAGS_FIXED1, Gpr

RAX, RCX, RDX, RSI, RDI = Gpr.RAX, Gpr.RCX, Gpr.RDX, Gpr.RSI, Gpr.RDI
DF = 1 << 10
DEV_SIZE = 0x3000
VA = 0x8_0000_0000  # a 4 KiB-mapped window above the harness's identity map
RAM_WINDOW = 0x4000  # the RAM compared after a run: DATA .. DATA + RAM_WINDOW

Element = tuple[str, int, int, bool, int]  # (space, address, size, is_write, value)


@dataclass
class Devices:
    """A memory-like MMIO device at MMIO and a port bank; both keep every element access in order."""

    mem: bytearray = field(default_factory=lambda: bytearray((i * 7 + 3) & 0xFF for i in range(DEV_SIZE)))
    next_in: int = 0x1234_5601
    trace: list[Element] = field(default_factory=list)
    partial: Callable[[int], int] | None = None  # elements to complete of a batch of n (default all)

    def _read(self, gpa: int, size: int) -> int:
        off = gpa - MMIO
        assert off >= 0 and off + size <= DEV_SIZE, hex(gpa)
        value = int.from_bytes(self.mem[off : off + size], "little")
        self.trace.append(("mmio", gpa, size, False, value))
        return value

    def _write(self, gpa: int, size: int, value: int) -> None:
        off = gpa - MMIO
        assert off >= 0 and off + size <= DEV_SIZE, hex(gpa)
        self.mem[off : off + size] = value.to_bytes(size, "little")
        self.trace.append(("mmio", gpa, size, True, value))

    def _in(self, port: int, size: int) -> int:
        value = self.next_in & ((1 << (8 * size)) - 1)
        self.next_in = (self.next_in * 5 + 1) & 0xFFFF_FFFF
        self.trace.append(("port", port, size, False, value))
        return value

    def serve(self, ex: VmExit) -> VmEntry:
        if isinstance(ex, MmioExit):
            if ex.is_write:
                self._write(ex.gpa, ex.size, ex.data)
                return ex.fulfill()
            return ex.fulfill(self._read(ex.gpa, ex.size))
        if isinstance(ex, InoutExit):
            if ex.is_in:
                return ex.fulfill(self._in(ex.port, ex.size))
            self.trace.append(("port", ex.port, ex.size, True, ex.data))
            return ex.fulfill()
        assert isinstance(ex, MmioBatchExit | InoutBatchExit), ex
        n = ex.count if self.partial is None else self.partial(ex.count)
        elements = range(n)
        size = ex.size
        if isinstance(ex, MmioBatchExit):
            if ex.is_write:
                for i in elements:
                    self._write(
                        ex.element_gpa(i), size, int.from_bytes(ex.data[i * size : (i + 1) * size], "little")
                    )
                return ex.fulfill(count=n)
            return ex.fulfill(
                b"".join(self._read(ex.element_gpa(i), size).to_bytes(size, "little") for i in elements)
            )
        assert isinstance(ex, InoutBatchExit)
        if ex.is_in:
            return ex.fulfill(b"".join(self._in(ex.port, size).to_bytes(size, "little") for _ in elements))
        for i in elements:
            self.trace.append(
                ("port", ex.port, size, True, int.from_bytes(ex.data[i * size : (i + 1) * size], "little"))
            )
        return ex.fulfill(count=n)


@dataclass
class Outcome:
    regs: tuple[int, ...]
    ram: bytes
    device: bytes
    trace: list[Element]
    injected: list[tuple[int, int | None, int | None]]
    exits: list[VmExit]


RAM = bytes((i * 13 + 1) & 0xFF for i in range(RAM_WINDOW))  # what DATA holds at the start


def guest(code: bytes, gprs: dict[int, int], df: bool = False) -> Guest:
    g = Guest(code, gprs, rflags=RFLAGS_FIXED1 | (DF if df else 0))
    g.vm.memory.write(DATA, RAM)
    return g


def run(
    g: Guest, start: Callable[[Guest], None], batching: bool, partial: Callable[[int], int] | None = None
) -> Outcome:
    """Run the guest from one fault to the end of the instruction, serving every exit from `Devices`."""
    if batching:
        g.vcpu.enable(Capability.REP_BATCH)
    devices = Devices(partial=partial)
    start(g)
    exits: list[VmExit] = []
    entry: VmEntry | None = None
    for _ in range(100_000):
        ex = g.vcpu.run(entry)
        exits.append(ex)
        if isinstance(ex, MmioExit | InoutExit | MmioBatchExit | InoutBatchExit):
            entry = devices.serve(ex)
            continue
        assert isinstance(ex, HltExit), ex
        r = g.regs
        return Outcome(
            (*r.gprs, r.rip, r.rflags),
            g.vm.memory.read(DATA, RAM_WINDOW),
            bytes(devices.mem),
            devices.trace,
            g.backend.injected,
            exits,
        )
    raise AssertionError("the instruction never finished")


def mmio_fault(gpa: int) -> Callable[[Guest], None]:
    return lambda g: g.fault(gpa)


def io_fault(port: int, size: int, is_in: bool) -> Callable[[Guest], None]:
    return lambda g: g.io(port, size, is_in)


@dataclass(frozen=True)
class Row:
    name: str
    code: str
    gprs: dict[int, int]
    start: Callable[[Guest], None]
    df: bool = False
    batches: int = 0  # batch exits expected with batching on (0: not checked)


ROWS = [
    Row(
        "movsb-ram-to-dev",
        "f3a4",
        {RCX: 0x1100, RSI: DATA + 0x10, RDI: MMIO + 0x20},
        mmio_fault(MMIO + 0x20),
        batches=3,
    ),
    Row(
        "movsd-dev-to-ram",
        "f3a5",
        {RCX: 1500, RSI: MMIO + 2, RDI: DATA + 0x800},
        mmio_fault(MMIO + 2),
        batches=3,
    ),
    Row(
        "movsq-down",
        "f348a5",
        {RCX: 700, RSI: DATA + 0x1FF8, RDI: MMIO + 0x1FF8},
        mmio_fault(MMIO + 0x1FF8),
        df=True,
    ),
    Row(
        "movsw-dev-to-ram-down",
        "f366a5",
        {RCX: 900, RSI: MMIO + 0x1001, RDI: DATA + 0x1800},
        mmio_fault(MMIO + 0x1001),
        df=True,
    ),
    Row(
        "movsd-first-crosses", "f3a5", {RCX: 40, RSI: DATA + 0xFFE, RDI: MMIO + 0x40}, mmio_fault(MMIO + 0x40)
    ),
    Row("movsd-dev-crosses", "f3a5", {RCX: 20, RSI: DATA, RDI: MMIO + 0xFF2}, mmio_fault(MMIO + 0xFF2)),
    Row(
        "stosd", "f3ab", {RCX: 2000, RAX: 0x1122_3344, RDI: MMIO + 0x100}, mmio_fault(MMIO + 0x100), batches=3
    ),
    Row(
        "stosw-down",
        "f366ab",
        {RCX: 300, RAX: 0xBEEF, RDI: MMIO + 0x1100},
        mmio_fault(MMIO + 0x1100),
        df=True,
    ),
    Row("stosq-one", "f348ab", {RCX: 1, RAX: 0x55, RDI: MMIO}, mmio_fault(MMIO), batches=-1),
    Row("lodsb", "f3ac", {RCX: 300, RSI: MMIO + 5}, mmio_fault(MMIO + 5), batches=1),
    Row("lodsd-down", "f3ad", {RCX: 9, RSI: MMIO + 0x1010}, mmio_fault(MMIO + 0x1010), df=True),
    Row("insw", "f3666d", {RCX: 3000, RDX: 0x1F0, RDI: DATA + 0x100}, io_fault(0x1F0, 2, True), batches=2),
    Row("insd-down", "f36d", {RCX: 100, RDX: 0x1F0, RDI: DATA + 0x2010}, io_fault(0x1F0, 4, True), df=True),
    Row("outsb", "f36e", {RCX: 10, RDX: 0x3F8, RSI: DATA + 0xFFD}, io_fault(0x3F8, 1, False), batches=2),
    Row("outsd", "f36f", {RCX: 1025, RDX: 0xCFC, RSI: DATA + 0x4}, io_fault(0xCFC, 4, False)),
    Row("movsb-addr32", "67f3a4", {RCX: 0x1_0000_0005, RSI: DATA, RDI: MMIO}, mmio_fault(MMIO)),
    Row("repe-cmpsb", "f3a6", {RCX: 50, RSI: MMIO, RDI: MMIO + 0x1000}, mmio_fault(MMIO), batches=-1),
    Row("repne-scasb", "f2ae", {RCX: 50, RAX: 0x99, RDI: MMIO}, mmio_fault(MMIO), batches=-1),
    Row("movsb-dev-to-dev", "f3a4", {RCX: 30, RSI: MMIO, RDI: MMIO + 0x2000}, mmio_fault(MMIO), batches=-1),
]


def _partial_thirds(n: int) -> int:
    return max(1, n // 3)


@pytest.mark.parametrize("partial", [None, _partial_thirds], ids=["whole", "thirds"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_batched_and_one_element_give_the_same_guest_results(
    row: Row, partial: Callable[[int], int] | None
) -> None:
    code = bytes.fromhex(row.code)
    one = run(guest(code, row.gprs, row.df), row.start, batching=False)
    batched = run(guest(code, row.gprs, row.df), row.start, batching=True, partial=partial)
    assert batched.regs == one.regs
    assert batched.ram == one.ram
    assert batched.device == one.device
    assert batched.trace == one.trace  # every element, in the order the CPU accesses them
    assert batched.injected == one.injected == []
    assert one.regs[16] == CODE + len(code) and one.regs[RCX] == 0
    assert not any(isinstance(e, MmioBatchExit | InoutBatchExit) for e in one.exits)
    n_batches = sum(isinstance(e, MmioBatchExit | InoutBatchExit) for e in batched.exits)
    if row.batches < 0:
        assert n_batches == 0
        assert len(batched.exits) == len(one.exits)
    elif partial is None:
        assert len(batched.exits) < len(one.exits)
        if row.batches:
            assert n_batches == row.batches


def test_a_run_ends_at_the_first_page_boundary_of_either_side() -> None:
    g = guest(bytes.fromhex("f3a4"), {RCX: 0x1100, RSI: DATA + 0x10, RDI: MMIO + 0x20})
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO + 0x20)
    first = g.vcpu.run()
    ram = g.vm.memory.read(DATA + 0x10, 0xFE0)
    assert first == MmioBatchExit(MMIO + 0x20, 1, 0xFE0, True, False, ram)  # the device page ends first
    second = g.vcpu.run(first.fulfill())
    assert isinstance(second, MmioBatchExit)
    assert (second.gpa, second.count) == (MMIO + 0x1000, 0x10)  # then the RAM page
    third = g.vcpu.run(second.fulfill())
    assert isinstance(third, MmioBatchExit)
    assert (third.gpa, third.count) == (MMIO + 0x1010, 0x1100 - 0xFF0)
    assert isinstance(g.vcpu.run(third.fulfill()), HltExit)
    assert g.regs.gprs[RCX] == 0


def test_partial_completion_does_exactly_that_many_iterations() -> None:
    g = guest(bytes.fromhex("f3a5"), {RCX: 100, RSI: MMIO, RDI: DATA})
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == MmioBatchExit(MMIO, 4, 100, False, False, b"")
    # Three elements, and a consistent stop to look at the state they left.
    answer = FulfillMmioBatch(MMIO, 4, 3, False, False, bytes.fromhex("01000000 02000000 03000000"), True)
    assert isinstance(g.vcpu.run(answer), SuspendedExit)
    regs = g.regs
    assert (regs.gprs[RCX], regs.gprs[RSI], regs.gprs[RDI], regs.rip) == (97, MMIO + 12, DATA + 12, CODE)
    assert g.vm.memory.read(DATA, 16) == bytes.fromhex("01000000 02000000 03000000") + RAM[12:16]
    assert g.vcpu.pending is None
    # The guest re-executes the instruction: the rest comes as the next run.
    g.fault(MMIO + 12)
    ex = g.vcpu.run()
    assert ex == MmioBatchExit(MMIO + 12, 4, 97, False, False, b"")
    ex = g.vcpu.run(ex.fulfill(bytes(4 * 50)))  # 50 more, no stop asked: the next run at once
    assert ex == MmioBatchExit(MMIO + 212, 4, 47, False, False, b"")
    assert g.regs.gprs[RCX] == 47  # completed iterations reach the registers when the vCPU leaves
    assert isinstance(g.vcpu.run(ex.fulfill(bytes(4 * 47))), HltExit)
    assert (g.regs.gprs[RCX], g.regs.rip) == (0, CODE + 2)


def test_a_fault_between_runs_leaves_the_completed_iterations() -> None:
    """RAM source: one page mapped, the next not present. The first run stops at the page end; the next
    element raises #PF there, with RCX/RSI/RDI counting the elements done and RIP at the instruction."""
    g = guest(bytes.fromhex("f3a4"), {RCX: 0x200, RSI: VA + 0xF00, RDI: MMIO})
    g.pt.map(VA, DATA, 0x1000, P | RW)
    g.write_tables()
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == MmioBatchExit(MMIO, 1, 0x100, True, False, g.vm.memory.read(DATA + 0xF00, 0x100))
    assert isinstance(g.vcpu.run(ex.fulfill()), HltExit)
    assert [(v, cr2) for v, _, cr2 in g.backend.injected] == [(PF, VA + 0x1000)]
    regs = g.regs
    assert (regs.gprs[RCX], regs.gprs[RSI], regs.gprs[RDI], regs.rip) == (
        0x100,
        VA + 0x1000,
        MMIO + 0x100,
        CODE,
    )


def test_a_fault_is_raised_at_the_same_element_with_and_without_batching() -> None:
    def make() -> Guest:
        g = guest(bytes.fromhex("f3a5"), {RCX: 0x500, RSI: VA + 0x10, RDI: MMIO})
        g.pt.map(VA, DATA, 0x1000, P | RW)
        g.write_tables()
        return g

    one, batched = run(make(), mmio_fault(MMIO), False), run(make(), mmio_fault(MMIO), True)
    assert batched.regs == one.regs and batched.trace == one.trace and batched.device == one.device
    assert batched.injected == one.injected == [(PF, 0, VA + 0x1000)]
    assert one.regs[RCX] == 0x500 - (0x1000 - 0x10) // 4


def test_exit_consistent_on_a_batch_stops_between_iterations() -> None:
    g = guest(bytes.fromhex("f3ab"), {RCX: 0x1800, RAX: 0xAB, RDI: MMIO})
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert isinstance(ex, MmioBatchExit) and ex.count == 0x400
    assert isinstance(g.vcpu.run(ex.fulfill(exit_consistent=True)), SuspendedExit)
    assert (g.regs.gprs[RCX], g.regs.gprs[RDI], g.regs.rip) == (0x1400, MMIO + 0x1000, CODE)
    assert g.backend.runs == 1  # the fault; no guest code ran after it


def test_discard_drops_the_run_in_flight_only() -> None:
    g = guest(bytes.fromhex("f3a5"), {RCX: 0x500, RSI: MMIO, RDI: DATA})
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO)
    first = g.vcpu.run()
    assert isinstance(first, MmioBatchExit) and first.count == 0x400
    second = g.vcpu.run(first.fulfill(b"\x11" * 0x1000))
    assert isinstance(second, MmioBatchExit) and second.count == 0x100
    assert isinstance(g.vcpu.run(Discard()), HltExit)
    assert g.vcpu.pending is None
    regs = g.regs
    assert (regs.gprs[RCX], regs.gprs[RSI], regs.gprs[RDI], regs.rip) == (
        0x100,
        MMIO + 0x1000,
        DATA + 0x1000,
        CODE,
    )
    assert g.vm.memory.read(DATA, 0x1000) == b"\x11" * 0x1000
    assert g.vm.memory.read(DATA + 0x1000, 4) != b"\x11" * 4


@pytest.mark.parametrize(
    "entry",
    [
        Default(),
        FulfillMmioBatch(MMIO, 4, 0x11, False, False, bytes(0x44)),  # more elements than asked
        FulfillMmio(MMIO, 4, False, 0),
        FulfillMmioBatch(MMIO + 4, 4, 1, False, False, bytes(4)),
        FulfillMmioBatch(MMIO, 2, 1, False, False, bytes(2)),
        FulfillMmioBatch(MMIO, 4, 1, True, False, b""),
        FulfillMmioBatch(MMIO, 4, 1, False, True, bytes(4)),
        FulfillInoutBatch(0, 4, 1, True, bytes(4)),
    ],
    ids=repr,
)
def test_a_mismatched_batch_fulfillment_is_rejected_with_nothing_changed(entry: VmEntry) -> None:
    g = guest(bytes.fromhex("f3a5"), {RCX: 0x10, RSI: MMIO, RDI: DATA})
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == MmioBatchExit(MMIO, 4, 0x10, False, False, b"")
    before, ram = g.regs.copy(), g.vm.memory.read(DATA, 0x40)
    with pytest.raises(EntryError):
        g.vcpu.run(entry)
    assert g.vcpu.pending == ex
    assert g.regs == before and g.vm.memory.read(DATA, 0x40) == ram
    assert isinstance(g.vcpu.run(ex.fulfill(bytes(range(0x40)))), HltExit)
    assert g.vm.memory.read(DATA, 0x40) == bytes(range(0x40))


def test_capabilities_change_only_when_idle() -> None:
    g = guest(bytes.fromhex("f3a5"), {RCX: 4, RSI: MMIO, RDI: DATA})
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == MmioExit(MMIO, 4, False, 0)  # never enabled: one element per exit
    with pytest.raises(VcpuBusy):
        g.vcpu.enable(Capability.REP_BATCH)
    assert g.vcpu.capabilities == Capability(0)
    assert isinstance(g.vcpu.run(ex.fulfill(7)), MmioExit)  # the next element, still one by one
    g2 = guest(bytes.fromhex("f3a5"), {RCX: 4, RSI: MMIO, RDI: DATA})
    with pytest.raises(ValueError, match="unknown capability"):
        g2.vcpu.enable(Capability(2))
    g2.vcpu.enable(Capability.REP_BATCH)
    g2.vcpu.disable(Capability.REP_BATCH)
    g2.fault(MMIO)
    assert g2.vcpu.run() == MmioExit(MMIO, 4, False, 0)


def test_in_kernel_devices_are_not_batched() -> None:
    class Counter:
        def __init__(self) -> None:
            self.writes: list[tuple[int, int, int]] = []

        def read(self, offset: int, size: int) -> int:
            return offset

        def write(self, offset: int, size: int, value: int) -> None:
            self.writes.append((offset, size, value))

    dev = Counter()
    g = guest(bytes.fromhex("f3ab"), {RDI: KDEV, RCX: 10, RAX: 0x55})
    g.vm.add_mmio_device(KDEV, 0x1000, dev)
    g.vcpu.enable(Capability.REP_BATCH)
    g.fault(KDEV)
    assert isinstance(g.vcpu.run(), HltExit)
    assert dev.writes == [(4 * i, 4, 0x55) for i in range(10)]
    assert (g.regs.gprs[RCX], g.regs.rip) == (0, CODE + 2)


# -- end to end on Unicorn, through Machine.service_batch ------------------------------------------------

needs_as = pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy")

GUESTS = {
    "blit": f"""
        mov rdi, {TESTDEV_MMIO:#x} + 0x10
        lea rsi, [rip + src]
        mov ecx, 0x1800
        rep movsb
        mov rsi, {TESTDEV_MMIO:#x} + 0x10
        mov rdi, 0x400000
        mov ecx, 0x300
        rep movsd
        std
        mov rdi, {TESTDEV_MMIO + TESTDEV_SIZE - 2:#x}
        mov eax, 0xa55a
        mov ecx, 0x20
        rep stosw
        cld
        mov rsi, {TESTDEV_MMIO + TESTDEV_SIZE - 0x40:#x}
        mov rdi, 0x401000
        mov ecx, 0x80
        rep movsb
        hlt
    src:
        .rept 0x1800
        .byte (. - src) * 7 & 0xff
        .endr
    """,
    "ports": """
        mov dx, 0x3f8
        lea rsi, [rip + msg]
        mov ecx, 12
        rep outsb
        mov dx, 0x3fd
        mov rdi, 0x402000
        mov ecx, 40
        rep insb
        hlt
    msg: .ascii "hello, world"
    """,
}


@needs_as
@pytest.mark.parametrize("name", sorted(GUESTS))
def test_machine_batched_and_one_element_agree_on_unicorn(name: str) -> None:
    code = assemble(GUESTS[name])
    results = []
    for batching in (False, True):
        out: list[bytes] = []
        m = Machine(uart_sink=out.append)
        vcpu = m.vcpu(m.load(code))
        if batching:
            vcpu.enable(Capability.REP_BATCH)  # type: ignore[attr-defined]
        exits: list[VmExit] = []
        result = m.run(vcpu, trace=exits.append, max_exits=100_000)
        assert result.reason == "hlt", result
        regs = vcpu.regs  # type: ignore[attr-defined]
        results.append(
            (
                (*regs.gprs, regs.rip, regs.rflags),
                bytes(m.testdev.data),
                m.vm.memory.read(0x400000, 0x3000),
                b"".join(out),
                len(exits),
            )
        )
    one, batched = results
    assert batched[:4] == one[:4]
    assert batched[4] < one[4] / 10


@needs_as
def test_machine_cuts_a_run_at_the_end_of_the_device() -> None:
    """A run the kernel asks for may go past the device model: Machine completes the part the device holds,
    and the rest goes on (here to unclaimed space: writes dropped, one element at a time)."""
    base = 0xD008_0000
    code = assemble(
        f"""
        mov rdi, {base + 8:#x}
        mov ecx, 5
        mov eax, 0x11223344
        rep stosd
        hlt
        """
    )
    m = Machine()
    small = MemoryDevice(0x10)
    m.add_mmio(base, 0x10, small)
    vcpu = m.vcpu(m.load(code))
    vcpu.enable(Capability.REP_BATCH)  # type: ignore[attr-defined]
    seen: list[tuple[VmExit, VmEntry | None]] = []
    result = m.run(vcpu, observe=lambda s: seen.append((s.exit, s.answer)))
    assert result.reason == "hlt"
    element = bytes.fromhex("44332211")
    assert seen[:3] == [
        (
            MmioBatchExit(base + 8, 4, 5, True, False, element * 5),
            FulfillMmioBatch(base + 8, 4, 2, True, False, b""),
        ),
        (
            MmioBatchExit(base + 16, 4, 3, True, False, element * 3),
            FulfillMmioBatch(base + 16, 4, 1, True, False, b""),
        ),
        (
            MmioBatchExit(base + 20, 4, 2, True, False, element * 2),
            FulfillMmioBatch(base + 20, 4, 1, True, False, b""),
        ),
    ]
    assert seen[3][0] == MmioExit(base + 24, 4, True, 0x11223344)  # the last element alone
    assert small.data[8:] == element * 2
    assert small.trace == [(8, 4, True, 0x11223344), (12, 4, True, 0x11223344)]
    assert vcpu.regs.gprs[RCX] == 0  # type: ignore[attr-defined]


def test_trace_shows_a_batch_and_records_refuse_it() -> None:
    ex = MmioBatchExit(MMIO + 0x10, 2, 8, False, True, b"")
    s = Serviced(3, ex, ex.fulfill(bytes(10)), 1000, 10, 5)
    fields = exit_fields(s, Where(CODE, b"\xf3\x66\xa5", None, "rep movsw", False))
    assert {k: fields[k] for k in ("kind", "gpa", "size", "dir", "count", "df", "done")} == {
        "kind": "mmio_batch",
        "gpa": hex(MMIO + 0x10),
        "size": 2,
        "dir": "read",
        "count": 8,
        "df": True,
        "done": 5,
    }
    assert "read  gpa=0x40000010   size=2 count=8 done=5 rep movsw" in text_line(fields)
    out = io.BytesIO()
    recorder = Recorder(out, {}, None)
    with pytest.raises(RecordError, match=r"exit 3 cannot be recorded: .*Batch needs ABI version 3"):
        recorder(s)
    port = InoutBatchExit(0x1F0, 2, 4, True, b"")
    fields = exit_fields(Serviced(1, port, None, 0, 0, 0), Where(None))
    assert (fields["kind"], fields["port"], fields["dir"], fields["done"]) == (
        "inout_batch",
        "0x1f0",
        "in",
        None,
    )
