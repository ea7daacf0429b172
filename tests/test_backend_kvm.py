"""The KVM reference vCPU: Linux's emulator behind vmmio's boundary, and the trace cross-check.

Guests are assembled at test time (GNU as + objcopy, 64-bit, position-independent) and loaded with
`Machine.load` (flat image at 0x100000; the machine writes the GDT and identity page tables). The same
guest runs on both backends (`unicorn`: vmmio's kernel over Unicorn; `kvm`: Linux's emulator) and the
device traces must match access for access, except where the test says why they legitimately differ.

Print the benchmark figure with: pytest tests/test_backend_kvm.py -k exits_per_second -s
"""

from __future__ import annotations

import os
import platform

import pytest
from kvm_util import (
    READ_LOOP,
    Traced,
    access,
    assemble,
    deadline,
    have_assembler,
    mmio_exits_per_second,
    run_guest,
)

from vmmio.abi import (
    Default,
    Device,
    Discard,
    EntryError,
    FulfillInout,
    FulfillMmio,
    HltExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioExit,
    ShutdownExit,
    SuspendedExit,
    VmExit,
)
from vmmio.devices import MemoryDevice
from vmmio.machine import (
    GDT_BASE,
    LOAD_ADDR,
    TESTDEV_MMIO,
    UART_MMIO,
    Machine,
)
from vmmio.memory import RangeMap
from vmmio.reference.kvm import (
    CPUID1_ECX_TSC_DEADLINE,
    HIDDEN_CPUID,
    KVM_CPUID_FEATURES,
    KvmEntryError,
    KvmError,
    KvmIo,
    KvmMmio,
    KvmVcpu,
    cmpxchg16b_runs,
    kvm_usable,
)
from vmmio.x86.cpuid import EAX, ECX
from vmmio.x86.regs import Gpr

if platform.machine() != "x86_64":
    pytest.skip("KVM reference backend is x86-64 only", allow_module_level=True)
_WHY_NOT = kvm_usable()
if _WHY_NOT is not None:
    pytest.skip(f"/dev/kvm not usable: {_WHY_NOT}", allow_module_level=True)

needs_as = pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy to build guests")

DEV = TESTDEV_MMIO
RAM_BUF = 0x20_0000
FILL = bytes(range(1, 65))  # test device contents at the start of each run

HELLO = r"""
    lea rsi, [rip + msg]
    mov ebx, 0xD0000000
next:
    lodsb
    test al, al
    jz done
wait:
    test byte ptr [rbx + 5], 0x20    # LSR.THRE
    jz wait
    mov [rbx], al                    # THR
    jmp next
done:
    xor eax, eax
    out 0xf4, al                     # debug exit, status 0
msg: .asciz "Hello, world!\n"
"""

# The small guests both backends must agree on: (name, source). Every one ends in HLT or a debug exit.
GUESTS = [
    ("mov_read_write", "mov ebx, 0xD0010000\n mov eax, [rbx]\n mov dword ptr [rbx + 8], 0x12345678\n hlt"),
    ("mov_sizes", "mov ebx, 0xD0010000\n mov al, [rbx + 1]\n mov cx, [rbx + 2]\n mov rdx, [rbx + 8]\n hlt"),
    ("add_rmw", "mov ebx, 0xD0010000\n mov eax, 0x1000\n add [rbx], eax\n hlt"),
    ("rep_movsd_mmio_to_ram", "mov esi, 0xD0010000\n mov edi, 0x200000\n mov ecx, 4\n rep movsd\n hlt"),
    ("rep_movsq_mmio_to_mmio", "mov esi, 0xD0010000\n mov edi, 0xD0010100\n mov ecx, 2\n rep movsq\n hlt"),
    ("rep_stosd", "mov edi, 0xD0010100\n mov eax, 0xCAFE\n mov ecx, 3\n rep stosd\n hlt"),
    ("std_rep_movsd", "std\n mov esi, 0xD0010010\n mov edi, 0x200010\n mov ecx, 3\n rep movsd\n cld\n hlt"),
    ("repe_cmpsb", "mov esi, 0xD0010000\n mov edi, 0x200000\n mov ecx, 3\n repe cmpsb\n hlt"),
    ("lodsq", "mov esi, 0xD0010008\n lodsq\n hlt"),
    ("page_crossing_qword", "mov ebx, 0xD0010000\n mov rax, [rbx + 0xffd]\n mov [rbx + 0xffa], rax\n hlt"),
    ("page_crossing_rep_stosd", "mov edi, 0xD0010ffe\n mov ecx, 2\n mov eax, 0x11223344\n rep stosd\n hlt"),
    ("bt_and_or", "mov ebx, 0xD0010000\n bt dword ptr [rbx], 35\n lock or dword ptr [rbx + 4], 0x80\n hlt"),
    ("push_pop_mem", "mov ebx, 0xD0010000\n push qword ptr [rbx]\n pop qword ptr [rbx + 16]\n hlt"),
    ("out_in", "mov dx, 0x3f8\n mov al, 0x41\n out dx, al\n add dx, 5\n in al, dx\n hlt"),
    ("rep_outsb", 'lea rsi, [rip + s]\n mov dx, 0x3f8\n mov ecx, 3\n rep outsb\n hlt\n s: .ascii "abc"'),
    ("rep_insb_to_ram", "mov dx, 0x3fd\n mov edi, 0x200000\n mov ecx, 5\n rep insb\n hlt"),
    ("unclaimed_mmio", "mov eax, 0x40000000\n mov eax, [rax]\n hlt"),
    ("hello", HELLO),
    ("triple_fault", "ud2"),
    ("code_in_mmio", "mov eax, 0xD0010000\n jmp rax"),
]


def fill_testdev(m: Machine) -> None:
    m.testdev.data[: len(FILL)] = FILL


def run_src(src: str, backend: str = "kvm") -> Traced:
    return run_guest(assemble(src), backend, fill_testdev)


def kvm_vcpu(m: Machine, code: bytes, *, record_raw: bool = False) -> KvmVcpu:
    """A KvmVcpu built by hand (for the options Machine.vcpu does not pass)."""
    image = m.load(code)
    fill_testdev(m)
    return KvmVcpu(m.vm.memory, m.entry_state(image), record_raw=record_raw)


@pytest.fixture
def machine() -> Machine:
    return Machine(uart_sink=lambda _: None)


def mmio(ex: VmExit) -> MmioExit:
    assert isinstance(ex, MmioExit), ex
    return ex


def inout(ex: VmExit) -> InoutExit:
    assert isinstance(ex, InoutExit), ex
    return ex


# --- setup and state ------------------------------------------------------------------------------------


def test_initial_state_is_what_the_machine_asked_for(machine: Machine) -> None:
    image = machine.load(b"\xf4")
    state = machine.entry_state(image)
    regs, ctl = state.regs, state.control
    ctl.gdtr, ctl.idtr = (GDT_BASE, 31), (0x3000, 0xFFF)
    with KvmVcpu(machine.vm.memory, state) as vcpu:
        got = vcpu.get_regs()
        assert (got.gprs, got.rip, got.rflags) == (regs.gprs, LOAD_ADDR, regs.rflags)
        s = vcpu.get_sregs()
        assert (s.control.cr0, s.control.cr3, s.control.cr4) == (ctl.cr0, ctl.cr3, ctl.cr4)
        assert s.control.efer == ctl.efer
        assert s.control.segs == ctl.segs
        assert s.control.code_size == 64 and s.control.cpl == 0
        assert (s.control.gdtr, s.control.idtr) == ((GDT_BASE, 31), (0x3000, 0xFFF))
        assert vcpu.translate(0xD000_0123) == 0xD000_0123  # the machine's identity map, walked by KVM


@needs_as
def test_ram_is_shared_not_copied(machine: Machine) -> None:
    """The guest reads what the host wrote after the vCPU was built, and the host sees guest stores."""
    code = assemble("mov rax, [0x200000]\n inc rax\n mov [0x200008], rax\n hlt")
    vcpu = kvm_vcpu(machine, code)
    machine.vm.memory.write_int(RAM_BUF, 8, 41)
    assert isinstance(vcpu.run(), HltExit)
    assert machine.vm.memory.read_int(RAM_BUF + 8, 8) == 42
    vcpu.close()


@needs_as
def test_set_regs_and_control_between_exits(machine: Machine) -> None:
    vcpu = kvm_vcpu(machine, assemble("mov eax, 1\n hlt\n mov eax, [rbx]\n hlt"))
    regs = vcpu.get_regs()
    regs.rip, regs.gprs[Gpr.RBX] = LOAD_ADDR + 6, DEV + 0x10  # skip to the load, from another address
    vcpu.set_regs(regs)
    ctl = vcpu.get_control()
    vcpu.set_control(ctl)
    assert vcpu.get_control() == ctl
    assert vcpu.run() == MmioExit(DEV + 0x10, 4, False, 0)
    vcpu.close()


def test_cpuid_hides_what_only_an_in_kernel_local_apic_backs(machine: Machine) -> None:
    """No KVM irqchip: no x2APIC, no TSC-deadline timer, none of KVM's paravirtual features that KVM
    serves only with its own local APIC (their MSRs would be refused: Linux complains at boot)."""
    with kvm_vcpu(machine, b"\xf4") as vcpu:
        assert not vcpu.cpuid.has("x2apic")
        assert not vcpu.cpuid.query(1)[ECX] & CPUID1_ECX_TSC_DEADLINE
        assert not vcpu.cpuid.query(KVM_CPUID_FEATURES)[EAX] & HIDDEN_CPUID[KVM_CPUID_FEATURES, 12]


@needs_as
def test_the_guest_reads_the_kvm_features_it_was_given(machine: Machine) -> None:
    vcpu = kvm_vcpu(machine, assemble(f"mov eax, {KVM_CPUID_FEATURES}\n cpuid\n hlt"))
    assert isinstance(vcpu.run(), HltExit)
    assert vcpu.get_regs().rax == vcpu.cpuid.query(KVM_CPUID_FEATURES)[EAX]
    vcpu.close()


@needs_as
def test_cx16_is_reported_only_where_the_guest_can_run_cmpxchg16b(machine: Machine) -> None:
    """Where KVM takes CMPXCHG16B into its emulator (PVM), which has none, the guest is not told CX16."""
    src = "xor eax, eax\n xor edx, edx\n mov ebx, 1\n xor ecx, ecx\n cmpxchg16b [0x200000]\n hlt"
    vcpu = kvm_vcpu(machine, assemble(src))
    ex = vcpu.run()
    assert cmpxchg16b_runs() == isinstance(ex, HltExit), ex
    if vcpu.cpuid.has("cx16"):  # a guest told it has CX16 can use it
        assert isinstance(ex, HltExit) and machine.vm.memory.read_int(RAM_BUF, 8) == 1
    vcpu.close()


def test_close_releases_descriptors(machine: Machine) -> None:
    before = len(os.listdir("/proc/self/fd"))
    vcpu = kvm_vcpu(machine, b"\xf4")
    # /dev/kvm, the VM, the vCPU, and the duplicate Python's mmap keeps of the vCPU fd for kvm_run.
    assert len(os.listdir("/proc/self/fd")) == before + 4
    vcpu.close()
    vcpu.close()  # idempotent
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(KvmError, match="closed"):
        vcpu.run()


def test_dropped_vcpu_releases_descriptors(machine: Machine) -> None:
    before = len(os.listdir("/proc/self/fd"))
    kvm_vcpu(machine, b"\xf4")  # never closed: the finalizer closes it when it is collected
    assert len(os.listdir("/proc/self/fd")) == before


# --- exits ----------------------------------------------------------------------------------------------


@needs_as
def test_mov_read_then_write(machine: Machine) -> None:
    vcpu = kvm_vcpu(
        machine, assemble("mov ebx, 0xD0010000\n mov eax, [rbx]\n mov dword ptr [rbx+8], 0x12345678\n hlt")
    )
    ex = vcpu.run()
    assert ex == MmioExit(DEV, 4, False, 0)
    assert vcpu.get_regs().rip == LOAD_ADDR + 5  # stopped at the load: nothing of it ran yet
    ex = vcpu.run(mmio(ex).fulfill(0xA1B2C3D4))
    assert ex == MmioExit(DEV + 8, 4, True, 0x12345678)
    assert vcpu.get_regs().gprs[Gpr.RAX] == 0xA1B2C3D4
    assert isinstance(vcpu.run(mmio(ex).fulfill()), HltExit)
    vcpu.close()


@needs_as
def test_add_is_read_then_write(machine: Machine) -> None:
    """Read-modify-write: one read, then the write of the sum. KVM reports the write only after the
    instruction has retired (RIP already past it), where vmmio's kernel commits after the fulfillment."""
    vcpu = kvm_vcpu(machine, assemble("mov ebx, 0xD0010000\n mov eax, 5\n add [rbx], eax\n hlt"))
    ex = vcpu.run()
    assert ex == MmioExit(DEV, 4, False, 0)
    rip = vcpu.get_regs().rip
    ex = vcpu.run(mmio(ex).fulfill(0xFFFF_FFFE))
    assert ex == MmioExit(DEV, 4, True, 3)  # 0xFFFFFFFE + 5, carried out
    assert vcpu.get_regs().rip == rip + 2  # Linux: retired before the write exit
    assert vcpu.get_regs().rflags & 1  # CF from the carry
    assert isinstance(vcpu.run(mmio(ex).fulfill()), HltExit)
    vcpu.close()


@needs_as
def test_rep_movsd_mmio_to_ram_one_exit_per_element(machine: Machine) -> None:
    vcpu = kvm_vcpu(
        machine, assemble("mov esi, 0xD0010000\n mov edi, 0x200000\n mov ecx, 4\n rep movsd\n hlt")
    )
    ex = vcpu.run()
    for n in range(4):
        assert ex == MmioExit(DEV + 4 * n, 4, False, 0)
        assert vcpu.get_regs().gprs[Gpr.RCX] == 4 - n  # restartable state between elements
        ex = vcpu.run(mmio(ex).fulfill(0x1111_1111 * (n + 1)))
    assert isinstance(ex, HltExit)
    assert [machine.vm.memory.read_int(RAM_BUF + 4 * n, 4) for n in range(4)] == [
        0x1111_1111 * (n + 1) for n in range(4)
    ]
    vcpu.close()


@needs_as
def test_out_in_and_rep_outsb() -> None:
    t = run_src(
        "mov dx, 0x3f8\n mov al, 0x41\n out dx, al\n add dx, 5\n in al, dx\n mov [0x200000], al\n"
        'lea rsi, [rip + s]\n mov dx, 0x3f8\n mov ecx, 3\n rep outsb\n hlt\n s: .ascii "xyz"'
    )
    assert t.result.reason == "hlt"
    assert t.accesses == [
        ("io", 0x3F8, 1, False, 0x41),
        ("io", 0x3FD, 1, True, 0),
        ("io", 0x3F8, 1, False, ord("x")),
        ("io", 0x3F8, 1, False, ord("y")),
        ("io", 0x3F8, 1, False, ord("z")),
    ]
    assert t.machine.uart.output == b"Axyz"
    assert t.machine.vm.memory.read(RAM_BUF, 1) == b"\x60"  # LSR: THRE | TEMT, as the UART answered


@needs_as
def test_rep_insb_is_one_kvm_exit_with_count(machine: Machine) -> None:
    """KVM reads ahead for INS: one KVM_EXIT_IO with count=5, handed out as five InoutExits in order."""
    vcpu = kvm_vcpu(
        machine, assemble("mov dx, 0x3f8\n mov edi, 0x200000\n mov ecx, 5\n rep insb\n hlt"), record_raw=True
    )
    ex = vcpu.run()
    for n in range(5):
        assert ex == InoutExit(0x3F8, 1, True, 0)
        ex = vcpu.run(inout(ex).fulfill(0x61 + n))
    assert isinstance(ex, HltExit)
    assert machine.vm.memory.read(RAM_BUF, 5) == b"abcde"
    assert vcpu.raw_exits == [KvmIo(0x3F8, 1, True, 5, b"")]
    vcpu.close()


@needs_as
def test_hlt(machine: Machine) -> None:
    vcpu = kvm_vcpu(machine, assemble("nop\n hlt\n hlt"))
    assert isinstance(vcpu.run(), HltExit)
    assert vcpu.get_regs().rip == LOAD_ADDR + 2  # past the HLT
    assert isinstance(vcpu.run(Default()), HltExit)
    assert vcpu.get_regs().rip == LOAD_ADDR + 3
    vcpu.close()


@needs_as
def test_hello_prints_and_exits() -> None:
    t = run_src(HELLO)
    assert (t.result.reason, t.result.status) == ("exit", 0)
    assert t.machine.uart.output == b"Hello, world!\n"
    # Per character: poll LSR (1-byte read), then write THR; then the debug-exit OUT.
    per_char = [
        [("mmio", UART_MMIO + 5, 1, False, 0), ("mmio", UART_MMIO, 1, True, c)] for c in b"Hello, world!\n"
    ]
    assert t.accesses == [a for pair in per_char for a in pair] + [("io", 0xF4, 1, False, 0)]


@needs_as
def test_page_crossing_read_is_presented_as_vmmio_pieces(machine: Machine) -> None:
    """Linux splits an 8-byte read at 0x...ffd into 3 + 5 bytes at the page boundary. vmmio's ABI has no
    3- or 5-byte request, so each piece is presented as naturally aligned power-of-two requests (as vmmio's
    kernel emits them) and answered to KVM whole; raw_exits keeps what Linux reported."""
    vcpu = kvm_vcpu(machine, assemble("mov ebx, 0xD0010000\n mov rax, [rbx + 0xffd]\n hlt"), record_raw=True)
    ex = vcpu.run()
    device = bytes(range(0xA0, 0xA8))  # the 8 bytes the device holds at 0xffd..0x1004
    pieces = []
    while isinstance(ex, MmioExit):
        pieces.append((ex.gpa - DEV, ex.size))
        off = ex.gpa - DEV - 0xFFD
        ex = vcpu.run(ex.fulfill(int.from_bytes(device[off : off + ex.size], "little")))
    assert isinstance(ex, HltExit)
    assert pieces == [(0xFFD, 1), (0xFFE, 2), (0x1000, 4), (0x1004, 1)]
    assert vcpu.raw_exits == [KvmMmio(DEV + 0xFFD, 3, False, b""), KvmMmio(DEV + 0x1000, 5, False, b"")]
    assert vcpu.get_regs().gprs[Gpr.RAX] == int.from_bytes(device, "little")
    vcpu.close()


@needs_as
def test_page_crossing_write_keeps_the_data_of_each_piece(machine: Machine) -> None:
    vcpu = kvm_vcpu(
        machine,
        assemble("mov ebx, 0xD0010000\n mov rax, 0x0807060504030201\n mov [rbx + 0xffb], rax\n hlt"),
        record_raw=True,
    )
    ex, got = vcpu.run(), []
    while isinstance(ex, MmioExit):
        got.append((ex.gpa - DEV, ex.size, ex.data))
        ex = vcpu.run(ex.fulfill())
    assert got == [(0xFFB, 1, 0x01), (0xFFC, 4, 0x05040302), (0x1000, 2, 0x0706), (0x1002, 1, 0x08)]
    assert vcpu.raw_exits == [
        KvmMmio(DEV + 0xFFB, 5, True, bytes([1, 2, 3, 4, 5])),
        KvmMmio(DEV + 0x1000, 3, True, bytes([6, 7, 8])),
    ]
    vcpu.close()


@needs_as
def test_emulation_failure_is_inst_emul_with_the_bytes_at_rip(machine: Machine) -> None:
    """KVM's emulator has no x87 loads: KVM_INTERNAL_ERROR_EMULATION. It does not say how long the
    instruction is, so `insn` is the 15 bytes at RIP (vmmio's kernel reports just the instruction)."""
    vcpu = kvm_vcpu(machine, assemble("mov ebx, 0xD0010000\n fld qword ptr [rbx]\n hlt"))
    ex = vcpu.run()
    assert isinstance(ex, InstEmulExit)
    assert ex.rip == LOAD_ADDR + 5 and ex.reason is InstEmulReason.NOT_EMULATED
    assert ex.insn == machine.vm.memory.read(LOAD_ADDR + 5, 15) and ex.insn.startswith(b"\xdd\x03\xf4")
    vcpu.close()


@needs_as
def test_code_in_mmio_is_fetch_failed() -> None:
    t = run_src("mov eax, 0xD0010000\n jmp rax")
    assert t.exits == [InstEmulExit(DEV, b"", InstEmulReason.FETCH_FAILED)]


@needs_as
def test_triple_fault_is_shutdown() -> None:
    assert run_src("ud2").exits == [ShutdownExit()]  # IDT at 0 holds no present gate: #UD -> #DF -> shutdown


@needs_as
def test_in_kernel_handlers_are_served_in_place(machine: Machine) -> None:
    """A GuestMemory handler region is an in-kernel device: KVM's exits there never reach the caller."""
    kdev = MemoryDevice(0x2000, fill=b"\x10\x20\x30\x40")
    machine.vm.add_mmio_device(0xE000_0000, 0x2000, kdev)
    code = assemble(
        "mov ebx, 0xE0000000\n mov eax, [rbx]\n mov [rbx + 0xffe], eax\n"
        "mov edx, 0xD0010000\n mov ecx, [rdx]\n hlt"
    )
    vcpu = kvm_vcpu(machine, code)
    ex = vcpu.run()
    assert ex == MmioExit(DEV, 4, False, 0)  # the first request the caller sees is the userspace device's
    assert kdev.trace == [(0, 4, False, 0x40302010), (0xFFE, 2, True, 0x2010), (0x1000, 2, True, 0x4030)]
    assert isinstance(vcpu.run(mmio(ex).fulfill(7)), HltExit)
    vcpu.close()


@needs_as
def test_in_kernel_port_handlers(machine: Machine) -> None:
    class Port:
        def __init__(self) -> None:
            self.seen: list[tuple[int, int, int]] = []

        def read(self, offset: int, size: int) -> int:
            return 0x5A

        def write(self, offset: int, size: int, value: int) -> None:
            self.seen.append((offset, size, value))

    handler = Port()
    ports: RangeMap[Device] = RangeMap()
    ports.add(0x7F, 2, handler)
    image = machine.load(assemble("mov al, 7\n out 0x80, al\n in al, 0x80\n out 0xf4, al\n hlt"))
    with KvmVcpu(machine.vm.memory, machine.entry_state(image), ports=ports) as vcpu:
        assert vcpu.run() == InoutExit(0xF4, 1, False, 0x5A)
    assert handler.seen == [(1, 1, 7)]


# --- entries: checks and their KVM-specific semantics ---------------------------------------------------


@needs_as
def test_mismatched_fulfillments_are_rejected_and_change_nothing(machine: Machine) -> None:
    vcpu = kvm_vcpu(
        machine,
        assemble(
            "mov ebx, 0xD0010000\n mov eax, [rbx]\n mov dword ptr [rbx+8], 9\n"
            "mov dx, 0x3f8\n out dx, al\n hlt"
        ),
    )
    ex = vcpu.run()
    before = vcpu.get_regs()
    bad = [
        Default(),
        None,
        Discard(),
        FulfillMmio(DEV + 4, 4, False, 1),  # wrong gpa
        FulfillMmio(DEV, 2, False, 1),  # wrong size
        FulfillMmio(DEV, 4, True, 1),  # wrong direction
        FulfillInout(0x3F8, 1, True, 1),  # wrong kind
    ]
    for entry in bad:
        with pytest.raises(KvmEntryError):
            vcpu.run(entry)
        assert vcpu.pending == ex and vcpu.get_regs() == before
    ex = vcpu.run(mmio(ex).fulfill(0x77))  # the correct answer still works
    assert ex == MmioExit(DEV + 8, 4, True, 9)
    with pytest.raises(KvmEntryError, match="does not fulfill"):
        vcpu.run(FulfillMmio(DEV + 8, 4, True, 8))  # write data not echoed
    ex = vcpu.run(mmio(ex).fulfill())
    assert ex == InoutExit(0x3F8, 1, False, 0x77)
    with pytest.raises(EntryError, match="does not fulfill"):  # KvmEntryError is vmmio's EntryError
        vcpu.run(FulfillInout(0x3F8, 1, False, 0x78))
    with pytest.raises(EntryError, match="does not fulfill"):
        vcpu.run(FulfillInout(0x3F9, 1, False, 0x77))
    with pytest.raises(KvmError, match="pending"):  # Linux's emulator owns the state until answered
        vcpu.set_regs(before)
    assert isinstance(vcpu.run(inout(ex).fulfill()), HltExit)
    for entry in (FulfillMmio(DEV, 4, False, 0), Discard()):  # nothing pending
        with pytest.raises(KvmEntryError, match="no request is pending"):
            vcpu.run(entry)
    vcpu.close()


@needs_as
def test_exit_consistent(machine: Machine) -> None:
    """immediate_exit: KVM completes the pending access and stops before running more guest code. The
    write of a read-modify-write, or the next element of a REP string instruction, still arrives first:
    Linux keeps the whole instruction in its emulator (vmmio's kernel stops between REP iterations)."""
    vcpu = kvm_vcpu(
        machine,
        assemble(
            "mov ebx, 0xD0010000\n mov eax, [rbx]\n add [rbx + 8], eax\n"
            "mov esi, 0xD0010000\n mov edi, 0x200000\n mov ecx, 2\n rep movsd\n hlt"
        ),
    )
    assert vcpu.run(Default(exit_consistent=True)) == SuspendedExit()
    assert vcpu.get_regs().rip == LOAD_ADDR  # nothing pending: KVM was not even entered
    ex = vcpu.run()
    load_end = vcpu.get_regs().rip + 2
    assert vcpu.run(mmio(ex).fulfill(0x55, exit_consistent=True)) == SuspendedExit()
    regs = vcpu.get_regs()
    assert (regs.rip, regs.gprs[Gpr.RAX]) == (load_end, 0x55)  # the load retired, nothing after it ran
    ex = vcpu.run()
    assert ex == MmioExit(DEV + 8, 4, False, 0)
    ex = vcpu.run(mmio(ex).fulfill(1, exit_consistent=True))
    assert ex == MmioExit(DEV + 8, 4, True, 0x56)  # still in flight: its write comes first
    assert vcpu.run(mmio(ex).fulfill(exit_consistent=True)) == SuspendedExit()
    ex = vcpu.run()
    assert ex == MmioExit(DEV, 4, False, 0)
    movs_rip = vcpu.get_regs().rip
    ex = vcpu.run(mmio(ex).fulfill(1, exit_consistent=True))
    assert ex == MmioExit(DEV + 4, 4, False, 0)  # Linux goes on with the next element
    assert vcpu.run(mmio(ex).fulfill(2, exit_consistent=True)) == SuspendedExit()
    regs = vcpu.get_regs()
    assert (regs.rip, regs.gprs[Gpr.RCX]) == (movs_rip, 0)  # restartable: RIP at the REP, RCX done
    assert isinstance(vcpu.run(), HltExit)
    vcpu.close()


def test_no_assembler_needed_for_the_read_loop(machine: Machine) -> None:
    vcpu = kvm_vcpu(machine, READ_LOOP)
    ex = vcpu.run()
    for _ in range(3):
        assert ex == MmioExit(DEV, 4, False, 0)
        ex = vcpu.run(mmio(ex).fulfill(1))
    vcpu.close()


def test_a_spinning_guest_can_be_interrupted(machine: Machine) -> None:
    vcpu = kvm_vcpu(machine, b"\xeb\xfe")  # jmp $
    with pytest.raises(TimeoutError), deadline(0.2):
        vcpu.run()
    assert vcpu.get_regs().rip == LOAD_ADDR
    vcpu.close()


# --- the cross-check ------------------------------------------------------------------------------------


@needs_as
@pytest.mark.parametrize(("name", "src"), GUESTS, ids=[g[0] for g in GUESTS])
def test_same_trace_on_kvm_and_vmmio(name: str, src: str) -> None:
    """Same guest, same devices: every MMIO/port access, in order, with the same data and outcome."""
    kvm = run_src(src, "kvm")
    ref = run_src(src, "unicorn")
    assert kvm.accesses == ref.accesses
    assert (kvm.result.reason, kvm.result.status) == (ref.result.reason, ref.result.status)
    assert [type(e) for e in kvm.exits] == [type(e) for e in ref.exits]
    assert bytes(kvm.machine.testdev.data) == bytes(ref.machine.testdev.data)
    assert kvm.machine.uart.output == ref.machine.uart.output
    assert kvm.machine.vm.memory.read(RAM_BUF, 64) == ref.machine.vm.memory.read(RAM_BUF, 64)


@needs_as
def test_inst_emul_differs_only_in_the_bytes_reported() -> None:
    """Both give up on `fld [mmio]` at the same RIP; KVM does not report the instruction length, so its
    bytes are the 15 at RIP, of which vmmio's decoded instruction is the prefix."""
    src = "mov ebx, 0xD0010000\n fld qword ptr [rbx]\n hlt"
    (kvm,), (ref,) = run_src(src, "kvm").exits, run_src(src, "unicorn").exits
    assert isinstance(kvm, InstEmulExit) and isinstance(ref, InstEmulExit)
    assert kvm.rip == ref.rip and kvm.reason == ref.reason
    assert kvm.insn.startswith(ref.insn) and ref.insn == b"\xdd\x03"


@needs_as
def test_rep_ins_to_mmio_legitimately_differs() -> None:
    """INS into MMIO. The CPU (and vmmio) does port read, memory write, per element. Linux reads ahead:
    all port reads first (one KVM_EXIT_IO with count), then the buffered data goes to the device as
    merged writes of up to 8 bytes. Same data in the end, different device-visible order and sizes."""
    src = "mov edi, 0xD0010000\n mov ecx, 4\n mov dx, 0x3fd\n rep insb\n hlt"
    kvm, ref = run_src(src, "kvm"), run_src(src, "unicorn")
    lsr = ("io", 0x3FD, 1, True, 0)
    assert ref.accesses == [a for n in range(4) for a in (lsr, ("mmio", DEV + n, 1, True, 0x60))]
    assert kvm.accesses == [lsr] * 4 + [("mmio", DEV, 4, True, 0x6060_6060)]
    assert bytes(kvm.machine.testdev.data[:4]) == bytes(ref.machine.testdev.data[:4]) == b"\x60" * 4


@needs_as
def test_clflush_of_mmio_legitimately_differs() -> None:
    """CLFLUSH of an MMIO address: the CPU makes no device access and neither does vmmio. Linux's emulator
    fetches the memory operand first, which the device sees as a 1-byte read."""
    src = "mov ebx, 0xD0010000\n clflush [rbx]\n hlt"
    assert run_src(src, "unicorn").accesses == []
    assert run_src(src, "kvm").accesses == [("mmio", DEV, 1, False, 0)]


def test_access_ignores_non_device_exits() -> None:
    assert access(HltExit()) is None and access(SuspendedExit()) is None


# --- benchmark ------------------------------------------------------------------------------------------


def test_kvm_mmio_exits_per_second() -> None:
    """Print (not assert) the bare run/fulfill round-trip rate, for the benchmark table."""
    rates = {backend: mmio_exits_per_second(backend, seconds=1.0) for backend in ("kvm", "unicorn")}
    print(
        f"\nMMIO read exits/s (mov eax, [mmio] loop, 1 s): kvm {rates['kvm']:,.0f}, "
        f"vmmio over unicorn {rates['unicorn']:,.0f}"
    )
    assert all(rate > 0 for rate in rates.values())
