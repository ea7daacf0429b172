"""The native exit path (vmmio._fastpath) gives exactly what the Python path gives.

Every guest here runs twice on Unicorn, once with the native path and once without it (the backend's
unmapped-memory hook in Python, every exit through `Vcpu`), and everything is compared: the exits in
order with their answers, the registers, RAM, the device. The guests repeat MOVs to and from the test
device (where the native path takes over) and change, between repetitions, what a plan depends on: the
address registers, the target (RAM, the device, another page), the instruction's own bytes, its page
tables (with INVLPG), the control state (CR3 with other tables, FS's base), RFLAGS.AC; the host adds a
region, stops the run, asks for a consistent state, discards an instruction. The native path must have
made most of the exits where it applies (its `hits`), and none where the vCPU has interrupts.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kvm_util import assemble, have_assembler

from vmmio.abi import Default, Discard, InoutExit, MmioExit, SuspendedExit, VmEntry, VmExit
from vmmio.backends.unicorn import UnicornBackend
from vmmio.machine import TESTDEV_MMIO, Layout, Machine, Mapping, RunControl
from vmmio.vmm.vcpu import Vcpu
from vmmio.x86.pagetables import PageTables

try:
    import vmmio._fastpath as _native
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _native = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy"),
    pytest.mark.skipif(_native is None, reason="the native exit path is not built"),
    pytest.mark.skipif(
        os.environ.get("VMMIO_FASTPATH") == "0", reason="VMMIO_FASTPATH=0: the Python path only"
    ),
]

DEV = TESTDEV_MMIO
RAM = 0x40_0000  # a RAM page the guests also use
WINDOW = 0x80_0000_0000  # a 4 KiB-mapped linear window (Layout mapping), first onto the device
LAYOUT = Layout(mappings=(Mapping(0, 0, 4 << 30), Mapping(WINDOW, DEV, 0x1000)))
PTE = PageTables(LAYOUT.page_tables)
for _m in LAYOUT.mappings:
    PTE.map_range(_m.linear, _m.physical, _m.size)
WINDOW_PTE = PTE.entry_address(WINDOW, 1)  # where the window's page-table entry is


@dataclass
class Outcome:
    exits: list[tuple[VmExit, VmEntry | None]]
    regs: tuple[int, ...]
    ram: str
    device: bytes
    hits: int


Host = Callable[[int, Machine, Vcpu, VmExit], VmEntry | None]  # may replace the answer to exit n


def run(source: str, native: bool, host: Host | None = None, layout: Layout = LAYOUT) -> Outcome:
    m = Machine(layout)
    vcpu = m.vcpu(m.load(assemble(source)))
    assert isinstance(vcpu, Vcpu)
    vcpu.fast = native
    exits: list[tuple[VmExit, VmEntry | None]] = []
    entry: VmEntry = Default()
    for n in range(200_000):
        ex = vcpu.run(entry)
        answer: VmEntry | None
        if isinstance(ex, MmioExit | InoutExit):
            if isinstance(ex, InoutExit) and ex.port == 0xF4:  # the debug exit: the guest is done
                exits.append((ex, None))
                break
            answer = m.service(ex)
        elif isinstance(ex, SuspendedExit):
            answer = Default()
        else:
            exits.append((ex, None))
            break
        if host is not None:
            answer = host(n, m, vcpu, ex) or answer
        exits.append((ex, answer))
        entry = answer
    else:
        raise AssertionError("the guest did not finish")
    regs = vcpu.regs
    backend = vcpu.backend
    assert isinstance(backend, UnicornBackend) and backend.fastpath is not None
    ram = hashlib.sha256(m.vm.memory.read(0, 8 << 20)).hexdigest()
    return Outcome(
        exits, (*regs.gprs, regs.rip, regs.rflags), ram, bytes(m.testdev.data), backend.fastpath.hits
    )


def both(source: str, host: Host | None = None, layout: Layout = LAYOUT) -> Outcome:
    native, python = run(source, True, host, layout), run(source, False, host, layout)
    assert native.exits == python.exits
    assert (native.regs, native.ram, native.device) == (python.regs, python.ram, python.device)
    assert python.hits == 0
    return native


DONE = "xor eax, eax\n out 0xf4, al\n hlt"

MOVES = f"""
    mov r15, 40
    mov rbx, {DEV}
    mov rdi, {RAM}
1:  mov rax, r15
    neg rax
    mov [rbx + 24], rax               # negative values for the sign-extending loads
    mov eax, [rbx]                    # loads of every width and extension
    mov [rbx + 8], eax                # a store of a register that changes
    mov dword ptr [rbx + 12], 0x12345678
    mov byte ptr [rbx + 13], -2
    mov qword ptr [rbx + 16], -3      # an immediate sign-extended to 64 bits
    movzx ecx, byte ptr [rbx + 1]
    movzx edx, word ptr [rbx + 2]
    movsx rsi, byte ptr [rbx + 24]
    movsx r8w, word ptr [rbx + 26]
    movsxd r9, dword ptr [rbx + 28]
    mov ah, [rbx + 3]                 # a high byte, and its store
    mov [rbx + 32], ah
    mov bpl, [rbx + 4]                # REX: BPL, not CH
    mov [rbx + 33], bpl
    mov r10w, [rbx + 6]
    mov r11b, [rbx + 7]
    mov [rbx + r15 * 4 + 0x100], r15d # base + index * scale
    movabs eax, [{DEV + 0x40}]        # moffs
    movabs [{DEV + 0x44}], eax
    lea r12, [rbx + r15 * 8]
    mov r13, [r12]                    # the address moves each time
    test r15b, 1
    cmovnz r14, rdi
    cmovz r14, rbx
    mov eax, [r14 + 0x10]             # RAM and the device in turn: the same instruction, two targets
    mov [rdi + r15 * 8], eax
    dec r15
    jnz 1b
    {DONE}
"""


def test_moves_of_every_shape() -> None:
    native = both(MOVES)
    assert native.hits > 400


def test_page_tables_change_under_the_plan() -> None:
    """The window's PTE moves between two device pages and RAM, with INVLPG; then CR3 changes to a copy of
    the tables (the control state changes: every plan is dropped) and back."""
    native = both(
        f"""
        mov r15, 40
        mov rbx, {WINDOW}
        mov rsi, {WINDOW_PTE}
    1:  mov eax, [rbx]
        mov [rbx + 4], eax
        mov rax, r15
        shr eax, 2
        and eax, 3
        mov rcx, {DEV | 3}
        mov rdx, {(DEV + 0x1000) | 3}
        cmp eax, 1
        cmove rcx, rdx
        mov rdx, {RAM | 3}
        cmp eax, 2
        cmove rcx, rdx
        mov [rsi], rcx
        invlpg [rbx]
        dec r15
        jnz 1b
        mov r15, 6
    2:  mov rax, cr3
        mov cr3, rax
        mov eax, [rbx]
        dec r15
        jnz 2b
        {DONE}
        """
    )
    assert native.hits > 10


def test_page_tables_change_without_invlpg() -> None:
    """The window's PTE moves between the device's two pages without INVLPG: the engine may go on using
    the translation it cached, the kernel walks the tables; both paths must see the same."""
    native = both(
        f"""
        mov r15, 40
        mov rbx, {WINDOW}
        mov rsi, {WINDOW_PTE}
    1:  mov eax, [rbx]
        mov rax, r15
        shr eax, 2
        and eax, 1
        shl eax, 12
        mov rdx, {DEV | 3}
        add rax, rdx
        mov [rsi], rax
        test r15b, 8
        jz 2f
        invlpg [rbx]
    2:  dec r15
        jnz 1b
        {DONE}
        """
    )
    assert native.hits > 5


def test_code_that_changes_itself() -> None:
    """The displacement of the load is rewritten every eighth run: its bytes in RAM are checked."""
    native = both(
        f"""
        mov r15, 40
        mov rbx, {DEV}
        lea rsi, [rip + 2f]
    1:  mov eax, r15d
        shr eax, 3
        and eax, 3
        shl eax, 3
        mov [rsi + 2], al                 # the disp8 of the load below: 8b 43 xx
    2:  .byte 0x8b, 0x43, 0x00
        dec r15
        jnz 1b
        {DONE}
        """
    )
    assert native.hits > 15


def test_fs_base_and_rflags_ac() -> None:
    """WRMSR to FS's base changes the control state; RFLAGS.AC is part of each planned access."""
    native = both(
        f"""
        mov r15, 40
        xor ebx, ebx
    1:  mov ecx, 0xc0000100
        mov eax, {DEV}
        mov edx, 0
        test r15b, 4
        jz 3f
        add eax, 0x100
    3:  wrmsr
        mov eax, fs:[rbx]
        pushfq
        and qword ptr [rsp], ~(1 << 18)
        test r15b, 8
        jz 4f
        or qword ptr [rsp], 1 << 18
    4:  popfq
        movabs eax, [{DEV + 8}]
        dec r15
        jnz 1b
        {DONE}
        """
    )
    assert native.hits > 10


def test_a_region_added_in_the_kernel_takes_the_address() -> None:
    """An in-kernel device added at exit 20 where the guest was reading unclaimed space: the reads are
    served in the kernel from then on, not exits, whatever the native path learned."""
    spot = 0xD003_0000

    class Counter:
        def __init__(self) -> None:
            self.reads = 0

        def read(self, offset: int, size: int) -> int:
            self.reads += 1
            return 0x5A

        def write(self, offset: int, size: int, value: int) -> None:
            pass

    counters: list[Counter] = []

    def host(n: int, m: Machine, vcpu: Vcpu, ex: VmExit) -> VmEntry | None:
        if n == 20:
            counters.append(Counter())
            m.vm.add_mmio_device(spot, 0x1000, counters[-1])
        return None

    source = f"""
        mov r15, 50
        mov rbx, {spot}
    1:  mov eax, [rbx]
        add r14d, eax
        dec r15
        jnz 1b
        {DONE}
    """
    native, python = run(source, True, host), run(source, False, host)
    assert native.exits == python.exits and native.regs == python.regs
    assert len(native.exits) == 22 and counters[0].reads == counters[1].reads == 29


def test_consistent_stop_discard_and_registers_set_between_exits() -> None:
    def host(n: int, m: Machine, vcpu: Vcpu, ex: VmExit) -> VmEntry | None:
        if n == 10 and isinstance(ex, MmioExit) and not ex.is_write:
            return ex.fulfill(0x77, exit_consistent=True)
        if n == 11:  # the SuspendedExit: the state is consistent; move the pointer
            regs = vcpu.regs
            regs.rbx += 0x40
            vcpu.set_regs(regs)
        if n == 20 and isinstance(ex, MmioExit):
            return Discard()  # the instruction runs again
        return None

    native = both(
        f"""
        mov r15, 30
        mov rbx, {DEV}
    1:  mov eax, [rbx]
        mov [rbx + 4], eax
        inc dword ptr [{RAM}]
        dec r15
        jnz 1b
        {DONE}
        """,
        host,
    )
    assert native.hits > 20


def test_a_stop_from_another_thread_ends_a_polling_guest() -> None:
    source = f"mov rbx, {DEV}\n1: mov eax, [rbx]\n jmp 1b\n"
    for native in (True, False):
        m = Machine()
        vcpu = m.vcpu(m.load(assemble(source)))
        assert isinstance(vcpu, Vcpu)
        vcpu.fast = native
        with RunControl(vcpu, timeout=0.3) as control:
            result = m.run(vcpu, control=control)
        assert result.reason == "timeout"
        backend = vcpu.backend
        assert isinstance(backend, UnicornBackend) and backend.fastpath is not None
        assert (backend.fastpath.hits > 1000) == native


def test_not_with_interrupts() -> None:
    """A vCPU with an interrupt controller looks for interrupts between exits: the Python path."""
    from vmmio.pc import PcMachine

    m = PcMachine()
    vcpu = m.vcpu(
        m.load(assemble(f"mov rbx, {DEV}\n mov r15, 20\n1: mov eax, [rbx]\n dec r15\n jnz 1b\n{DONE}"))
    )
    assert isinstance(vcpu, Vcpu) and m.vm.interrupts is not None
    result = m.run(vcpu)
    assert result.reason == "exit"
    backend = vcpu.backend
    assert isinstance(backend, UnicornBackend) and backend.fastpath is not None
    assert backend.fastpath.hits == 0


def test_threads_do_not_share_it() -> None:
    """Two vCPUs of two machines on two threads: each has its own native state."""
    results: list[Outcome] = []

    def work() -> None:
        results.append(run(MOVES, True))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].exits == results[1].exits and results[0].hits > 400


def test_rflags_ac_at_cpl3() -> None:
    """At CPL 3 with CR0.AM, a misaligned MMIO load exits while RFLAGS.AC is clear and raises #AC once the
    guest sets it (popfq): the planned access holds for one value of AC only, on both paths. No IDT: the
    #AC ends in a shutdown, at the same point both ways."""
    from vmmio.abi import ShutdownExit
    from vmmio.vmm.vm import Vm
    from vmmio.x86.pagetables import RW, US, P
    from vmmio.x86.state import CR0_AM, CpuState, Regs, flat_segment, long_mode_control

    code_at, tables = 0x1000, 0x10_0000
    source = f"""
        mov r15, 12
        mov rbx, {DEV}
    1:  mov eax, [rbx + 1]
        pushfq
        and qword ptr [rsp], ~(1 << 18)
        cmp r15, 4
        ja 2f
        or qword ptr [rsp], 1 << 18
    2:  popfq
        dec r15
        jnz 1b
        hlt
    """

    def go(native: bool) -> tuple[list[VmExit], int]:
        vm = Vm(4 << 20)
        pt = PageTables(tables)
        pt.map_range(0, 0, 4 << 20, P | RW | US)
        pt.map(DEV, DEV, 0x1000, P | RW | US)
        for addr, pte in pt.entries.items():
            vm.memory.write_int(addr, 8, pte)
        vm.memory.write(code_at, assemble(source))
        ctl = long_mode_control(pt.root)
        ctl.cr0 |= CR0_AM
        ctl.cpl = 3
        ctl.segs = [flat_segment(0x2B, dpl=3) for _ in range(6)]
        ctl.segs[1] = flat_segment(0x23, code=True, bits=64, dpl=3)
        regs = Regs(rip=code_at)
        regs.rsp = 0x3F_F000
        vcpu = vm.create_vcpu("unicorn", state=CpuState(regs, ctl))
        vcpu.fast = native
        exits: list[VmExit] = []
        entry: VmEntry = Default()
        while True:
            ex = vcpu.run(entry)
            exits.append(ex)
            if not isinstance(ex, MmioExit):
                break
            entry = ex.fulfill(0x11223344)
        backend = vcpu.backend
        assert isinstance(backend, UnicornBackend) and backend.fastpath is not None
        return exits, backend.fastpath.hits

    (native, hits), (python, _) = go(True), go(False)
    assert native == python
    assert len(native) == 10 and isinstance(native[-1], ShutdownExit)  # nine loads, then #AC
    assert hits >= 5
