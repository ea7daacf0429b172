"""Interrupts and time on the PC machine, on both vCPUs: vmmio's kernel over Unicorn and the KVM reference
(a userspace irqchip: the same PIC/PIT/LAPIC objects, KVM_INTERRUPT, the interrupt window, a kick timer).

The guests are assembled here and count interrupts with their own IDT handlers, so what they leave in
RAM is the observable result; it must be the same on both. Every handler masks its source when its count
reaches the target the main code set, which keeps the counts exact however slowly the guest runs (PVM
runs guest code a few hundred times slower than Unicorn).
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass

import pytest
from kvm_util import SET_GATE, assemble, deadline, have_assembler

from vmmio.abi import HltExit, SuspendedExit, VmExit
from vmmio.devices.clock import NS_PER_S
from vmmio.devices.irq import IrqLine
from vmmio.machine import LOAD_ADDR, ExitSource, RunResult
from vmmio.pc import PcMachine
from vmmio.reference.kvm import KvmVcpu, kvm_usable

KVM_WHY_NOT = kvm_usable()
BACKENDS = [
    "unicorn",
    pytest.param("kvm", marks=pytest.mark.skipif(KVM_WHY_NOT is not None, reason=f"KVM: {KVM_WHY_NOT}")),
]
pytestmark = pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy to build the guests")

PIT_10MS = 11932  # PIT input clock 1.193182 MHz
APIC_10MS = 10_000_000  # the APIC timer counts at 1 GHz, divided by 1
TIMER_VECTOR = {"pic": 0x20, "pic_lint0": 0x20, "lapic": 0x40}

# The results the guests leave at LOAD_ADDR + 8, after a short jump over them.
RESULTS = struct.Struct("<5I4x8Q")
RESULT_FIELDS = "ticks target halts masked strays counter spins rip1 rip2 rip3 want1 want2 want3"
RESULT_DATA = """
.balign 8
ticks: .long 0
target: .long 0
halts: .long 0
masked: .long 0
strays: .long 0
.long 0
counter: .quad 0
spins: .quad 0
rip1: .quad 0       # where an interrupt was taken (the boundary guest)
rip2: .quad 0
rip3: .quad 0
want1: .quad 0      # where it should have been, as the guest sees its own labels
want2: .quad 0
want3: .quad 0
"""

# An IDT for vectors 0x20-0x4F, every gate to `stray` until the guest points one elsewhere (`gate`).
IDT = (
    SET_GATE
    + """
stray:
    inc dword ptr [rip + strays]
    iretq

.balign 8
idtr: .word 0x50 * 16 - 1
    .quad 0
.balign 16
idt: .fill 0x50 * 16, 1, 0
"""
)
IDT_SETUP = """
    lea rdi, [rip + idt]
    mov ecx, 0x20
1:  lea rax, [rip + stray]
    call set_gate
    inc ecx
    cmp ecx, 0x50
    jb 1b
    mov [rip + idtr + 2], rdi
    lidt [rip + idtr]
"""


def gate(vector: int, handler: str) -> str:
    """Point the gate of `vector` at `handler`."""
    return f"""
    lea rdi, [rip + idt]
    mov ecx, {vector:#x}
    lea rax, [rip + {handler}]
    call set_gate
"""


# The 8259 pair at vectors 0x20 and 0x28, everything masked; rbx holds the local APIC's base throughout.
PIC_SETUP = """
    mov ebx, 0xfee00000
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xa1, al
    mov al, 0x01
    out 0x21, al
    out 0xa1, al
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
"""


@dataclass(frozen=True)
class Source:
    """How a guest drives one timer interrupt source: set it up, mask and unmask it, end the interrupt,
    and test (ZF clear) whether it is requested at the controller while the CPU cannot take it."""

    setup: str
    unmask: str
    mask: str
    eoi: str
    requested: str


PIC_IRQ0 = dict(
    unmask="    mov al, 0xfe\n    out 0x21, al\n",
    mask="    mov al, 0xff\n    out 0x21, al\n",
    eoi="    mov al, 0x20\n    out 0x20, al\n",
    requested="    mov al, 0x0a\n    out 0x20, al\n    in al, 0x20\n    test al, 1\n",  # OCW3: read IRR
)
PIT_SETUP = f"""
    mov al, 0x34        # PIT channel 0: rate generator, lobyte/hibyte
    out 0x43, al
    mov al, {PIT_10MS & 0xFF:#x}
    out 0x40, al
    mov al, {PIT_10MS >> 8:#x}
    out 0x40, al
"""
SOURCES = {
    # The APIC stays software-disabled (its reset state): the 8259 drives INTR directly.
    "pic": Source(PIT_SETUP, **PIC_IRQ0),
    # The APIC on, with the 8259 behind LINT0 in ExtINT mode (virtual-wire mode, as firmware leaves it).
    "pic_lint0": Source(
        "    mov dword ptr [rbx + 0xf0], 0x1ff\n    mov dword ptr [rbx + 0x350], 0x700\n" + PIT_SETUP,
        **PIC_IRQ0,
    ),
    # The local APIC's timer, periodic, on vector 0x40; the 8259 stays masked.
    "lapic": Source(
        setup=f"""
    mov dword ptr [rbx + 0xf0], 0x1ff      # SVR: APIC on, spurious vector 0xff
    mov dword ptr [rbx + 0x3e0], 0xb       # divide by 1
    mov dword ptr [rbx + 0x320], 0x30040   # LVT timer: periodic, masked, vector 0x40
    mov dword ptr [rbx + 0x380], {APIC_10MS}
""",
        unmask="    mov dword ptr [rbx + 0x320], 0x20040\n",
        mask="    mov dword ptr [rbx + 0x320], 0x30040\n",
        eoi="    mov dword ptr [rbx + 0xb0], 0\n",
        requested="    mov eax, [rbx + 0x220]\n    test eax, 1\n",  # IRR bit of vector 0x40
    ),
}


def timer_guest(name: str) -> str:
    """Counts timer interrupts in three phases: spinning with INC/DEC on memory until the 3rd, HLT
    until the 6th, then with IF clear while the source is requesting, which must hold the 7th back until
    STI; it ends with CLI; HLT."""
    s = SOURCES[name]
    return f"""
    jmp start
{RESULT_DATA}
start:
{IDT_SETUP}{gate(TIMER_VECTOR[name], "tick")}{PIC_SETUP}{s.setup}
    mov dword ptr [rip + target], 3
{s.unmask}
    sti
2:  inc qword ptr [rip + counter]
    dec qword ptr [rip + counter]
    inc qword ptr [rip + spins]
    cmp dword ptr [rip + ticks], 3
    jb 2b

    cli
    mov dword ptr [rip + target], 6
{s.unmask}
3:  cmp dword ptr [rip + ticks], 6
    jae 4f
    sti
    hlt             # in the STI shadow: the interrupt can only end the HLT
    cli
    inc dword ptr [rip + halts]
    jmp 3b

4:  mov dword ptr [rip + target], 7
{s.unmask}
5:
{s.requested}
    jz 5b
    mov ecx, 2000   # the request stays pending while IF is clear
6:  inc qword ptr [rip + counter]
    dec qword ptr [rip + counter]
    dec ecx
    jnz 6b
    mov eax, [rip + ticks]
    mov [rip + masked], eax
    sti
7:  cmp dword ptr [rip + ticks], 7
    jb 7b
    cli
    hlt             # IF clear: the run ends here

tick:
    push rax
    inc dword ptr [rip + ticks]
    mov eax, [rip + ticks]
    cmp eax, [rip + target]
    jb 1f
{s.mask}
1:
{s.eoi}
    pop rax
    iretq
{IDT}
"""


@dataclass
class Outcome:
    result: RunResult
    exits: list[VmExit]
    values: dict[str, int]
    machine: PcMachine


def run_pc(src: str, backend: str, timeout: float = 60.0) -> Outcome:
    m = PcMachine(uart_sink=lambda _: None)
    vcpu: ExitSource = m.vcpu(m.load(assemble(src)), backend)
    exits: list[VmExit] = []
    try:
        with deadline(timeout):
            result = m.run(vcpu, trace=exits.append)
    finally:
        close = getattr(vcpu, "close", None)
        if close is not None:
            close()
    raw = RESULTS.unpack(m.vm.memory.read(LOAD_ADDR + 8, RESULTS.size))
    return Outcome(result, exits, dict(zip(RESULT_FIELDS.split(), raw, strict=True)), m)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_timer_interrupts_spinning_halted_and_masked(source: str, backend: str) -> None:
    """On KVM, phase one has no exit at all: only the kick timer brings KVM_RUN back for the timers."""
    out = run_pc(timer_guest(source), backend)
    # Every device is in the kernel: the only exit is the final HLT, which IF clear lets through.
    assert out.exits == [HltExit()] and out.result.reason == "hlt", out.result
    v = out.values
    assert (v["ticks"], v["masked"], v["strays"]) == (7, 6, 0), v  # nothing taken while IF was clear
    assert v["counter"] == 0, "an INC or DEC on memory ran twice or not at all around an interrupt"
    assert v["spins"] > 0 and 1 <= v["halts"] <= 3, v
    pic = out.machine.pc.pic
    assert pic.master.isr == pic.slave.isr == out.machine.pc.lapic.isr == 0  # every one taken was ended


# Interrupts raised by a device access are taken right after that instruction: by a userspace device
# (pc-testdev's ISA IRQ port, an InoutExit), by unmasking at the in-kernel 8259 (a port the Vm serves),
# and by a self-IPI through the local APIC page (MMIO the Vm serves). The handler records where it
# interrupted the guest.
BOUNDARY_GUEST = f"""
    jmp start
{RESULT_DATA}
start:
{IDT_SETUP}{gate(0x23, "irq3")}{gate(0x40, "ipi")}{PIC_SETUP}
    lea rax, [rip + after_userspace]
    mov [rip + want1], rax
    lea rax, [rip + after_unmask]
    mov [rip + want2], rax
    lea rax, [rip + after_ipi]
    mov [rip + want3], rax
    mov al, 0xf7        # IRQ3 only
    out 0x21, al
    sti
    nop
    mov dx, 0x2003
    mov al, 1
    out dx, al          # userspace raises IRQ3
after_userspace:
    nop
    mov al, 0
    out dx, al
    mov al, 0xff        # mask, raise IRQ3 again: requested, held back by the mask
    out 0x21, al
    mov al, 1
    out dx, al
    mov al, 0xf7
    out 0x21, al        # the in-kernel 8259 lets it through
after_unmask:
    nop
    mov dword ptr [rbx + 0xf0], 0x1ff
    mov dword ptr [rbx + 0x300], 0x44040    # fixed IPI to self, vector 0x40
after_ipi:
    nop
    cli
    hlt

irq3:
    push rax
    mov rax, [rsp + 8]
    cmp qword ptr [rip + rip1], 0
    jne 1f
    mov [rip + rip1], rax
    jmp 2f
1:  mov [rip + rip2], rax
2:  inc dword ptr [rip + ticks]
    mov al, 0x20
    out 0x20, al
    pop rax
    iretq

ipi:
    push rax
    mov rax, [rsp + 8]
    mov [rip + rip3], rax
    inc dword ptr [rip + ticks]
    mov dword ptr [rbx + 0xb0], 0
    pop rax
    iretq
{IDT}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupt_a_device_access_raises_is_taken_right_after_it(backend: str) -> None:
    out = run_pc(BOUNDARY_GUEST, backend)
    assert out.result.reason == "hlt", out.result
    v = out.values
    assert v["want1"] and (v["rip1"], v["rip2"], v["rip3"]) == (v["want1"], v["want2"], v["want3"]), v
    assert (v["ticks"], v["strays"]) == (3, 0)


def test_request_stop_ends_a_spinning_kvm_guest_from_another_thread() -> None:
    """With a chipset the KVM vCPU's own kick signal ends KVM_RUN: no handler, no main-thread signal."""
    if KVM_WHY_NOT is not None:
        pytest.skip(f"KVM: {KVM_WHY_NOT}")
    m = PcMachine(uart_sink=lambda _: None)
    vcpu = m.vcpu(m.load(b"\xeb\xfe"), "kvm")  # jmp $ with IF clear: no exit, no deadline
    assert isinstance(vcpu, KvmVcpu)
    vcpu.max_slice_ns = 60 * NS_PER_S  # nothing but the kick can end KVM_RUN in time
    try:
        threading.Timer(0.2, vcpu.request_stop).start()
        with deadline(20):
            assert vcpu.run() == SuspendedExit()
    finally:
        vcpu.close()


# Two requests at once: the 8259 presents IRQ3, then IRQ4 once the guest can take another (after the
# first handler's IRET; one instruction later on PVM and Unicorn), so each handler sees its rank.
TWO_AT_ONCE = f"""
    jmp start
{RESULT_DATA}
start:
{IDT_SETUP}{gate(0x23, "irq3")}{gate(0x24, "irq4")}{PIC_SETUP}
    lea rax, [rip + after_unmask]
    mov [rip + want3], rax
    mov dx, 0x2003      # raise IRQ3 and IRQ4 while the 8259 masks them
    mov al, 1
    out dx, al
    mov dx, 0x2004
    out dx, al
    sti
    nop
    mov al, 0xe7
    out 0x21, al
after_unmask:
1:  cmp dword ptr [rip + ticks], 2
    jb 1b
    cli
    hlt

irq3:
    push rax
    mov rax, [rsp + 8]
    mov [rip + rip1], rax
    inc dword ptr [rip + ticks]
    mov eax, [rip + ticks]
    mov [rip + want1], eax
    jmp 1f
irq4:
    push rax
    mov rax, [rsp + 8]
    mov [rip + rip2], rax
    inc dword ptr [rip + ticks]
    mov eax, [rip + ticks]
    mov [rip + want2], eax
1:  mov al, 0x20
    out 0x20, al
    pop rax
    iretq
{IDT}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_requests_are_taken_in_priority_order(backend: str) -> None:
    out = run_pc(TWO_AT_ONCE, backend)
    v = out.values
    assert out.result.reason == "hlt" and (v["ticks"], v["strays"]) == (2, 0), (out.result, v)
    assert (v["want1"], v["want2"]) == (1, 2)  # IRQ3 first, then IRQ4
    assert v["rip1"] == v["want3"]  # the first right after the unmasking OUT
    assert v["want3"] <= v["rip2"] < v["want3"] + 9  # the second within the loop waiting for it


# The RTC's periodic interrupt at 1024 Hz, IRQ8 behind the slave 8259 (through the master's cascade on
# IRQ2): the guest sleeps in STI; HLT until five have come, reading register C in the handler (which
# lowers IRQ8) and ending it at both controllers.
RTC_GUEST = f"""
    jmp start
{RESULT_DATA}
start:
{IDT_SETUP}{gate(0x28, "rtc")}{PIC_SETUP}
    mov al, 0x0a        # register A: 32.768 kHz divider, rate 6 (1024 Hz)
    out 0x70, al
    mov al, 0x26
    out 0x71, al
    mov al, 0x0b        # register B: PIE on
    out 0x70, al
    in al, 0x71
    or al, 0x40
    mov ah, al
    mov al, 0x0b
    out 0x70, al
    mov al, ah
    out 0x71, al
    mov dword ptr [rip + target], 5
    mov al, 0xfb        # the master passes the cascade (IRQ2) only, the slave IRQ8 only
    out 0x21, al
    mov al, 0xfe
    out 0xa1, al
1:  cmp dword ptr [rip + ticks], 5
    jae 2f
    sti
    hlt
    cli
    inc dword ptr [rip + halts]
    jmp 1b
2:  cli
    hlt

rtc:
    push rax
    mov al, 0x0c        # reading register C acknowledges the RTC: IRQ8 goes down
    out 0x70, al
    in al, 0x71
    inc dword ptr [rip + ticks]
    mov eax, [rip + ticks]
    cmp eax, [rip + target]
    jb 1f
    mov al, 0xff
    out 0xa1, al
1:  mov al, 0x20
    out 0xa0, al
    out 0x20, al
    pop rax
    iretq
{IDT}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_rtc_periodic_interrupt_wakes_hlt_through_the_cascade(backend: str) -> None:
    out = run_pc(RTC_GUEST, backend)
    assert out.exits == [HltExit()] and out.result.reason == "hlt", out.result
    v = out.values
    assert (v["ticks"], v["halts"], v["strays"]) == (5, 5, 0), v  # each interrupt ended one HLT
    pic = out.machine.pc.pic
    assert pic.master.isr == pic.slave.isr == 0


# No timer runs: the guest halts with IF set until another thread raises IRQ5 at the 8259 and kicks the
# machine (Vm.kick), as a device model with its own thread does. The HLT wait must end on the kick alone.
KICKED_GUEST = f"""
    jmp start
{RESULT_DATA}
start:
{IDT_SETUP}{gate(0x25, "irq5")}{PIC_SETUP}
    mov al, 0xdf        # IRQ5 only
    out 0x21, al
    mov dword ptr [rip + target], 1     # ready: the host may raise the line
1:  cmp dword ptr [rip + ticks], 1
    jae 2f
    sti
    hlt
    cli
    inc dword ptr [rip + halts]
    jmp 1b
2:  cli
    hlt

irq5:
    push rax
    inc dword ptr [rip + ticks]
    mov al, 0x20
    out 0x20, al
    pop rax
    iretq
{IDT}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_line_raised_from_another_thread_ends_a_hlt_wait(backend: str) -> None:
    m = PcMachine(uart_sink=lambda _: None)
    vcpu = m.vcpu(m.load(assemble(KICKED_GUEST)), backend)
    target = LOAD_ADDR + 8 + 4  # RESULTS' second field
    raised = threading.Event()

    def device_thread() -> None:
        while not m.vm.memory.read_int(target, 4):  # the guest has unmasked IRQ5
            if raised.wait(0.01):
                return
        time.sleep(0.2)  # long enough for any backend to be in its HLT wait
        IrqLine(m.pc.pic, 5).pulse()
        m.vm.kick()
        raised.set()

    thread = threading.Thread(target=device_thread, daemon=True)
    thread.start()
    try:
        with deadline(60):
            result = m.run(vcpu)
    finally:
        raised.set()
        thread.join()
        close = getattr(vcpu, "close", None)
        if close is not None:
            close()
    v = dict(
        zip(RESULT_FIELDS.split(), RESULTS.unpack(m.vm.memory.read(LOAD_ADDR + 8, RESULTS.size)), strict=True)
    )
    assert result.reason == "hlt" and (v["ticks"], v["halts"], v["strays"]) == (1, 1, 0), (result, v)


# Guests whose results do not depend on timing leave the same bytes on both vCPUs. (Not TWO_AT_ONCE: where
# in its loop the second interrupt lands depends on when each vCPU sees the window open after IRET.)
DETERMINISTIC = {"boundary": BOUNDARY_GUEST, "rtc": RTC_GUEST}


@pytest.mark.skipif(KVM_WHY_NOT is not None, reason=f"KVM: {KVM_WHY_NOT}")
@pytest.mark.parametrize("guest", list(DETERMINISTIC))
def test_both_vcpus_leave_the_same_results(guest: str) -> None:
    unicorn, kvm = (run_pc(DETERMINISTIC[guest], backend) for backend in ("unicorn", "kvm"))
    assert unicorn.values == kvm.values
    assert unicorn.exits == kvm.exits and unicorn.result == kvm.result
