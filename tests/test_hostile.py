"""Regression tests for what the hostile-input review found (issue 9), named by its findings.

F1-F8 each have a test that failed before the fix; the emulator-CVE classes of the design notes that
were not covered yet follow, and then the engine's own exceptions raised back to back (issue 10),
compared with KVM where /dev/kvm runs.
"""

from __future__ import annotations

import pytest
from harness import CODE, DATA, MMIO, Guest
from kvm_util import SET_GATE, assemble, have_assembler, run_guest

from vmmio.abi import (
    AbiError,
    Discard,
    FulfillMmio,
    HltExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioExit,
    SuspendedExit,
    pack_exit,
    unpack_exit,
)
from vmmio.machine import TESTDEV_MMIO, Image, Machine
from vmmio.reference.kvm import kvm_usable
from vmmio.vmm.vcpu import _overlay
from vmmio.x86.decode import decode, decode_cached
from vmmio.x86.pagetables import PAGE_4K, RW, US, P
from vmmio.x86.state import Segment

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
ADD_RBX_EAX = bytes.fromhex("0103")
needs_as = pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy to build guests")
KVM_WHY_NOT = kvm_usable()
BACKENDS = [
    "unicorn",
    pytest.param("kvm", marks=pytest.mark.skipif(KVM_WHY_NOT is not None, reason=f"KVM: {KVM_WHY_NOT}")),
]


# -- F1: exit_consistent is a request for the whole instruction ------------------------------------------


def test_f1_exit_consistent_survives_a_later_fulfillment_without_it() -> None:
    g = Guest(ADD_RBX_EAX, {RBX: MMIO, RAX: 1})
    g.fault(MMIO)
    assert g.vcpu.run() == MmioExit(MMIO, 4, False, 0)
    assert g.vcpu.run(FulfillMmio(MMIO, 4, False, 5, exit_consistent=True)) == MmioExit(MMIO, 4, True, 6)
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO, 4, True, 6)), SuspendedExit)  # not HltExit
    assert g.regs.rip == CODE + 2 and g.backend.runs == 1


def test_f1_exit_consistent_between_rep_movs_iterations() -> None:
    g = Guest(bytes.fromhex("f3a4"), {RSI: MMIO, RDI: MMIO + 0x100, RCX: 3})
    g.fault(MMIO)
    assert g.vcpu.run() == MmioExit(MMIO, 1, False, 0)
    ex = g.vcpu.run(FulfillMmio(MMIO, 1, False, 0x5A, exit_consistent=True))
    assert ex == MmioExit(MMIO + 0x100, 1, True, 0x5A)
    assert isinstance(g.vcpu.run(FulfillMmio(MMIO + 0x100, 1, True, 0x5A)), SuspendedExit)
    assert (g.regs.gprs[RCX], g.regs.rip) == (2, CODE)  # one iteration done, restartable


# -- F2: Discard leaves no architectural effect -----------------------------------------------------------


def test_f2_discard_after_the_ram_half_of_a_page_crossing_write() -> None:
    va = 0x8000_0000  # two 4 KiB pages: RAM at DATA, then the device
    g = Guest(bytes.fromhex("8982fe0f0000"), {RDX: va, RAX: 0x11223344})
    g.pt.map(va, DATA, PAGE_4K, P | RW)
    g.pt.map(va + 0x1000, MMIO, PAGE_4K, P | RW)
    g.write_tables()
    g.vm.memory.write_int(DATA + 0xFFE, 2, 0xBEEF)
    g.fault(MMIO)
    assert g.vcpu.run() == MmioExit(MMIO, 2, True, 0x1122)
    assert isinstance(g.vcpu.run(Discard()), HltExit)
    assert g.vm.memory.read_int(DATA + 0xFFE, 2) == 0xBEEF  # the RAM half never landed
    assert g.regs.rip == CODE


def test_f2_deferred_ram_writes_read_back_within_the_instruction() -> None:
    """What an instruction has written but not committed is what its own later reads see."""
    g = Guest(b"")
    region = g.vm.memory.ram[0]
    region.view[DATA : DATA + 4] = b"\x01\x02\x03\x04"
    deferred = [(region, DATA + 1, b"\xaa\xbb", 0), (region, DATA + 3, b"\xcc\xdd", 0)]
    assert _overlay(deferred, region, DATA, 4) == b"\x01\xaa\xbb\xcc"
    assert _overlay(deferred, region, DATA + 4, 1) == b"\xdd"
    assert bytes(region.view[DATA : DATA + 4]) == b"\x01\x02\x03\x04"  # RAM itself unchanged


# -- F4: code written by the kernel is the code that runs --------------------------------------------------

# call f; copy 6 bytes of new code from the test device over f with `rep movsb` (each element emulated by
# the kernel); call f again; exit with its eax. f returns 1; the new code returns 7.
SMC = bytes.fromhex(
    "e820000000" + "48be000001d000000000" + "488d3d0f000000" + "b906000000" + "f3a4" + "e803000000" + "e6f4f4"
    "b801000000c3"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_f4_self_modifying_code_through_the_emulator(backend: str) -> None:
    def new_code(m: Machine) -> None:
        m.testdev.data[:6] = bytes.fromhex("b807000000c3")  # mov eax, 7; ret

    traced = run_guest(SMC, backend, new_code)
    assert traced.result.status == 7, traced.result


# -- F5, F8: fetches that run out of RAM ---------------------------------------------------------------


def _end_of_ram(code: bytes) -> tuple[Machine, int]:
    m = Machine(uart_sink=lambda _: None)
    m.load(b"\xf4")
    end = m.layout.ram_size
    m.vm.memory.write(end - len(code), code)
    return m, end


def test_f5_instruction_straddling_the_end_of_ram() -> None:
    m, end = _end_of_ram(b"\x90" * 15 + b"\xb8")  # nops, then mov eax, imm32 cut after its opcode
    ex = m.vcpu(Image(end - 16, 64)).run()
    assert ex == InstEmulExit(end - 1, b"\xb8", InstEmulReason.FETCH_FAILED)  # F8: the byte that is RAM


def test_f5_running_off_the_end_of_ram() -> None:
    m, end = _end_of_ram(b"\x90\x90")
    ex = m.vcpu(Image(end - 2, 64)).run()
    assert ex == InstEmulExit(end, b"", InstEmulReason.FETCH_FAILED)


def test_f8_decode_cached_takes_what_decode_takes() -> None:
    code = bytearray(b"\x8b\x43\x08")
    assert decode_cached(code, 64) == decode(bytes(code), 64)
    assert decode_cached(memoryview(b"\x90"), 64) == decode(b"\x90", 64)


class LyingBytes(bytes):
    def __len__(self) -> int:
        return 48


def test_f8_a_bytes_subclass_with_a_lying_length_is_an_abi_error() -> None:
    raw = pack_exit(MmioExit(0x1000, 4, False, 0))
    with pytest.raises(AbiError):
        unpack_exit(LyingBytes(raw[:20]))
    assert unpack_exit(LyingBytes(raw)) == MmioExit(0x1000, 4, False, 0)


# -- emulator-CVE classes ---------------------------------------------------------------------------------


def test_rep_with_a_huge_count_across_non_contiguous_pages() -> None:
    """RCX near 2^64 and pages scattered in guest-physical space: bounded work per run, right order."""
    va = 0x9000_0000
    g = Guest(bytes.fromhex("f3a4"), {RSI: va + 0xFFE, RDI: DATA, RCX: (1 << 64) - 1})
    g.pt.map(va, MMIO + 0x1000, PAGE_4K, P | RW)
    g.pt.map(va + 0x1000, MMIO, PAGE_4K, P | RW)  # the next linear page is the lower device page
    g.write_tables()
    g.fault(MMIO + 0x1FFE)
    reads = []
    ex = g.vcpu.run()
    for _ in range(6):
        assert isinstance(ex, MmioExit)
        reads.append(ex.gpa)
        ex = g.vcpu.run(ex.fulfill(0))
        if not isinstance(ex, MmioExit):
            g.fault(MMIO + (reads[-1] + 1 - MMIO) % 0x2000)
            ex = g.vcpu.run()
    assert reads == [MMIO + 0x1FFE, MMIO + 0x1FFF, MMIO, MMIO + 1, MMIO + 2, MMIO + 3]
    assert g.regs.gprs[RCX] >= (1 << 64) - 1 - 6  # a restartable count, never a runaway loop


def test_instruction_fetch_crossing_into_mmio() -> None:
    g = Guest(b"")
    g.pt.map(0x7000_0000, DATA, PAGE_4K, P | RW)
    g.pt.map(0x7000_1000, MMIO, PAGE_4K, P | RW)
    g.write_tables()
    g.vm.memory.write(DATA + 0xFFE, b"\x8b\x83")  # mov eax, [rbx+disp32]: the displacement is in MMIO
    g.regs.rip = 0x7000_0FFE
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert ex == InstEmulExit(0x7000_0FFE, b"\x8b\x83", InstEmulReason.FETCH_FAILED)


def test_fifteen_byte_limit_with_prefixes_is_gp() -> None:
    g = Guest(b"\x3e" * 14 + ADD_RBX_EAX, {RBX: MMIO})
    g.fault(MMIO)
    g.vcpu.run()
    assert g.backend.injected == [(13, 0, None)]
    assert g.device.trace == []


# -- the engine's own exceptions, back to back ------------------------------------------------------------

# The guest installs handlers for #UD, #GP and #PF that count and return past the faulting instruction
# (both are 3 bytes), raises one of them N times in a row, and exits with (count - N) as its status.
_FAULTS = {"ud": "ud2\nnop", "gp": "mov rax, [rbx]", "pf": "mov rax, [rsi]"}
_CHAIN = (
    """
    lea rdi, [rip + idt]
    lea rax, [rip + handler_ec]
    mov ecx, 13
    call set_gate
    mov ecx, 14
    call set_gate
    lea rax, [rip + handler]
    mov ecx, 6
    call set_gate
    mov [rip + idtr + 2], rdi
    lidt [rip + idtr]
    mov rbx, 0x8000000000000000
    mov rsi, 0x10000000000
    mov ecx, {n}
1:  {fault}
    dec ecx
    jnz 1b
    mov eax, [rip + count]
    sub eax, {n}
    out 0xf4, al
    hlt
"""
    + SET_GATE
    + """handler_ec:
    add rsp, 8
handler:
    add qword ptr [rsp], 3
    inc dword ptr [rip + count]
    iretq
.balign 16
idtr: .word 4095
    .quad 0
count: .long 0
.balign 16
idt: .fill 4096, 1, 0
"""
)


@needs_as
@pytest.mark.parametrize("count", [2, 3, 100])
@pytest.mark.parametrize("fault", sorted(_FAULTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_raised_exceptions_back_to_back(backend: str, fault: str, count: int) -> None:
    code = assemble(_CHAIN.format(n=count, fault=_FAULTS[fault]))
    traced = run_guest(code, backend)
    assert (traced.result.reason, traced.result.status) == ("exit", 0), traced.result


def test_testdev_is_where_the_smc_guest_reads() -> None:
    assert SMC[5:15] == bytes.fromhex("48be") + TESTDEV_MMIO.to_bytes(8, "little")


# -- F3: I/O permission before any access -----------------------------------------------------------------

TSS = 0x30_0000  # in RAM; the I/O bitmap right after the 0x68-byte TSS


def _io_guest(code: str, cpl: int, iopl: int, bitmap: bytes | None, gprs: dict[int, int]) -> Guest:
    g = Guest(bytes.fromhex(code), gprs, rflags=0x2 | iopl << 12)
    g.backend.control.cpl = cpl
    limit = 0x67 if bitmap is None else 0x68 + len(bitmap) - 1
    g.backend.control.tr = Segment(selector=0x28, base=TSS, limit=limit, type=11, s=False)
    g.vm.memory.write_int(TSS + 0x66, 2, 0x68)
    if bitmap is not None:
        g.vm.memory.write(TSS + 0x68, bitmap)
    return g


@pytest.mark.parametrize(
    ("name", "code", "cpl", "iopl", "bitmap", "allowed"),
    [
        ("outsb from MMIO, CPL 3, IOPL 0, no bitmap", "6e", 3, 0, None, False),
        ("outsb from MMIO, CPL 3, IOPL 3", "6e", 3, 3, None, True),
        ("outsb from MMIO, CPL 0, IOPL 0", "6e", 0, 0, None, True),
        ("outsb, CPL 3, bitmap clears port 0x70", "6e", 3, 0, bytes(0x0E) + b"\xfe" + b"\xff", True),
        ("outsb, CPL 3, bitmap sets port 0x70", "6e", 3, 0, bytes(0x0E) + b"\x01" + b"\xff", False),
        ("outsw, CPL 3, port 0x71 denied", "666f", 3, 0, bytes(0x0E) + b"\x02" + b"\xff", False),
        ("outsw, CPL 3, ports 0x77-0x78 across a byte", "666f", 3, 0, bytes(0x0E) + b"\x7f\xfe\xff", True),
        ("insb into MMIO, CPL 3, no bitmap", "6c", 3, 0, None, False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_f3_io_permission_is_checked_before_any_access(
    name: str, code: str, cpl: int, iopl: int, bitmap: bytes | None, allowed: bool
) -> None:
    port = 0x77 if "0x77" in name else 0x70
    g = _io_guest(code, cpl, iopl, bitmap, {RSI: MMIO, RDI: MMIO, RDX: port})
    if cpl == 3:  # user pages, so that an allowed access gets as far as the device
        for n in range(4):
            g.pt.map(n << 30, n << 30, 1 << 30, P | RW | US)
        g.write_tables()
    g.fault(MMIO) if code in ("6e", "666f") else g.io(port, 1, True)
    ex = g.vcpu.run()
    if allowed:
        assert isinstance(ex, MmioExit | InoutExit), ex
        assert g.backend.injected == []
    else:
        assert isinstance(ex, HltExit)  # nothing for userspace: #GP(0) went to the guest
        assert g.backend.injected == [(13, 0, None)]
        assert g.regs.rip == CODE and g.device.trace == []
