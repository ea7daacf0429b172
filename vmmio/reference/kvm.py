"""KVM as a reference vCPU: the same guest and devices, with Linux's own instruction emulator in the loop.

This is not an execution backend for vmmio's kernel. KVM decodes and emulates the faulting instruction
itself and reports only the device accesses, so there are no raw faults to hand over. `KvmVcpu` instead
speaks vmmio's boundary directly (`run(entry) -> exit`, the same exit and entry types), which lets the
machine run one guest on both and compare the MMIO/port traces: that comparison is what it is for.

Exit mapping (KVM_RUN's exit_reason -> vmmio exit):

- KVM_EXIT_MMIO -> `MmioExit`. For a read, the fulfillment's data is copied into kvm_run.mmio.data before
  the next KVM_RUN, which completes the instruction. Linux splits a page-crossing access at the page
  boundary (and anything wider than 8 bytes into 8-byte fragments), so it can report 3-, 5-, 6- or
  7-byte accesses, which vmmio's ABI does not have. Such a piece is *presented* as the naturally aligned
  power-of-two pieces vmmio's kernel would emit (one `MmioExit` each, in address order) and answered to
  KVM as the one piece it asked for; `raw_exits` (opt-in, `record_raw=True`) keeps what Linux really reported.
- An MMIO exit in a region the `GuestMemory` serves with an in-kernel handler is served in place and
  never reaches the caller, as with vmmio's kernel.
- KVM_EXIT_IO -> one `InoutExit` per element: string I/O arrives as one exit with `count` > 1 (e.g. INS
  with KVM's read-ahead); the elements are handed out one per `run` call, in order, and KVM is
  re-entered once all are answered.
- KVM_EXIT_HLT -> `HltExit` (with a chipset, only when nothing could wake the guest: see below);
  KVM_EXIT_SHUTDOWN (triple fault) -> `ShutdownExit`.
- KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION -> `InstEmulExit(rip, bytes at CS:RIP read
  from guest RAM, NOT_EMULATED)` (FETCH_FAILED when no byte at RIP is RAM). KVM says only that its
  emulator failed, not why.
- KVM_RUN interrupted (EINTR: a signal, or `immediate_exit`), KVM_EXIT_INTR, KVM_EXIT_IRQ_WINDOW_OPEN
  -> `SuspendedExit` (with a chipset, only for a stop or an exit_consistent entry).
- Anything else (FAIL_ENTRY, UNKNOWN, EXCEPTION, other internal errors such as an exception delivery
  that hit MMIO, SYSTEM_EVENT, ...) raises `KvmExitError` with the raw fields: vmmio's ABI has no honest
  exit for them.

Entries follow `vmmio.vmm.vcpu.Vcpu.run`: a fulfillment must match the pending request (gpa/port, size,
direction, written data echoed); a mismatch, a fulfillment with nothing pending, or `Default` while a
request is pending raises `KvmEntryError` (an `EntryError`) and changes nothing. Where KVM differs:

- exit_consistent: KVM's documented way is KVM_RUN with kvm_run.immediate_exit = 1, which completes the
  pending operation and returns before running more guest code. If the instruction needs another device
  access first (the write of a read-modify-write, the next element of a REP string instruction, which
  Linux keeps emulating), that arrives as a normal exit, and the request holds for the entries that
  answer it (as in vmmio's kernel, it need not be repeated); once KVM stops, `run` returns `SuspendedExit`.
  `Default(exit_consistent=True)` with nothing pending returns `SuspendedExit` without entering KVM.
- Discard: not possible. Linux's emulator holds the instruction's progress in the kernel and completes
  it on the next KVM_RUN whatever userspace does (for a write the exit is only reported once the
  instruction has retired). `Discard` raises `KvmEntryError`, leaving the request pending.
- In-kernel port devices (`Vm.ports`) are served only when passed as `ports=`.

Interrupts and time, as a userspace-irqchip VMM has them (no KVM_CREATE_IRQCHIP): given a `chipset` with
interrupts (`Machine.vcpu` passes its `Vm`), the vCPU uses the Vm's own controllers, timers and clock and
the rules vmmio's kernel uses (`vmmio.devices.interrupt_window`), entry by entry:
- Before every KVM_RUN at an instruction boundary, due timers fire and the pending vector goes in with
  KVM_INTERRUPT when kvm_run.ready_for_interrupt_injection and if_flag (as of the last exit) allow it.
  The entry that answers a request is not a boundary (KVM finishes the instruction first): when an
  interrupt waits behind it, that KVM_RUN only finishes the instruction (immediate_exit) and the
  interrupt goes in at the boundary right behind it, as in vmmio's kernel.
- An interrupt the guest cannot take sets request_interrupt_window: KVM_EXIT_IRQ_WINDOW_OPEN comes back
  when the guest opens it (STI, IRET), so there is no poll as on Unicorn. PVM, the software KVM this was
  built on, does not report a window that is already open when KVM finishes an instruction, hence the
  immediate_exit above.
- A POSIX timer signals the vCPU's thread at the next deadline, or at most `max_slice_ns` on
  (`vmmio.reference.kick`): a guest spinning without exits still sees its timers.
- KVM_EXIT_HLT with IF set waits for the next deadline or a wakeup and runs on; KVM_EXIT_SET_TPR (a
  lowered CR8) is passed over: the TPR that counts is the local APIC page's.
Clocks: the PIT, RTC and APIC timer count from the chipset's clock (the Vm's `HostClock` unless the
machine gives another), as on Unicorn; the kick timer turns their deadlines into CLOCK_MONOTONIC delays.
What KVM keeps in the kernel stays there: the TSC and kvmclock a guest may read run on host time.

CPUID: the guest is given what KVM supports, less what this userspace irqchip cannot back
(`HIDDEN_CPUID`: x2APIC, the TSC-deadline timer, and the paravirtual features KVM serves only with its
in-kernel APIC, whose MSRs it would refuse), less CX16 where KVM cannot run CMPXCHG16B
(`cmpxchg16b_runs`). PVM, the software KVM, runs guest kernel code through Linux's emulator
(`kernel_mode_runs` probes for that) and reports some leaf 1 and 7 bits of the host whatever
KVM_SET_CPUID2 says, XSAVE among them, which its emulator cannot run: a Linux guest there needs
`clearcpuid=` on its command line, and stops anyway at INT3 (its int3 self-test), which Linux's
emulator cannot deliver in long mode.

What Linux does that vmmio's kernel does not (tests/test_backend_kvm.py pins each down):
- The write exit of an instruction comes after it has retired (RIP already past it); reads stop with
  RIP at the instruction.
- INS reads ahead: all port reads of a REP INS first (one KVM_EXIT_IO with count), then, for an MMIO
  destination, the buffered data as merged writes of up to 8 bytes.
- CLFLUSH of an MMIO address reads one byte from the device.
- KVM_INTERNAL_ERROR_EMULATION does not give the instruction length: `InstEmulExit.insn` is 15 bytes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import mmap
import os
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vmmio.abi import (
    MAX_INSN_LEN,
    AbiError,
    Default,
    Device,
    Discard,
    EntryError,
    HltExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioExit,
    ShutdownExit,
    SuspendedExit,
    VmEntry,
    VmExit,
    fulfillment_data,
    split_access,
)
from vmmio.devices.interrupt_window import Chipset, Halt, offer_interrupt, wait_halted
from vmmio.memory import PAGE_MASK, PAGE_SIZE, GuestMemory, HandlerRegion, RamRegion, RangeMap
from vmmio.reference.kick import RunKicker
from vmmio.x86.cpuid import CpuidTable
from vmmio.x86.pagetables import PAGE_2M, PageTables
from vmmio.x86.state import CR0_PE, Control, CpuState, Regs, Segment, VectorState, long_mode_control

__all__ = [
    "CMPXCHG16B_PROBE",
    "INT3_PROBE",
    "KvmEntryError",
    "KvmError",
    "KvmExitError",
    "KvmIo",
    "KvmMmio",
    "KvmSregs",
    "KvmUnavailable",
    "KvmVcpu",
    "cmpxchg16b_runs",
    "kernel_mode_runs",
    "kvm_usable",
]

KVM_DEVICE: Final = "/dev/kvm"
KVM_API_VERSION: Final = 12


# --- ioctl numbers (asm-generic _IOC encoding; facts from include/uapi/linux/kvm.h) -----------------


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | 0xAE << 8 | nr  # KVMIO = 0xAE


_NONE, _WRITE, _READ = 0, 1, 2

KVM_GET_API_VERSION: Final = _ioc(_NONE, 0x00, 0)
KVM_CREATE_VM: Final = _ioc(_NONE, 0x01, 0)
KVM_CHECK_EXTENSION: Final = _ioc(_NONE, 0x03, 0)
KVM_GET_VCPU_MMAP_SIZE: Final = _ioc(_NONE, 0x04, 0)
KVM_GET_SUPPORTED_CPUID: Final = _ioc(_READ | _WRITE, 0x05, 8)
KVM_CREATE_VCPU: Final = _ioc(_NONE, 0x41, 0)
KVM_SET_USER_MEMORY_REGION: Final = _ioc(_WRITE, 0x46, 32)
KVM_RUN: Final = _ioc(_NONE, 0x80, 0)
KVM_GET_REGS: Final = _ioc(_READ, 0x81, 144)
KVM_SET_REGS: Final = _ioc(_WRITE, 0x82, 144)
KVM_GET_SREGS: Final = _ioc(_READ, 0x83, 312)
KVM_SET_SREGS: Final = _ioc(_WRITE, 0x84, 312)
KVM_TRANSLATE: Final = _ioc(_READ | _WRITE, 0x85, 24)
KVM_SET_CPUID2: Final = _ioc(_WRITE, 0x90, 8)
KVM_GET_XSAVE: Final = _ioc(_READ, 0xA4, 4096)
KVM_SET_XSAVE: Final = _ioc(_WRITE, 0xA5, 4096)
KVM_INTERRUPT: Final = _ioc(_WRITE, 0x86, 4)
KVM_GET_XCRS: Final = _ioc(_READ, 0xA6, 392)
KVM_SET_XCRS: Final = _ioc(_WRITE, 0xA7, 392)

KVM_CAP_USER_MEMORY: Final = 3
KVM_CAP_EXT_CPUID: Final = 7
KVM_CAP_IMMEDIATE_EXIT: Final = 136
REQUIRED_CAPS: Final = {
    "KVM_CAP_USER_MEMORY": KVM_CAP_USER_MEMORY,
    "KVM_CAP_EXT_CPUID": KVM_CAP_EXT_CPUID,
    "KVM_CAP_IMMEDIATE_EXIT": KVM_CAP_IMMEDIATE_EXIT,
}

# Exit reasons and sub-codes.
KVM_EXIT_UNKNOWN: Final = 0
KVM_EXIT_EXCEPTION: Final = 1
KVM_EXIT_IO: Final = 2
KVM_EXIT_HLT: Final = 5
KVM_EXIT_MMIO: Final = 6
KVM_EXIT_IRQ_WINDOW_OPEN: Final = 7
KVM_EXIT_SHUTDOWN: Final = 8
KVM_EXIT_FAIL_ENTRY: Final = 9
KVM_EXIT_INTR: Final = 10
KVM_EXIT_SET_TPR: Final = 11
KVM_EXIT_INTERNAL_ERROR: Final = 17
KVM_EXIT_SYSTEM_EVENT: Final = 24
KVM_EXIT_IO_IN: Final = 0
KVM_INTERNAL_ERROR_EMULATION: Final = 1
EXIT_NAMES: Final = {
    0: "UNKNOWN",
    1: "EXCEPTION",
    2: "IO",
    3: "HYPERCALL",
    4: "DEBUG",
    5: "HLT",
    6: "MMIO",
    7: "IRQ_WINDOW_OPEN",
    8: "SHUTDOWN",
    9: "FAIL_ENTRY",
    10: "INTR",
    11: "SET_TPR",
    16: "NMI",
    17: "INTERNAL_ERROR",
    24: "SYSTEM_EVENT",
    29: "X86_RDMSR",
    30: "X86_WRMSR",
    33: "X86_BUS_LOCK",
    37: "NOTIFY",
}

# --- struct layouts (x86-64) ------------------------------------------------------------------------

# kvm_run: request_interrupt_window u8, immediate_exit u8, pad[6], exit_reason u32,
# ready_for_interrupt_injection u8, if_flag u8, flags u16, cr8 u64, apic_base u64; the exit union at 32.
RUN_REQUEST_INTERRUPT_WINDOW: Final = 0
RUN_IMMEDIATE_EXIT: Final = 1
RUN_EXIT_REASON: Final = 8
RUN_READY_FOR_INJECTION: Final = 12
RUN_IF_FLAG: Final = 13
RUN_UNION: Final = 32
_REASON = struct.Struct("<I")
_MMIO = struct.Struct("<Q8sIB")  # phys_addr, data[8], len, is_write
MMIO_DATA_OFFSET: Final = RUN_UNION + 8
_IO = struct.Struct("<BBHIQ")  # direction, size, port, count, data_offset (from the start of kvm_run)
_INTERNAL = struct.Struct("<II")  # suberror, ndata; then u64 data[ndata]
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
# With no deadline a spinning guest still leaves KVM_RUN this often, to see interrupts raised elsewhere.
MAX_SLICE_NS: Final = 50_000_000

# kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags; vmmio numbers GPRs as the hardware does.
_REGS = struct.Struct("<18Q")
_KVM_TO_HW: Final = (0, 3, 1, 2, 6, 7, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15)

# kvm_segment: base u64, limit u32, selector u16, type, present, dpl, db, s, l, g, avl, unusable, pad.
_SEG = struct.Struct("<QIH10B")
# kvm_dtable: base u64, limit u16, pad[3] u16.
_DTABLE = struct.Struct("<QH6x")
# kvm_sregs: cs ds es fs gs ss tr ldt, gdt idt, cr0 cr2 cr3 cr4 cr8 efer apic_base, interrupt_bitmap[4].
_SREGS_SIZE: Final = 312
_SREGS_SEGS: Final = 0
_SREGS_GDT: Final = 8 * _SEG.size
_SREGS_CTL: Final = _SREGS_GDT + 2 * _DTABLE.size
_CTL = struct.Struct("<7Q")
# vmmio's segment order is the hardware's (ES CS SS DS FS GS); kvm_sregs lists cs ds es fs gs ss.
_HW_TO_SREGS_SLOT: Final = (2, 0, 5, 1, 3, 4)

# kvm_cpuid2: nent u32, pad u32, then kvm_cpuid_entry2 (40 bytes) entries.
_CPUID_ENTRY_SIZE: Final = 40
_CPUID_ECX: Final = 20  # function, index, flags, eax, ebx, then ecx
CPUID1_ECX_CX16: Final = 1 << 13
CPUID1_ECX_X2APIC: Final = 1 << 21
CPUID1_ECX_TSC_DEADLINE: Final = 1 << 24
KVM_CPUID_FEATURES: Final = 0x4000_0001  # EAX: the KVM_FEATURE_* bits (paravirtual interfaces)
KVM_FEATURE_ASYNC_PF: Final = 1 << 4
KVM_FEATURE_PV_EOI: Final = 1 << 6
KVM_FEATURE_PV_UNHALT: Final = 1 << 7
KVM_FEATURE_ASYNC_PF_VMEXIT: Final = 1 << 10
KVM_FEATURE_PV_SEND_IPI: Final = 1 << 11
KVM_FEATURE_ASYNC_PF_INT: Final = 1 << 14
# What the guest is not told, by (leaf, byte offset of the register in kvm_cpuid_entry2). The local APIC
# is a userspace model here (no KVM_CREATE_IRQCHIP), so what only KVM's in-kernel APIC backs is hidden,
# as a CPU or hypervisor without it would report: x2APIC (its MSRs), the TSC-deadline timer, and the
# paravirtual features KVM serves only with its own APIC (asynchronous page faults, whose "page ready"
# is an APIC interrupt; PV EOI; PV unhalt and PV IPIs, which are APIC IPIs; QEMU hides PV_UNHALT
# without an in-kernel irqchip too). KVM refuses their MSRs otherwise, and Linux says so at boot.
HIDDEN_CPUID: Final = {
    (1, _CPUID_ECX): CPUID1_ECX_X2APIC | CPUID1_ECX_TSC_DEADLINE,
    (KVM_CPUID_FEATURES, 12): KVM_FEATURE_ASYNC_PF
    | KVM_FEATURE_PV_EOI
    | KVM_FEATURE_PV_UNHALT
    | KVM_FEATURE_ASYNC_PF_VMEXIT
    | KVM_FEATURE_PV_SEND_IPI
    | KVM_FEATURE_ASYNC_PF_INT,
}
# kvm_xsave: the XSAVE image of the guest's FPU state in the standard (uncompacted) format, 4096 bytes: the
# legacy area (FCW, FSW, abridged FTW, MXCSR, ST0-7 in stack order, XMM0-15), the header's XSTATE_BV at
# 512, then the components at the offsets CPUID.(0xD, n).EBX gives: AVX (YMM_Hi128) 2, opmask 5,
# ZMM_Hi256 6, Hi16_ZMM 7.
XSAVE_SIZE: Final = 4096
_XSTATE_BV: Final = 512
_XSAVE_AVX, _XSAVE_OPMASK, _XSAVE_ZMM_HI256, _XSAVE_HI16_ZMM = 2, 5, 6, 7
# kvm_xcrs: nr_xcrs u32, flags u32, then kvm_xcr (xcr u32, reserved u32, value u64) x 16, padding.
_XCRS_HEAD = struct.Struct("<II")
_XCR = struct.Struct("<IIQ")
# kvm_translation: linear_address u64 in; physical_address u64, valid, writeable, usermode u8 out.
_TRANSLATION = struct.Struct("<QQBBB5x")
# kvm_userspace_memory_region: slot u32, flags u32, guest_phys_addr, memory_size, userspace_addr u64.
_MEMREGION = struct.Struct("<IIQQQ")

_SUSPENDED: Final = SuspendedExit()
_HLT: Final = HltExit()
_SHUTDOWN: Final = ShutdownExit()


class KvmError(OSError):
    """KVM refused a request (an ioctl failed, or the API is not the one this module speaks)."""


class KvmUnavailable(KvmError):
    """/dev/kvm is missing, not accessible, or lacks a capability this backend needs."""


class KvmExitError(RuntimeError):
    """KVM stopped for a reason vmmio's ABI has no exit for; the raw fields say which."""

    def __init__(self, reason: int, detail: str) -> None:
        name = EXIT_NAMES.get(reason, "?")
        super().__init__(f"KVM exit {reason} ({name}): {detail}")
        self.reason = reason
        self.detail = detail


class KvmEntryError(EntryError):
    """The entry does not fit the pending request (or KVM cannot do it); nothing was changed."""


@dataclass(frozen=True, slots=True)
class KvmMmio:
    """One KVM_EXIT_MMIO exactly as Linux reported it (length may be 1-8, data raw bytes)."""

    gpa: int
    length: int
    is_write: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class KvmIo:
    """One KVM_EXIT_IO exactly as Linux reported it: `count` elements, OUT data as raw bytes."""

    port: int
    size: int
    is_in: bool
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class KvmSregs:
    """KVM_GET_SREGS as vmmio values: the Control plus what Control does not hold."""

    control: Control
    cr8: int
    apic_base: int


# --- small helpers ----------------------------------------------------------------------------------


def _ioctl(fd: int, request: int, arg: int | bytearray = 0, what: str = "") -> int:
    """An ioctl whose failure names the request."""
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        if e.errno is None:  # raised by a signal handler, not by the ioctl
            raise
        raise KvmError(e.errno, f"{what or hex(request)}: {os.strerror(e.errno)}") from None


def _ioctl_buf(fd: int, request: int, buf: bytearray, what: str) -> None:
    """An ioctl on a struct passed by pointer; a >1024-byte or in/out buffer is mutated in place."""
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError as e:
        if e.errno is None:
            raise
        raise KvmError(e.errno, f"{what}: {os.strerror(e.errno)}") from None


def kvm_usable() -> str | None:
    """None when /dev/kvm can run a vCPU here, else why not (for test skips and the CLI)."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{KVM_DEVICE}: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return f"KVM API version {version}, this backend speaks {KVM_API_VERSION}"
        for name, cap in REQUIRED_CAPS.items():
            if fcntl.ioctl(fd, KVM_CHECK_EXTENSION, cap) <= 0:
                return f"KVM lacks {name}"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        try:
            vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
            os.close(vcpu)
        finally:
            os.close(vm)
    except OSError as e:
        return f"KVM ioctl failed: {e.strerror}"
    finally:
        os.close(fd)
    return None


def _mmap_address(mem: mmap.mmap) -> int:
    """Host address of an anonymous mmap, for KVM_SET_USER_MEMORY_REGION (no copy is made)."""
    ref = ctypes.c_char.from_buffer(mem)
    try:
        return ctypes.addressof(ref)
    finally:
        del ref  # release the buffer export at once, so the owner can still close the mapping


def _pack_segment(seg: Segment) -> bytes:
    return _SEG.pack(
        seg.base,
        seg.limit,
        seg.selector,
        seg.type,
        seg.present,
        seg.dpl,
        seg.db,
        seg.s,
        seg.l,
        seg.g,
        0,
        seg.unusable,
        0,
    )


def _unpack_segment(raw: bytes | bytearray, offset: int) -> Segment:
    base, limit, sel, typ, present, dpl, db, s, l, g, _avl, unusable, _ = _SEG.unpack_from(raw, offset)
    return Segment(
        sel, base, limit, typ, bool(s), dpl, bool(present), bool(db), bool(l), bool(g), bool(unusable)
    )


# --- the vCPU ---------------------------------------------------------------------------------------


class KvmVcpu:
    """One KVM vCPU over vmmio's GuestMemory, with vmmio's `run(entry) -> exit` boundary.

    Guest RAM is each region's own mmap registered as a memory slot: guest and host see the same bytes.
    Every GPA outside a RAM region is an MMIO hole, so KVM's emulator turns accesses there into exits.
    RAM regions are registered when the vCPU is built; regions added later are holes to KVM.
    The guest's CPUID is what KVM supports less `HIDDEN_CPUID`, and less CX16 where `cmpxchg16b_runs`
    finds this KVM unable to run CMPXCHG16B (`probe_cpuid=False` skips that probe: the probe's own vCPU).
    """

    def __init__(
        self,
        memory: GuestMemory,
        state: CpuState,
        *,
        ports: RangeMap[Device] | None = None,
        chipset: Chipset | None = None,
        record_raw: bool = False,
        probe_cpuid: bool = True,
    ) -> None:
        self.memory = memory
        self.ports: RangeMap[Device] = ports if ports is not None else RangeMap("port range")
        self.chipset = chipset
        self.max_slice_ns = MAX_SLICE_NS  # the longest KVM_RUN with a chipset, deadline or not
        self.raw_exits: list[KvmMmio | KvmIo] | None = [] if record_raw else None
        # Requests of the KVM exit being answered: (request, offset in kvm_run where a read's data goes,
        # -1 for a write), the next one to hand out, and the one handed out and not yet fulfilled.
        self._parts: list[tuple[MmioExit | InoutExit, int]] = []
        self._next = 0
        self._pending: MmioExit | InoutExit | None = None
        self._stop_requested = False
        self._consistent = False  # an entry asked for exit_consistent: it holds until KVM has stopped
        self._boundary = True  # KVM stands between two instructions (nothing of one is in flight)
        self._kicker: RunKicker | None = None
        self._fds: list[int] = []
        self._run: mmap.mmap | None = None
        self._maps: list[mmap.mmap] = []
        self._finalizer = weakref.finalize(self, _release, self._fds, self._maps)
        self._xsave_offsets: dict[int, int] = {}  # XSAVE component -> offset in the standard format
        try:
            self._open(memory, probe_cpuid)
            self.set_control(state.control)
            self.set_regs(state.regs)
        except BaseException:
            self.close()
            raise

    # -- setup ------------------------------------------------------------------------------------------

    def _open(self, memory: GuestMemory, probe: bool) -> None:
        try:
            kvm = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailable(e.errno, f"{KVM_DEVICE}: {e.strerror}") from None
        self._fds.append(kvm)
        version = _ioctl(kvm, KVM_GET_API_VERSION, what="KVM_GET_API_VERSION")
        if version != KVM_API_VERSION:
            raise KvmUnavailable(errno.ENOTSUP, f"KVM API version {version}; expected {KVM_API_VERSION}")
        for name, cap in REQUIRED_CAPS.items():
            if _ioctl(kvm, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION") <= 0:
                raise KvmUnavailable(errno.ENOTSUP, f"KVM lacks {name}")
        self._vm = _ioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        self._fds.append(self._vm)
        for slot, region in enumerate(memory.ram):
            desc = _MEMREGION.pack(slot, 0, region.gpa, region.size, _mmap_address(region.mem))
            _ioctl_buf(self._vm, KVM_SET_USER_MEMORY_REGION, bytearray(desc), "KVM_SET_USER_MEMORY_REGION")
        self._fd = _ioctl(self._vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        self._fds.append(self._fd)
        self._set_cpuid(kvm, probe)
        size = _ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, what="KVM_GET_VCPU_MMAP_SIZE")
        self._run = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._maps.append(self._run)
        self._kicker = RunKicker(self._fd)

    def _set_cpuid(self, kvm: int, probe: bool) -> None:
        """Give the vCPU the CPUID leaves KVM supports (KVM_SET_SREGS rejects EFER.LME/NXE without LM/NX),
        less what the guest must not be told (`HIDDEN_CPUID`; CX16 if `probe` finds it unusable)."""
        nent = 128
        while True:
            buf = bytearray(8 + nent * _CPUID_ENTRY_SIZE)
            struct.pack_into("<I", buf, 0, nent)
            try:
                fcntl.ioctl(kvm, KVM_GET_SUPPORTED_CPUID, buf, True)
                break
            except OSError as e:
                if e.errno != errno.E2BIG or nent >= 1 << 14:
                    raise KvmError(e.errno, f"KVM_GET_SUPPORTED_CPUID: {e.strerror}") from None
                nent *= 2
        hidden = dict(HIDDEN_CPUID)
        if probe and not cmpxchg16b_runs():
            hidden[1, _CPUID_ECX] |= CPUID1_ECX_CX16
        count = struct.unpack_from("<I", buf, 0)[0]
        leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        for n in range(count):
            at = 8 + n * _CPUID_ENTRY_SIZE
            function, index = struct.unpack_from("<II", buf, at)
            if function == 0xD and 2 <= index < 8:
                self._xsave_offsets[index] = struct.unpack_from("<I", buf, at + 16)[0]  # EBX
            for (leaf, reg), bits in hidden.items():
                if function == leaf:
                    struct.pack_into("<I", buf, at + reg, struct.unpack_from("<I", buf, at + reg)[0] & ~bits)
            function, index, _flags, eax, ebx, ecx, edx = struct.unpack_from("<7I", buf, at)
            leaves[function, index] = (eax, ebx, ecx, edx)
        _ioctl_buf(self._fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")
        self.cpuid = CpuidTable(leaves)
        """What CPUID reports to the guest: the leaves KVM supports, less `HIDDEN_CPUID` (and CX16 where
        this KVM cannot run CMPXCHG16B: `cmpxchg16b_runs`)."""

    # -- state ------------------------------------------------------------------------------------------

    def get_regs(self) -> Regs:
        """GPRs (hardware numbering), RIP and RFLAGS as KVM holds them now."""
        buf = bytearray(_REGS.size)
        _ioctl_buf(self._fd, KVM_GET_REGS, buf, "KVM_GET_REGS")
        values = _REGS.unpack(buf)
        gprs = [0] * 16
        for k, hw in enumerate(_KVM_TO_HW):
            gprs[hw] = values[k]
        return Regs(gprs, values[16], values[17])

    def _check_idle(self, what: str) -> None:
        # Linux's emulator keeps its own copy of the instruction's state until the request is answered.
        if self._pending is not None:
            raise KvmError(errno.EBUSY, f"{what} while {self._pending} is pending")

    def set_regs(self, regs: Regs) -> None:
        """Write all GPRs, RIP and RFLAGS (only between instructions: not while a request is pending)."""
        self._check_idle("set_regs")
        values = [regs.gprs[hw] for hw in _KVM_TO_HW] + [regs.rip, regs.rflags]
        _ioctl_buf(self._fd, KVM_SET_REGS, bytearray(_REGS.pack(*values)), "KVM_SET_REGS")
        self._stale_readiness()

    def get_sregs(self) -> KvmSregs:
        """Segment caches, descriptor tables, CRs and EFER as KVM holds them now."""
        buf = self._get_sregs_raw()
        segs = [_unpack_segment(buf, _SEG.size * _HW_TO_SREGS_SLOT[n]) for n in range(6)]
        gdt = _DTABLE.unpack_from(buf, _SREGS_GDT)
        idt = _DTABLE.unpack_from(buf, _SREGS_GDT + _DTABLE.size)
        cr0, cr2, cr3, cr4, cr8, efer, apic_base = _CTL.unpack_from(buf, _SREGS_CTL)
        ctl = Control(
            cr0=cr0,
            cr2=cr2,
            cr3=cr3,
            cr4=cr4,
            efer=efer,
            cpl=segs[2].dpl if cr0 & CR0_PE else 0,  # SS.DPL is the CPL in protected mode
            segs=segs,
            gdtr=(gdt[0], gdt[1]),
            idtr=(idt[0], idt[1]),
            tr=_unpack_segment(buf, 6 * _SEG.size),
            ldtr=_unpack_segment(buf, 7 * _SEG.size),
            xcr0=self.get_xcr0(),
        )
        return KvmSregs(ctl, cr8, apic_base)

    def get_control(self) -> Control:
        return self.get_sregs().control

    def _get_sregs_raw(self) -> bytearray:
        buf = bytearray(_SREGS_SIZE)
        _ioctl_buf(self._fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS")
        return buf

    def set_control(self, ctl: Control) -> None:
        """CR0/CR2/CR3/CR4/EFER, the six segment caches, GDTR/IDTR, TR and LDTR.

        CR8 and the APIC base keep KVM's values. The CPL is what KVM derives from the segment caches
        (SS.DPL); `ctl.cpl`, `ctl.pdptes` and `ctl.pkru` are not used: KVM loads the PDPTEs from CR3.
        `ctl.xcr0` is not loaded either (KVM refuses an XCR0 its CPUID lacks): `set_xcr0` loads it.
        """
        self._check_idle("set_control")
        buf = self._get_sregs_raw()
        for n, seg in enumerate(ctl.segs):
            at = _SEG.size * _HW_TO_SREGS_SLOT[n]
            buf[at : at + _SEG.size] = _pack_segment(seg)
        buf[6 * _SEG.size : 7 * _SEG.size] = _pack_segment(ctl.tr)
        buf[7 * _SEG.size : 8 * _SEG.size] = _pack_segment(ctl.ldtr)
        _DTABLE.pack_into(buf, _SREGS_GDT, *ctl.gdtr)
        _DTABLE.pack_into(buf, _SREGS_GDT + _DTABLE.size, *ctl.idtr)
        _cr0, _cr2, _cr3, _cr4, cr8, _efer, apic_base = _CTL.unpack_from(buf, _SREGS_CTL)
        _CTL.pack_into(buf, _SREGS_CTL, ctl.cr0, ctl.cr2, ctl.cr3, ctl.cr4, cr8, ctl.efer, apic_base)
        _ioctl_buf(self._fd, KVM_SET_SREGS, buf, "KVM_SET_SREGS")
        self._stale_readiness()

    def get_xcr0(self) -> int:
        """XCR0 as the guest's XSETBV (or `set_xcr0`) left it (KVM_GET_XCRS)."""
        buf = bytearray(392)
        _ioctl_buf(self._fd, KVM_GET_XCRS, buf, "KVM_GET_XCRS")
        count = _XCRS_HEAD.unpack_from(buf)[0]
        for n in range(count):
            xcr, _reserved, value = _XCR.unpack_from(buf, _XCRS_HEAD.size + n * _XCR.size)
            if xcr == 0:
                return int(value)
        return 1

    def set_xcr0(self, value: int) -> None:
        """Load XCR0 (KVM_SET_XCRS); KVM refuses components its CPUID for the guest does not have."""
        self._check_idle("set_xcr0")
        buf = bytearray(392)
        _XCRS_HEAD.pack_into(buf, 0, 1, 0)
        _XCR.pack_into(buf, _XCRS_HEAD.size, 0, 0, value)
        _ioctl_buf(self._fd, KVM_SET_XCRS, buf, "KVM_SET_XCRS")

    def get_vector(self) -> VectorState:
        """The vector registers from KVM_GET_XSAVE: XMM/YMM/ZMM0-31, k0-7, MXCSR, the x87 registers (MMX)
        with FSW and the abridged tags; what a component not in use (XSTATE_BV) holds is its reset
        value. Components the guest's CPUID lacks stay zero."""
        buf = bytearray(XSAVE_SIZE)
        _ioctl_buf(self._fd, KVM_GET_XSAVE, buf, "KVM_GET_XSAVE")
        bv = _U64.unpack_from(buf, _XSTATE_BV)[0]
        vec = VectorState()
        vec.mxcsr = struct.unpack_from("<I", buf, 24)[0]
        if bv & 1:
            vec.fsw, vec.ftw = struct.unpack_from("<HB", buf, 2)
            top = vec.fsw >> 11 & 7
            for i in range(8):  # ST(i) is R[(TOP + i) mod 8]
                r = int.from_bytes(buf[32 + 16 * i : 42 + 16 * i], "little")
                vec.mm[(top + i) & 7], vec.mm_hi[(top + i) & 7] = r & (1 << 64) - 1, r >> 64
        parts = self._xsave_parts(bv)
        for n in range(32):
            z = 0
            for at, lo, size in parts(n):
                z |= int.from_bytes(buf[at : at + size], "little") << lo
            vec.zmm[n] = z
        if bv >> _XSAVE_OPMASK & 1 and _XSAVE_OPMASK in self._xsave_offsets:
            at = self._xsave_offsets[_XSAVE_OPMASK]
            vec.k = list(struct.unpack_from("<8Q", buf, at))
        return vec

    def set_vector(self, vec: VectorState) -> None:
        """Load the vector registers (KVM_SET_XSAVE) as far as the guest's CPUID has them; FCW is reset
        (0x37F). Everything XCR0 may hold is marked in use, so KVM loads every register given."""
        self._check_idle("set_vector")
        buf = bytearray(XSAVE_SIZE)
        _ioctl_buf(self._fd, KVM_GET_XSAVE, buf, "KVM_GET_XSAVE")
        struct.pack_into("<HHB", buf, 0, 0x37F, vec.fsw, vec.ftw)
        struct.pack_into("<I", buf, 24, vec.mxcsr)
        top = vec.fsw >> 11 & 7
        for i in range(8):
            r = (vec.mm[(top + i) & 7] | vec.mm_hi[(top + i) & 7] << 64).to_bytes(16, "little")
            buf[32 + 16 * i : 48 + 16 * i] = r
        bv = 3 | sum(1 << c for c in self._xsave_offsets)
        parts = self._xsave_parts(bv)
        for n in range(32):
            for at, lo, size in parts(n):
                buf[at : at + size] = (vec.zmm[n] >> lo & (1 << 8 * size) - 1).to_bytes(size, "little")
        if _XSAVE_OPMASK in self._xsave_offsets:
            struct.pack_into("<8Q", buf, self._xsave_offsets[_XSAVE_OPMASK], *vec.k)
        _U64.pack_into(buf, _XSTATE_BV, bv)
        _ioctl_buf(self._fd, KVM_SET_XSAVE, buf, "KVM_SET_XSAVE")

    def _xsave_parts(self, bv: int) -> Callable[[int], list[tuple[int, int, int]]]:
        """For register n: (offset in the image, low bit in the register, bytes) of each piece the image
        holds of it among the components in `bv`."""
        off = self._xsave_offsets

        def parts(n: int) -> list[tuple[int, int, int]]:
            if n >= 16:
                c = _XSAVE_HI16_ZMM
                return [(off[c] + 64 * (n - 16), 0, 64)] if bv >> c & 1 and c in off else []
            out = [(160 + 16 * n, 0, 16)] if bv & 2 else []
            for c, lo, size in ((_XSAVE_AVX, 128, 16), (_XSAVE_ZMM_HI256, 256, 32)):
                if bv >> c & 1 and c in off:
                    out.append((off[c] + size * n, lo, size))
            return out

        return parts

    def translate(self, linear: int) -> int | None:
        """The GPA the guest's paging maps `linear` to (KVM_TRANSLATE), or None if not mapped."""
        buf = bytearray(_TRANSLATION.pack(linear, 0, 0, 0, 0))
        _ioctl_buf(self._fd, KVM_TRANSLATE, buf, "KVM_TRANSLATE")
        _, gpa, valid, _, _ = _TRANSLATION.unpack(buf)
        return gpa if valid else None

    @property
    def pending(self) -> MmioExit | InoutExit | None:
        """The request the next entry must fulfill, if any."""
        return self._pending

    # -- the boundary ---------------------------------------------------------------------------------

    def run(self, entry: VmEntry | None = None) -> VmExit:
        """Apply `entry`, let KVM finish what it has in flight, run the guest, return the next exit."""
        pending = self._pending
        if pending is None:
            if entry is not None and type(entry) is not Default:
                raise KvmEntryError(f"{type(entry).__name__} entry, but no request is pending")
            if entry is not None and entry.exit_consistent:
                return _SUSPENDED  # nothing in flight: the state already is consistent
            return self._enter(False)
        if entry is None or type(entry) is Default:
            raise KvmEntryError(f"Default entry while {pending} is pending")
        if type(entry) is Discard:
            raise KvmEntryError(
                "KVM cannot discard an instruction its emulator has in flight: it completes it on the next "
                f"KVM_RUN whatever userspace does; fulfill {pending} instead (exit_consistent=True to stop "
                "right after it)"
            )
        try:
            data = fulfillment_data(pending, entry)
        except AbiError as err:
            raise KvmEntryError(str(err)) from None
        run = self._run
        if run is None:
            raise KvmError(errno.EBADF, "KvmVcpu is closed")
        offset = self._parts[self._next - 1][1]
        if offset >= 0:  # a read: its data goes where KVM takes it from (kvm_run.mmio.data, PIO page)
            run[offset : offset + pending.size] = data.to_bytes(pending.size, "little")
        self._pending = None
        self._consistent = self._consistent or entry.exit_consistent
        if self._next < len(self._parts):
            return self._hand_out()
        self._parts = []
        self._boundary = False  # KVM completes the instruction on entry: no injection before it has
        ex = self._enter(self._consistent)
        if not isinstance(ex, MmioExit | InoutExit):
            self._consistent = False
        return ex

    def request_stop(self) -> None:
        """Make the run in progress (or the next) return SuspendedExit soon; callable from any thread.

        Without a chipset a KVM_RUN already under way returns only when a signal with a handler reaches
        its thread (see machine.RunControl); with one, the vCPU's own kick signal ends it, and a HLT
        wait ends too.
        """
        self._stop_requested = True
        run = self._run
        if run is not None:
            run[RUN_IMMEDIATE_EXIT] = 1
        if self.chipset is not None:
            self.chipset.wakeup.set()
            if self._kicker is not None:
                self._kicker.kick()

    # -- interrupts and time --------------------------------------------------------------------------

    def interruptible(self) -> bool:
        """Whether KVM_INTERRUPT may inject now: between two instructions, with KVM's own word for it
        (kvm_run.ready_for_interrupt_injection: IF set, no STI/MOV SS shadow, no event being
        re-injected) and RFLAGS.IF (kvm_run.if_flag), both as of the last exit."""
        run = self._run
        if not self._boundary or run is None:
            return False
        return bool(run[RUN_READY_FOR_INJECTION]) and bool(run[RUN_IF_FLAG])

    def inject_interrupt(self, vector: int) -> None:
        """Queue external interrupt `vector` (KVM_INTERRUPT): KVM delivers it through the IDT on the next
        KVM_RUN, whatever IF says, so callers check `interruptible` first."""
        _ioctl_buf(self._fd, KVM_INTERRUPT, bytearray(_U32.pack(vector)), "KVM_INTERRUPT")
        self._stale_readiness()  # one at a time: the next waits for KVM to say it can take it

    def _stale_readiness(self) -> None:
        """The state changed since KVM last said whether it can take an interrupt: assume not; a pending
        one then asks for the interrupt window, and KVM answers on the next KVM_RUN."""
        run = self._run
        if run is not None:
            run[RUN_READY_FOR_INJECTION] = 0

    def _arm(self, chipset: Chipset, kicker: RunKicker) -> None:
        """Before KVM_RUN: the shared rules inject what is pending if the guest can take it, and the kick
        timer is armed for when they want to look again.

        An interrupt still waiting asks KVM to exit when the window opens (request_interrupt_window).
        When it waits only because KVM has an instruction in flight that began with IF set, this KVM_RUN
        just finishes it (immediate_exit), so the interrupt goes in at the boundary right behind it, as
        in vmmio's kernel (PVM reports no window exit for a window already open).
        """
        run = self._run
        assert run is not None
        at, waiting = offer_interrupt(chipset, self, poll_ns=None)  # KVM reports the window opening
        run[RUN_REQUEST_INTERRUPT_WINDOW] = waiting
        if waiting and not self._boundary and run[RUN_IF_FLAG]:
            run[RUN_IMMEDIATE_EXIT] = 1
        limit = self.max_slice_ns
        kicker.arm(limit if at is None else min(at - chipset.clock.now_ns(), limit))

    def _hand_out(self) -> MmioExit | InoutExit:
        request = self._parts[self._next][0]
        self._next += 1
        self._pending = request
        return request

    def _enter(self, consistent: bool) -> VmExit:
        """KVM_RUN until an exit the caller must see; with `consistent`, stop as soon as KVM can.

        With a chipset that has interrupts, every entry first goes through `_arm`, and the exits that
        only serve time and interrupts (the kick timer's EINTR, IRQ_WINDOW_OPEN, HLT with IF set, a
        lowered TPR) stay in here, as they stay in vmmio's kernel.
        """
        run = self._run
        kicker = self._kicker
        if run is None or kicker is None:
            raise KvmError(errno.EBADF, "KvmVcpu is closed")
        fd = self._fd
        chipset = self.chipset
        if chipset is not None and chipset.interrupts is None:
            chipset = None
        if chipset is not None:
            kicker.bind()
        if consistent:
            run[RUN_IMMEDIATE_EXIT] = 1
        try:
            while True:
                if self._stop_requested:
                    self._stop_requested = False
                    return _SUSPENDED
                if chipset is not None:
                    self._arm(chipset, kicker)
                try:
                    fcntl.ioctl(fd, KVM_RUN, 0)
                except InterruptedError:  # EINTR: a signal, or immediate_exit once nothing is in flight
                    # KVM completes an instruction in flight before it looks at signals: a boundary.
                    self._boundary = True
                    if chipset is not None:
                        kicker.consume()
                    if consistent or self._stop_requested or chipset is None:
                        self._stop_requested = False
                        return _SUSPENDED
                    # The kick timer (a deadline passed), an instruction finished for an injection
                    # (_arm), or a signal whose handler returned: go on.
                    run[RUN_IMMEDIATE_EXIT] = 0
                    continue
                except OSError as e:
                    if e.errno is None:  # raised by a signal handler (e.g. a TimeoutError): not KVM's
                        raise
                    raise KvmError(e.errno, f"KVM_RUN: {os.strerror(e.errno)}") from None
                reason = _REASON.unpack_from(run, RUN_EXIT_REASON)[0]
                if reason == KVM_EXIT_MMIO:
                    self._boundary = False
                    ex = self._on_mmio(run)
                elif reason == KVM_EXIT_IO:
                    self._boundary = False
                    ex = self._on_io(run)
                else:
                    self._boundary = True
                    if chipset is None:
                        return self._on_other(run, reason)
                    ex = self._on_time(chipset, run, reason)
                if ex is not None:
                    return ex
        finally:
            run[RUN_IMMEDIATE_EXIT] = 0
            run[RUN_REQUEST_INTERRUPT_WINDOW] = 0

    def _on_time(self, chipset: Chipset, run: mmap.mmap, reason: int) -> VmExit | None:
        """The exits a userspace irqchip serves itself; None to re-enter, else the exit for the caller."""
        if reason in (KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_SET_TPR):
            return None  # the window opened (the next _arm injects); TPR is the APIC page's business
        if reason != KVM_EXIT_HLT:
            return self._on_other(run, reason)
        halt = wait_halted(chipset, bool(run[RUN_IF_FLAG]), lambda: self._stop_requested)
        if halt is Halt.RESUME:
            return None
        if halt is Halt.EXIT:
            return _HLT
        self._stop_requested = False
        return _SUSPENDED

    def _on_mmio(self, run: mmap.mmap) -> VmExit | None:
        gpa, raw, length, is_write = _MMIO.unpack_from(run, RUN_UNION)
        write = bool(is_write)
        if self.raw_exits is not None:
            self.raw_exits.append(KvmMmio(gpa, length, write, raw[:length] if write else b""))
        pieces = split_access(gpa, length)
        region = self.memory.find(gpa)
        if type(region) is HandlerRegion:
            # An in-kernel device: answer in place, as vmmio's kernel does, and keep running.
            for start, g, n in pieces:
                off = g - region.gpa
                if write:
                    region.handler.write(off, n, int.from_bytes(raw[start : start + n], "little"))
                else:
                    value = region.handler.read(off, n) & ((1 << (8 * n)) - 1)
                    at = MMIO_DATA_OFFSET + start
                    run[at : at + n] = value.to_bytes(n, "little")
            return None
        self._parts = [
            (MmioExit(g, n, True, int.from_bytes(raw[start : start + n], "little")), -1)
            if write
            else (MmioExit(g, n, False, 0), MMIO_DATA_OFFSET + start)
            for start, g, n in pieces
        ]
        self._next = 0
        return self._hand_out()

    def _on_io(self, run: mmap.mmap) -> VmExit | None:
        direction, size, port, count, data_offset = _IO.unpack_from(run, RUN_UNION)
        is_in = direction == KVM_EXIT_IO_IN
        if self.raw_exits is not None:
            out = b"" if is_in else bytes(run[data_offset : data_offset + count * size])
            self.raw_exits.append(KvmIo(port, size, is_in, count, out))
        hit = self.ports.lookup(port)
        if hit is not None:
            base, device = hit
            for i in range(count):
                at = data_offset + i * size
                if is_in:
                    value = device.read(port - base, size) & ((1 << (8 * size)) - 1)
                    run[at : at + size] = value.to_bytes(size, "little")
                else:
                    device.write(port - base, size, int.from_bytes(run[at : at + size], "little"))
            return None
        parts: list[tuple[MmioExit | InoutExit, int]] = []
        for i in range(count):
            at = data_offset + i * size
            if is_in:
                parts.append((InoutExit(port, size, True, 0), at))
            else:
                parts.append(
                    (InoutExit(port, size, False, int.from_bytes(run[at : at + size], "little")), -1)
                )
        self._parts = parts
        self._next = 0
        return self._hand_out()

    def _on_other(self, run: mmap.mmap, reason: int) -> VmExit:
        if reason == KVM_EXIT_HLT:
            return _HLT
        if reason == KVM_EXIT_SHUTDOWN:
            return _SHUTDOWN
        if reason in (KVM_EXIT_INTR, KVM_EXIT_IRQ_WINDOW_OPEN):
            return _SUSPENDED
        if reason == KVM_EXIT_INTERNAL_ERROR:
            suberror, ndata = _INTERNAL.unpack_from(run, RUN_UNION)
            if suberror == KVM_INTERNAL_ERROR_EMULATION:
                return self._emulation_failure()
            data = [_U64.unpack_from(run, RUN_UNION + 8 + 8 * i)[0] for i in range(min(ndata, 16))]
            raise KvmExitError(reason, f"internal error suberror={suberror} data={[hex(d) for d in data]}")
        raw = bytes(run[RUN_UNION : RUN_UNION + 32])
        raise KvmExitError(reason, f"exit union {raw.hex()}")

    def _emulation_failure(self) -> InstEmulExit:
        """Linux's emulator gave up: report RIP and the instruction bytes the guest has there."""
        rip = self.get_regs().rip
        ctl = self.get_control()
        linear = rip if ctl.code_size == 64 else (ctl.segs[1].base + rip) & 0xFFFF_FFFF
        code = self._read_linear(linear, MAX_INSN_LEN)
        reason = InstEmulReason.NOT_EMULATED if code else InstEmulReason.FETCH_FAILED
        return InstEmulExit(rip, code, reason)

    def _read_linear(self, linear: int, size: int) -> bytes:
        """Up to `size` bytes at a guest linear address, stopping at the first byte that is not RAM."""
        out = b""
        while len(out) < size:
            la = linear + len(out)
            gpa = self.translate(la)
            if gpa is None:
                break
            n = min(size - len(out), PAGE_SIZE - (la & PAGE_MASK))
            region = self.memory.find(gpa)
            if type(region) is not RamRegion:
                break
            n = min(n, region.end - gpa)
            out += bytes(region.view[gpa - region.gpa : gpa - region.gpa + n])
        return out

    # -- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap kvm_run and close the vCPU, VM and /dev/kvm descriptors (idempotent)."""
        self._run = None
        if self._kicker is not None:
            self._kicker.close()
        self._finalizer()

    def __enter__(self) -> KvmVcpu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Kernel-mode probes (64-bit code at 0x8000, RAM at 0x9000): cmpxchg16b [0x9000] (REX.W 0F C7 /1, SIB
# with no base: disp32), then HLT; INT3 (with no IDT: #BP becomes a triple fault, which is running it).
CMPXCHG16B_PROBE: Final = bytes.fromhex("480fc70c2500900000f4")
INT3_PROBE: Final = bytes.fromhex("ccf4")


@functools.cache
def kernel_mode_runs(code: bytes) -> bool:
    """Whether this KVM runs `code` (64-bit, CPL 0, identity-mapped RAM) without its instruction
    emulator giving up on it (probed once per process and code).

    On hardware virtualization the guest runs its own instructions and KVM's emulator sees only device
    accesses and a few special cases. A KVM that runs guest kernel code through that emulator instead
    (PVM, the software KVM, does: user mode runs natively) stops the guest with an emulation failure at
    every instruction the emulator lacks: CMPXCHG16B, the XSAVE family, FWAIT, software interrupts in
    protected mode, most SSE arithmetic.
    """
    memory = GuestMemory()
    memory.add_ram(0, 0x20_0000)
    tables = PageTables(0x1000)
    tables.map(0, 0, PAGE_2M)
    for gpa, entry in tables.entries.items():
        memory.write_int(gpa, 8, entry)
    memory.write(0x8000, code)
    state = CpuState(Regs(rip=0x8000), long_mode_control(tables.root))
    with KvmVcpu(memory, state, probe_cpuid=False) as vcpu:
        return not isinstance(vcpu.run(), InstEmulExit)


def cmpxchg16b_runs() -> bool:
    """Whether a guest of this KVM can run CMPXCHG16B in kernel mode (`kernel_mode_runs`).

    KVM reports CX16 whenever the host has it. A KVM that takes the instruction into its emulator
    cannot complete it (Linux's emulator has no CMPXCHG16B: its CMPXCHG8B handler refuses 16 bytes), so
    a guest told it has CX16 stops at its first one (Linux does, in its slab allocator). Such a KVM's
    guests are not told CX16 and take the paths a CPU without it needs; `KvmVcpu.cpuid` says so too, so
    vmmio's kernel, compared with it, raises the same #UD.
    """
    return kernel_mode_runs(CMPXCHG16B_PROBE)


def _release(fds: list[int], maps: list[mmap.mmap]) -> None:
    """Finalizer: holds no reference to the vCPU, so it also runs when one is just dropped."""
    while maps:
        maps.pop().close()
    while fds:
        os.close(fds.pop())
