"""The kernel's state machine: the entry protocol, page crossings, faults, REP bounds, INST_EMUL."""

from __future__ import annotations

import pytest
from harness import CODE, DATA, KDEV, MMIO, Guest

from vmmio.abi import (
    Default,
    Discard,
    EntryError,
    FulfillInout,
    FulfillMmio,
    HltExit,
    InstEmulExit,
    InstEmulReason,
    MmioExit,
    ShutdownExit,
    SuspendedExit,
)
from vmmio.backends.base import HltEvent, ShutdownEvent, StoppedEvent
from vmmio.x86.faults import GP, PF, SS, UD
from vmmio.x86.pagetables import NX, RW, US, P

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
MOV_EAX_RBX = bytes.fromhex("8b03")
ADD_RBX_EAX = bytes.fromhex("0103")
VA = 0x8_0000_0000  # a 4 KiB-mapped window above the identity map, see `window`


def window(guest: Guest, pages: list[int | None], flags: int = P | RW) -> None:
    """Map VA + n*4K to each GPA in `pages` (None: leave not present)."""
    for n, gpa in enumerate(pages):
        if gpa is not None:
            guest.pt.map(VA + n * 0x1000, gpa, 0x1000, flags)
    guest.write_tables()


def pte(guest: Guest, va: int) -> int:
    return guest.vm.memory.read_int(guest.pt.entry_address(va, 1), 8)


# -- the entry protocol -------------------------------------------------------------------------


def test_read_request_then_fulfill_completes() -> None:
    g = Guest(MOV_EAX_RBX, {RBX: MMIO + 4})
    g.fault(MMIO + 4)
    ex = g.vcpu.run()
    assert ex == MmioExit(MMIO + 4, 4, False, 0)
    assert g.vcpu.pending == ex
    assert g.regs.rip == CODE  # nothing committed while pending
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO + 4, 4, False, 0xCAFE)), HltExit)
    assert g.regs.gprs[RAX] == 0xCAFE
    assert g.regs.rip == CODE + 2
    assert g.vcpu.pending is None


@pytest.mark.parametrize(
    "entry",
    [
        Default(),
        FulfillMmio(MMIO + 8, 4, False, 1),
        FulfillMmio(MMIO, 2, False, 1),
        FulfillMmio(MMIO, 4, True, 1),
        FulfillInout(0x3F8, 4, True, 1),
    ],
    ids=["default", "wrong gpa", "wrong size", "wrong direction", "inout for mmio"],
)
def test_mismatched_entry_is_rejected_and_changes_nothing(
    entry: Default | FulfillMmio | FulfillInout,
) -> None:
    g = Guest(MOV_EAX_RBX, {RBX: MMIO})
    g.fault(MMIO)
    pending = g.vcpu.run()
    before = g.regs.copy()
    with pytest.raises(EntryError):
        g.vcpu.run(entry)
    assert g.vcpu.pending == pending
    assert g.regs == before
    # The caller can retry correctly.
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO, 4, False, 7)), HltExit)
    assert g.regs.gprs[RAX] == 7


def test_write_fulfillment_must_echo_the_data() -> None:
    g = Guest(bytes.fromhex("8903"), {RBX: MMIO, RAX: 0x1234})
    g.fault(MMIO)
    assert g.vcpu.run() == MmioExit(MMIO, 4, True, 0x1234)
    with pytest.raises(EntryError):
        g.vcpu.run(FulfillMmio(MMIO, 4, True, 0x1235))
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO, 4, True, 0x1234)), HltExit)


@pytest.mark.parametrize(
    "entry", [FulfillMmio(MMIO, 4, False, 0), FulfillInout(0x80, 1, True, 0), Discard()], ids=str
)
def test_entry_with_nothing_pending_is_rejected(entry: FulfillMmio | FulfillInout | Discard) -> None:
    g = Guest(MOV_EAX_RBX, {RBX: MMIO})
    g.fault(MMIO)
    with pytest.raises(EntryError):
        g.vcpu.run(entry)
    assert g.backend.runs == 0
    assert g.vcpu.run() == MmioExit(MMIO, 4, False, 0)


def test_discard_drops_the_instruction_without_effect() -> None:
    g = Guest(ADD_RBX_EAX, {RBX: MMIO, RAX: 1})
    g.fault(MMIO)
    before = g.regs.copy()
    assert g.vcpu.run() == MmioExit(MMIO, 4, False, 0)
    assert g.vcpu.run(FulfillMmio(MMIO, 4, False, 5)) == MmioExit(MMIO, 4, True, 6)
    assert isinstance(g.vcpu.run(Discard()), HltExit)
    assert g.regs == before  # RIP still at the instruction: the guest will execute it again
    assert g.vcpu.pending is None


def test_exit_consistent_with_nothing_pending_does_not_run_the_guest() -> None:
    g = Guest(MOV_EAX_RBX, {RBX: MMIO})
    g.fault(MMIO)
    assert isinstance(g.vcpu.run(Default(exit_consistent=True)), SuspendedExit)
    assert g.backend.runs == 0


def test_exit_consistent_finishes_a_read_modify_write_first() -> None:
    g = Guest(ADD_RBX_EAX, {RBX: MMIO, RAX: 1})
    g.fault(MMIO)
    g.vcpu.run()
    # The write still has to happen: the kernel asks for it before it can be consistent.
    ex = g.vcpu.run(FulfillMmio(MMIO, 4, False, 5, exit_consistent=True))
    assert ex == MmioExit(MMIO, 4, True, 6)
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO, 4, True, 6, exit_consistent=True)), SuspendedExit)
    assert g.regs.rip == CODE + 2
    assert g.backend.runs == 1


def test_exit_consistent_stops_rep_between_iterations() -> None:
    g = Guest(bytes.fromhex("f348a5"), {RSI: MMIO, RDI: DATA, RCX: 3})
    g.fault(MMIO)
    assert g.vcpu.run() == MmioExit(MMIO, 8, False, 0)
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO, 8, False, 0xAA, exit_consistent=True)), SuspendedExit)
    # A restartable state: one iteration done, RIP still at the instruction.
    assert (g.regs.gprs[RCX], g.regs.gprs[RSI], g.regs.gprs[RDI]) == (2, MMIO + 8, DATA + 8)
    assert g.regs.rip == CODE
    assert g.vm.memory.read_int(DATA, 8) == 0xAA
    # The guest re-executes the instruction and faults on the next element.
    g.fault(MMIO + 8)
    exits = g.run_to_halt()
    assert [e for e in exits if isinstance(e, MmioExit)] == [
        MmioExit(MMIO + 8, 8, False, 0),
        MmioExit(MMIO + 16, 8, False, 0),
    ]
    assert g.regs.gprs[RCX] == 0
    assert g.regs.rip == CODE + 3


# -- in-kernel devices and the REP budget -------------------------------------------------------


class CountingDevice:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0x1000 + offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_in_kernel_handler_is_served_without_an_exit() -> None:
    g = Guest(MOV_EAX_RBX, {RBX: KDEV + 0x10})
    g.vm.add_mmio_device(KDEV, 0x1000, CountingDevice())
    g.fault(KDEV + 0x10)
    assert isinstance(g.vcpu.run(), HltExit)
    assert g.regs.gprs[RAX] == 0x1010


def test_rep_work_per_run_is_bounded() -> None:
    dev = CountingDevice()
    g = Guest(bytes.fromhex("f3ab"), {RDI: KDEV, RCX: 100, RAX: 0x55})
    g.vm.add_mmio_device(KDEV, 0x1000, dev)
    g.vcpu.rep_budget = 64
    g.fault(KDEV)
    assert isinstance(g.vcpu.run(), HltExit)
    assert len(dev.writes) == 64
    assert (g.regs.gprs[RCX], g.regs.gprs[RDI], g.regs.rip) == (36, KDEV + 256, CODE)
    g.fault(KDEV + 256)
    assert isinstance(g.vcpu.run(), HltExit)
    assert len(dev.writes) == 100
    assert (g.regs.gprs[RCX], g.regs.rip) == (0, CODE + 2)


def test_rep_budget_counts_only_work_between_exits() -> None:
    """Each MMIO iteration already returns to userspace, so the budget never sends the guest back."""
    g = Guest(bytes.fromhex("f3ab"), {RDI: MMIO, RCX: 10, RAX: 0x55})
    g.vcpu.rep_budget = 3
    g.fault(MMIO)
    exits = g.run_to_halt()
    assert [e for e in exits if isinstance(e, MmioExit)] == [
        MmioExit(MMIO + 4 * n, 4, True, 0x55) for n in range(10)
    ]
    assert g.backend.runs == 2  # the fault, then HLT once the instruction completed
    assert (g.regs.gprs[RCX], g.regs.rip) == (0, CODE + 2)


# -- page crossings -----------------------------------------------------------------------------


def test_mmio_read_across_a_page_is_split_in_address_order() -> None:
    g = Guest(bytes.fromhex("488b83fd0f0000"), {RBX: MMIO})
    g.device.load(0xFFD, bytes(range(1, 9)))
    g.fault(MMIO + 0x1000)
    exits = g.run_to_halt()
    assert exits[:-1] == [
        MmioExit(MMIO + 0xFFD, 1, False, 0),
        MmioExit(MMIO + 0xFFE, 2, False, 0),
        MmioExit(MMIO + 0x1000, 4, False, 0),
        MmioExit(MMIO + 0x1004, 1, False, 0),
    ]
    assert g.regs.gprs[RAX] == 0x0807060504030201


def test_write_across_ram_then_mmio() -> None:
    g = Guest(bytes.fromhex("8982fe0f0000"), {RDX: VA, RAX: 0x11223344})
    window(g, [DATA, MMIO])
    g.fault(MMIO)
    exits = g.run_to_halt()
    assert exits[:-1] == [MmioExit(MMIO, 2, True, 0x1122)]
    assert g.vm.memory.read_int(DATA + 0xFFE, 2) == 0x3344


def test_read_across_mmio_then_ram() -> None:
    g = Guest(bytes.fromhex("8b82fe0f0000"), {RDX: VA})
    window(g, [MMIO, DATA])
    g.vm.memory.write_int(DATA, 2, 0xBEEF)
    g.device.load(0xFFE, b"\x34\x12")
    g.fault(MMIO + 0xFFE)
    exits = g.run_to_halt()
    assert exits[:-1] == [MmioExit(MMIO + 0xFFE, 2, False, 0)]
    assert g.regs.gprs[RAX] == 0xBEEF1234


def test_fault_on_the_second_page_leaves_the_first_untouched() -> None:
    g = Guest(bytes.fromhex("8982fe0f0000"), {RDX: VA, RAX: 0x11223344})
    window(g, [DATA, None])
    before = g.regs.copy()
    g.fault(MMIO)
    assert isinstance(g.vcpu.run(), HltExit)
    assert g.backend.injected == [(PF, 0x2, VA + 0x1000)]
    assert g.vm.memory.read_int(DATA + 0xFFE, 2) == 0
    assert pte(g, VA) & 0x60 == 0  # neither accessed nor dirty
    assert g.regs == before


# -- paging faults and A/D bits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "flags", "cpl", "error_code"),
    [
        ("8b02", None, 0, 0x0),  # read, not present
        ("8902", None, 0, 0x2),  # write, not present
        ("8902", P, 0, 0x3),  # supervisor write to a read-only page with CR0.WP
        ("8b02", P | RW, 3, 0x5),  # user read of a supervisor page
        ("8902", P | US, 3, 0x7),  # user write to a read-only user page
    ],
    ids=["read-np", "write-np", "write-ro", "user-read-supervisor", "user-write-ro"],
)
def test_page_fault_error_codes(code: str, flags: int | None, cpl: int, error_code: int) -> None:
    g = Guest(bytes.fromhex(code), {RDX: VA + 0x10})
    if flags is not None:
        window(g, [DATA], flags)
    g.backend.control.cpl = cpl
    if cpl == 3:
        # The code must be reachable from user mode: make the path to CODE user-accessible.
        g.pt.map(0, 0, 1 << 30, P | RW | US)
        g.write_tables()
    before = g.regs.copy()
    g.fault(MMIO)
    assert isinstance(g.vcpu.run(), HltExit)
    assert g.backend.injected == [(PF, error_code, VA + 0x10)]
    assert g.regs == before


def test_accessed_and_dirty_bits() -> None:
    g = Guest(bytes.fromhex("8b02") + bytes.fromhex("8902"), {RDX: VA})
    window(g, [MMIO])
    g.fault(MMIO)
    g.run_to_halt()
    assert pte(g, VA) & 0x60 == 0x20  # read: accessed only
    g.regs.rip = CODE + 2
    g.fault(MMIO)
    g.run_to_halt()
    assert pte(g, VA) & 0x60 == 0x60  # write: accessed and dirty


def test_fetch_from_nx_page_faults_with_id_bit() -> None:
    g = Guest(b"")
    window(g, [CODE], P | RW | NX)
    g.vm.memory.write(CODE, MOV_EAX_RBX)
    g.regs.rip = VA
    g.fault(MMIO)
    g.vcpu.run()
    assert g.backend.injected == [(PF, 0x11, VA)]


def test_instruction_fetched_across_a_page_boundary() -> None:
    g = Guest(b"", {RBX: MMIO})
    window(g, [CODE, CODE + 0x1000])
    g.vm.memory.write(CODE + 0xFFE, bytes.fromhex("488b03"))
    g.regs.rip = VA + 0xFFE
    g.fault(MMIO)
    exits = g.run_to_halt()
    assert exits[0] == MmioExit(MMIO, 8, False, 0)
    assert g.regs.rip == VA + 0x1001


def test_fetch_fault_on_the_second_code_page() -> None:
    g = Guest(b"", {RBX: MMIO})
    window(g, [CODE, None])
    g.vm.memory.write(CODE + 0xFFE, bytes.fromhex("488b03"))
    g.regs.rip = VA + 0xFFE
    g.fault(MMIO)
    g.vcpu.run()
    assert g.backend.injected == [(PF, 0x10, VA + 0x1000)]


# -- segmentation in 64-bit mode ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "gprs", "vector"),
    [
        ("8b03", {RBX: 0x0000_8000_0000_0000}, GP),
        ("8b03", {RBX: 0xFFFF_7FFF_FFFF_FFFF}, GP),
        ("8b041c", {RBX: 0x0000_8000_0000_0000, RSP: 0}, SS),
        ("8b4500", {RBP: 0x0000_8000_0000_0000}, SS),
        ("3e8b4500", {RBP: 0x0000_8000_0000_0000}, SS),  # a DS override is ignored in 64-bit mode
        ("488b03", {RBX: 0x0000_7FFF_FFFF_FFFC}, GP),  # last byte is non-canonical
    ],
    ids=["gp", "gp-high", "ss-rsp-base", "ss-rbp-base", "ss-rbp-ds-override", "gp-straddles"],
)
def test_non_canonical_addresses(code: str, gprs: dict[int, int], vector: int) -> None:
    g = Guest(bytes.fromhex(code), gprs)
    g.fault(MMIO)
    assert isinstance(g.vcpu.run(), HltExit)
    assert g.backend.injected == [(vector, 0, None)]
    assert g.regs.rip == CODE


# -- outcomes other than emulation --------------------------------------------------------------


def test_not_emulated_instruction_is_an_inst_emul_exit() -> None:
    g = Guest(bytes.fromhex("0f5803") + b"\x90" * 20, {RBX: MMIO})  # addps xmm0, [rbx]: vector arithmetic
    g.fault(MMIO)
    assert g.vcpu.run() == InstEmulExit(CODE, bytes.fromhex("0f5803"), InstEmulReason.NOT_EMULATED)


@pytest.mark.parametrize(
    "code",
    ["c4e279920c20", "62f27d49920c20", "62f27d41a20c20"],
    ids=["vex-gather", "evex-gather", "evex-scatter-vprime"],
)
def test_gather_scatter_is_an_inst_emul_exit(code: str) -> None:
    """A VSIB operand has one address per element: the kernel hands the instruction to userspace whole
    rather than computing a single (wrong) address from the vector index."""
    insn = bytes.fromhex(code)
    g = Guest(insn + b"\x90" * 20, {RAX: MMIO})
    g.fault(MMIO)
    assert g.vcpu.run() == InstEmulExit(CODE, insn, InstEmulReason.NOT_EMULATED)
    assert g.regs.rip == CODE


@pytest.mark.parametrize(
    ("code", "vector"),
    [("06", UD), ("f08b03", UD), ("66" * 14 + "8b03", GP)],
    ids=["invalid-in-64-bit", "lock-on-mov", "longer-than-15"],
)
def test_invalid_encodings_raise_guest_exceptions(code: str, vector: int) -> None:
    g = Guest(bytes.fromhex(code), {RBX: MMIO})
    g.fault(MMIO)
    assert isinstance(g.vcpu.run(), HltExit)
    assert g.backend.injected == [(vector, 0 if vector == GP else None, None)]
    assert g.regs.rip == CODE


def test_gpa_mismatch_before_a_write_to_ram() -> None:
    g = Guest(bytes.fromhex("8902"), {RDX: DATA, RAX: 5})
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == InstEmulExit(CODE, bytes.fromhex("8902"), InstEmulReason.GPA_MISMATCH)
    assert g.vm.memory.read_int(DATA, 4) == 0


def test_gpa_mismatch_after_a_ram_read() -> None:
    g = Guest(bytes.fromhex("8b02"), {RDX: DATA})
    g.vm.memory.write_int(DATA, 4, 9)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert isinstance(ex, InstEmulExit) and ex.reason is InstEmulReason.GPA_MISMATCH
    assert g.regs.gprs[RAX] == 0


def test_fetch_from_mmio_is_an_inst_emul_exit() -> None:
    g = Guest(b"")
    g.regs.rip = MMIO
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert isinstance(ex, InstEmulExit) and ex.reason is InstEmulReason.FETCH_FAILED


@pytest.mark.parametrize(
    ("event", "exit_type"),
    [(HltEvent(), HltExit), (ShutdownEvent(), ShutdownExit), (StoppedEvent(), SuspendedExit)],
    ids=["hlt", "shutdown", "stopped"],
)
def test_backend_events_become_exits(event: HltEvent | ShutdownEvent | StoppedEvent, exit_type: type) -> None:
    g = Guest(b"")
    g.backend.events.append(event)
    assert isinstance(g.vcpu.run(), exit_type)
