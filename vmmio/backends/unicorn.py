"""Unicorn as the "hardware": guest RAM mapped in place, everything else left unmapped.

How each exit is produced (Unicorn 2.1, one UC_MODE_64 engine for every guest mode):

- NpfEvent: every GPA that is not RAM is unmapped, so the first access fires UC_HOOK_MEM_UNMAPPED with
  the guest-physical address. The hook returns False, which makes Unicorn abandon the instruction before
  any of its effects (completed REP iterations stay completed) with RIP at the instruction.
- IoEvent: Unicorn runs in/out/ins/outs itself and only calls UC_HOOK_INSN (port, size, direction) from
  inside the instruction; emu_stop() takes effect at the end of the translation block, so the rest of the
  block would still run. The hook therefore snapshots the whole CPU state (uc_context_save: the register
  file is synced to the instruction's start when the helper runs) and write-protects guest RAM; after the
  engine stops (at the block's end or at the first store, which the protection turns into a stop), the
  snapshot is restored and RAM made writable again. Nothing of the instruction or what followed it
  survives; RIP is at the I/O instruction. No instruction bytes are decoded for this.
- HltEvent: HLT is intercepted the way an SVM hypervisor does it (HF_GUEST in the TB flags plus the
  HLT bit of the intercept vector in the CPU state), so Unicorn exits with RIP at the HLT; the backend
  then steps RIP past the HLT and its prefixes (the instruction length hardware reports for the exit).
- Guest exceptions raised by the engine (#PF from its page walk, #GP, #DE, #UD, INT n, ...) are not
  exits: Unicorn has no native delivery (it hands every exception to UC_HOOK_INTR and ignores the IDT),
  so the backend delivers them through the guest's IDT itself, like `inject_exception`, and keeps
  running. A fault while delivering escalates to #DF, and one while delivering #DF to ShutdownEvent.
- StoppedEvent: an instruction-count or time budget given to run(), or request_stop().

Control state (segment caches, hflags, EFER, the exception error code) is not reachable through Unicorn's
register API, so the backend reads and patches it in the CPU-state blob of uc_context_save/restore. The
offsets are those of QEMU 5's CPUX86State as built into Unicorn 2.1; they are verified against known
register values when the module first builds an engine, and the backend refuses to run if they differ.

Where this differs from hardware (all are Unicorn's doing):
- INS: QEMU stores 0 to the destination element before it reads the port (to be restartable on #PF);
  that store precedes the I/O hook and stays (the kernel then overwrites it with the port data). For an
  MMIO destination the same store makes the exit an NpfEvent (write) instead of an IoEvent.
- OUTS from MMIO: the source read precedes the port access, so the exit is an NpfEvent (read).
- Unicorn allows every I/O instruction: no #GP for CPL > IOPL without TSS I/O-bitmap permission.
- Stores to the shared RAM from outside the engine (the kernel's emulation, a loader) do not invalidate
  code Unicorn already translated from that RAM: call invalidate_code() after changing guest code.
- SYSCALL/SYSENTER do nothing without a Unicorn hook (they fall through); ICEBP (F1) raises #UD.
- Delivery: no real mode, no task gates or 16-bit gates, no LDT code selectors, no 32-bit privilege
  change (64-bit: same privilege, CPL change through TSS.RSPn, IST); such a delivery shuts the vCPU
  down with a ShutdownEvent saying why. The accessed bit of the loaded CS descriptor is not set.
- An engine event the backend has no model for (an SVM intercept it did not arm, an engine error) shuts
  the vCPU down the same way (unsupported, with the event in the detail); run() never raises for
  anything a guest does.
- Known engine limits in code the engine runs itself, which the backend cannot correct without
  decoding every instruction (each shown by tests/test_engine_deviations.py next to what KVM or the
  host CPU does): writing bits 63:4 of CR8 raises no #GP (QEMU keeps the low 4 bits); a code
  breakpoint on the instruction after MOV SS/POP SS fires (Intel CPUs suppress it; QEMU's shadow does
  not say whether STI or MOV SS set it); MOVBE runs in both forms whatever CPUID says (the engine's CPU
  model has it; the register form, #UD on every CPU, loads from the address in the register); IRETQ to
  an outer privilege level that nulls a data segment zeroes its base too (the CPU keeps it in 64-bit
  mode; kvm-unit-tests' emulator test shows it). Corrected on the exception path, where the backend
  decodes the one faulting instruction: a non-canonical address through SS raises #SS(0), where QEMU
  raises #GP(0). The interrupt shadow itself is kept: QEMU's flag, cleared here once RIP moved outside
  the engine (an emulated instruction, a stepped-over HLT, a delivery). CR8 reads back what was
  written: QEMU keeps it as its SVM v_tpr (hflags2 VINTR), not in an APIC it does not model.

Vector state (get_vector/set_vector): YMM0-15, MXCSR, the x87 registers R0-R7 (MMX in their low 64 bits)
with FSW and the tags as valid/empty; no AVX-512 (ZMM16-31, bits 511:256, opmasks) and no AVX in CPUID.
XCR0 is not reachable: get_control reports x87|SSE and set_control ignores `xcr0`. The engine's own
vector deviations (no SSE alignment #GP, no MXCSR reserved-bit #GP, VEX.128 run as SSE, MMX writes
leaving bits 79:64 alone) are listed with minimal cases in tests/oracles/known.py.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Final

from unicorn import unicorn_const as ucc
from unicorn import x86_const as ux

from vmmio.backends.base import BackendEvent, HltEvent, IoEvent, NpfEvent, ShutdownEvent, StoppedEvent
from vmmio.memory import PAGE_MASK, PAGE_SIZE, GuestMemory, RamRegion
from vmmio.x86.cpuid import SUBLEAF_LEAVES, CpuidTable
from vmmio.x86.decode import decode_cached
from vmmio.x86.delivery import (
    DESC_B,
    DESC_G,
    DESC_L,
    DESC_P,
    DESC_S,
    Delivered,
    LinearMemory,
    Shutdown,
    Unsupported,
    canonical,
    deliver_event,
)
from vmmio.x86.descriptors import segment_cache
from vmmio.x86.fastcall import ReadMsr, syscall, sysenter
from vmmio.x86.faults import GP, HAS_ERROR_CODE, PFEC_I, PFEC_U, SS, UD, GuestFault
from vmmio.x86.insn import Insn
from vmmio.x86.paging import TranslationError, Walker
from vmmio.x86.regs import IF, VM, Seg
from vmmio.x86.state import (
    CR0_PE,
    DIRTY_ALL,
    DIRTY_RFLAGS,
    DIRTY_RIP,
    EFER_LMA,
    MXCSR_DEFAULT,
    XCR0_SSE,
    XCR0_X87,
    Control,
    Regs,
    Segment,
    VectorState,
)

try:  # the native exit path, built at install where a C compiler exists (docs/fastpath.md)
    import vmmio._fastpath as _fastpath
except ImportError:  # pragma: no cover - built everywhere the tests run
    _fastpath = None  # type: ignore[assignment]

try:
    from unicorn.unicorn_py3.unicorn import uclib as _lib
except ImportError:  # pragma: no cover - older 2.x bindings
    from unicorn.unicorn import _uc as _lib  # type: ignore[attr-defined,no-redef]

_void_p = ctypes.c_void_p
_u64 = ctypes.c_uint64

# Native hook signatures (unicorn.h).
_MEM_CB = ctypes.CFUNCTYPE(
    ctypes.c_bool, _void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int, ctypes.c_int64, _void_p
)
_INTR_CB = ctypes.CFUNCTYPE(None, _void_p, ctypes.c_uint32, _void_p)
_IN_CB = ctypes.CFUNCTYPE(ctypes.c_uint32, _void_p, ctypes.c_uint32, ctypes.c_int, _void_p)
_OUT_CB = ctypes.CFUNCTYPE(None, _void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, _void_p)
_CPUID_CB = ctypes.CFUNCTYPE(ctypes.c_int, _void_p, _void_p)  # returns 1: the hook emulated the CPUID
_SYSCALL_CB = ctypes.CFUNCTYPE(None, _void_p, _void_p)  # SYSCALL and SYSENTER
FastCall = Callable[[Regs, Control, ReadMsr], Delivered]

# The CPUID leaves the backend reports: every basic and extended leaf up to the engine's maximum (a
# guest sizes itself from them: Linux takes its physical-address width from 0x8000_0008), subleaves
# 0..CPUID_SUBLEAVES-1 of the leaves that have them.
CPUID_RANGES = (0, 0x8000_0000)
CPUID_SUBLEAVES = 64
# What the engine executes wrongly, hidden from the guest so that it never relies on it: the register
# form of MOVBE runs instead of raising #UD. A guest that checks CPUID leaves MOVBE alone; one that does
# not gets #UD from the kernel on MMIO but still runs both forms on RAM (a known limit, above).
HIDDEN_FEATURES = ("movbe",)
_VEC_YMM = [getattr(ux, f"UC_X86_REG_YMM{n}") for n in range(16)]
# The x87 registers R0-R7 by physical number, 80 bits each: mmN is the low 64 bits of RN. (Unicorn 2.1's
# UC_X86_REG_MM0-7 read and write nothing in 64-bit mode.)
_VEC_FP = [getattr(ux, f"UC_X86_REG_FP{n}") for n in range(8)]


class _Msr(ctypes.Structure):
    _fields_ = (("rid", ctypes.c_uint32), ("value", ctypes.c_uint64))


class _Mmr(ctypes.Structure):
    _fields_ = (
        ("selector", ctypes.c_uint16),
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    )


MSR_EFER: Final = 0xC000_0080

# QEMU hflags bits (target/i386/cpu.h).
_HF_CPL = 3
_HF_INHIBIT_IRQ = 1 << 3  # the STI / MOV SS interrupt shadow
_HF_CS32 = 1 << 4
_HF_SS32 = 1 << 5
_HF_ADDSEG = 1 << 6
_HF_PE = 1 << 7
_HF_LMA = 1 << 14
_HF_CS64 = 1 << 15
_HF_GUEST = 1 << 21
# QEMU hflags2 bits: with VINTR (virtual interrupt masking, as under SVM) MOV to/from CR8 use the CPU's
# own v_tpr; without it they go to an APIC model, which Unicorn does not have (CR8 then always reads 0).
_HF2_GIF = 1 << 0
_HF2_VINTR = 1 << 3
_SEG_HFLAGS = _HF_CPL | _HF_CS32 | _HF_SS32 | _HF_ADDSEG | _HF_PE | _HF_LMA | _HF_CS64

# QEMU keeps a segment cache's flags in the descriptor high-dword layout (DESC_* from x86.delivery).

# SVM: Unicorn reports a #VMEXIT as interrupt number EXCP_VMEXIT + exit code.
_EXCP_VMEXIT = 0x100
_SVM_EXIT_INTR = 0x60
_SVM_EXIT_HLT = 0x78
_SVM_EXIT_SHUTDOWN = 0x7F
_INTR_SHUTDOWN = _EXCP_VMEXIT + _SVM_EXIT_SHUTDOWN  # QEMU's triple fault, as an intercepted guest
# Instruction budgets for timers (set_timer): bounds, and the rate assumed before one is measured.
MIN_BUDGET = 1_000
MAX_BUDGET_NS = 50_000_000  # with no deadline, still stop every ~50 ms: request_stop is seen then
INITIAL_IPS = 20_000_000
# Translation-cache size: QEMU flushes it whole when full, so this bounds the engine's memory.
TCG_BUFFER_SIZE = 64 << 20
_INTR_HLT = _EXCP_VMEXIT + _SVM_EXIT_HLT
_RIP = ux.UC_X86_REG_RIP

# Register batch: GPRs in hardware order, then RIP and RFLAGS (Regs and the dirty mask use this order).
_REG_IDS = (
    ux.UC_X86_REG_RAX,
    ux.UC_X86_REG_RCX,
    ux.UC_X86_REG_RDX,
    ux.UC_X86_REG_RBX,
    ux.UC_X86_REG_RSP,
    ux.UC_X86_REG_RBP,
    ux.UC_X86_REG_RSI,
    ux.UC_X86_REG_RDI,
    *range(ux.UC_X86_REG_R8, ux.UC_X86_REG_R15 + 1),
    ux.UC_X86_REG_RIP,
    ux.UC_X86_REG_RFLAGS,
)
_NREGS = len(_REG_IDS)
_ALL_REGS = struct.Struct(f"<{_NREGS}Q")
_GPRS = struct.Struct("<16Q")  # the first 16 of them, then RIP and RFLAGS
_RIP_RFLAGS = struct.Struct("<QQ")
_new_regs = object.__new__
_FAST_NOT_RUN = -3  # fast_cycle results (vmmio/_fastpath.c): nothing done
_FAST_STOPPED = -1  # completed and run, stopped for something else than a learned plan
assert _fastpath is None or (_fastpath.NOT_RUN, _fastpath.STOPPED) == (_FAST_NOT_RUN, _FAST_STOPPED)

_LEGACY_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))
_MASK64 = (1 << 64) - 1
_NO_EXIT = _MASK64  # `until` for emu_start; with exits enabled and an empty exit list it is ignored
_WRITE_UNMAPPED = ucc.UC_MEM_WRITE_UNMAPPED
# uc_reg_write_batch's arguments for one dirty mask (ids, value pointers, count) and how to pack the values.
_WriteSet = tuple[_void_p, _void_p, ctypes.c_int, Callable[[list[int]], tuple[int, ...]], int, struct.Struct]
# The batch call on the hot path, declared with plain pointers: ctypes then converts no argument of the
# prebuilt ones (the binding's own declaration checks each array against its pointer type).
_reg_write_batch = ctypes.CFUNCTYPE(ctypes.c_int, _void_p, _void_p, _void_p, ctypes.c_int)(
    ctypes.cast(_lib.uc_reg_write_batch, _void_p).value or 0
)
_FETCH_UNMAPPED = ucc.UC_MEM_FETCH_UNMAPPED


def _ctl_code(ctl: int, op: int, nargs: int) -> int:
    return (op << 30) | (nargs << 26) | ctl


def _check(err: int, what: str) -> None:
    if err != ucc.UC_ERR_OK:
        raise UnicornBackendError(f"{what}: {_lib.uc_strerror(err).decode()}")


class UnicornBackendError(RuntimeError):
    """The engine failed in a way no guest event explains (a bug here or an unsupported Unicorn)."""


# -- the CPU-state blob ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Offsets into a uc_context (header included) of the CPUX86State fields the backend uses."""

    size: int
    eip: int
    hflags: int
    hflags2: int
    segs: int  # SegmentCache[6]: u32 selector, u64 base, u32 limit, u32 flags; 24 bytes each
    tr: int
    gdt: int
    idt: int
    cr: int
    efer: int
    error_code: int  # followed by exception_is_int (both int32)
    old_exception: int  # int32: the exception QEMU believes is being delivered (-1: none)
    intercept: int


_SEG_SIZE = 24
_layout_cache: _Layout | None = None
_layout_lock = threading.Lock()


def _probe_layout() -> _Layout:
    """Find and verify the CPUX86State offsets on a scratch engine, once per process.

    Known values are written through the register API and looked for where QEMU 5's struct puts them;
    the fields with no register (hflags, error code, intercept vector) sit at fixed distances from
    verified neighbours, and the blob's total size pins the tail of the struct.
    """
    global _layout_cache
    with _layout_lock:
        if _layout_cache is not None:
            return _layout_cache
        eng = _Engine()
        try:
            magic = {
                ux.UC_X86_REG_RAX: 0x1122_3344_5566_7788,
                ux.UC_X86_REG_RIP: 0x2233_4455_6677_8899,
                ux.UC_X86_REG_FS_BASE: 0x3344_5566_7788_99AA,
                ux.UC_X86_REG_CR2: 0x4455_6677_8899_AABB,
                ux.UC_X86_REG_DR0: 0x5566_7788_99AA_BBCC,
            }
            for reg, value in magic.items():
                eng.reg_write(reg, value)
            eng.mmr_write(ux.UC_X86_REG_GDTR, 0, 0x6677_8899_AABB_C000, 0xFFF)
            eng.mmr_write(ux.UC_X86_REG_IDTR, 0, 0x7788_99AA_BBCC_D000, 0xFFF)
            eng.mmr_write(ux.UC_X86_REG_TR, 0x28, 0x0899_AABB_CCDD_E000, 0x67)
            eng.save()
            blob = bytes(eng.ctx_view)

            def at(value: int) -> list[int]:
                pattern = value.to_bytes(8, "little")
                hits, i = [], blob.find(pattern)
                while i >= 0:
                    hits.append(i)
                    i = blob.find(pattern, i + 1)
                return hits

            rax_hits = at(magic[ux.UC_X86_REG_RAX])
            dr0_hits = at(magic[ux.UC_X86_REG_DR0])
            if len(rax_hits) != 1 or len(dr0_hits) != 1:
                raise UnicornBackendError("cannot locate the CPU state in this Unicorn build's context")
            base = rax_hits[0]  # start of CPUX86State in the context (regs[0] is RAX)
            dr0 = dr0_hits[0]
            eng.msr_write(MSR_EFER, eng.msr_read(MSR_EFER) ^ (1 << 11))  # flip NXE: EFER is what changes
            eng.save()
            changed = [i for i, (a, b) in enumerate(zip(blob, bytes(eng.ctx_view), strict=True)) if a != b]
            layout = _Layout(
                size=len(blob),
                eip=base + 128,
                hflags=base + 176,
                hflags2=base + 180,
                segs=base + 184,
                tr=base + 184 + 7 * _SEG_SIZE,
                gdt=base + 184 + 8 * _SEG_SIZE,
                idt=base + 184 + 9 * _SEG_SIZE,
                cr=base + 184 + 10 * _SEG_SIZE,
                efer=(changed[0] & ~7) if changed else -1,
                error_code=dr0 - 16,  # error_code, exception_is_int, exception_next_eip, dr[8]
                old_exception=dr0 + 96,  # after dr[8] and 4 breakpoint pointers
                intercept=dr0 + 120,  # dr[8], 4 breakpoint pointers, old_exception, vm_vmcb, tsc_offset
            )
            checks = (
                at(magic[ux.UC_X86_REG_RIP]) == [layout.eip],
                at(magic[ux.UC_X86_REG_FS_BASE]) == [layout.segs + 4 * _SEG_SIZE + 8],
                at(0x0899_AABB_CCDD_E000) == [layout.tr + 8],
                at(0x6677_8899_AABB_C000) == [layout.gdt + 8],
                at(0x7788_99AA_BBCC_D000) == [layout.idt + 8],
                at(magic[ux.UC_X86_REG_CR2]) == [layout.cr + 16],
                # After dr[0]: dr[8], 4 breakpoint pointers, old_exception, vm_vmcb, tsc_offset,
                # intercept, 4 x u16, intercept_exceptions, nested_cr3, nested_pg_mode, v_tpr, retaddr.
                layout.size == dr0 + 168,
                struct.unpack_from("<i", blob, dr0 + 96)[0] == -1,  # old_exception at reset
                len(changed) == 1 and layout.cr + 40 < layout.efer < layout.error_code,
                struct.unpack_from("<I", blob, layout.hflags)[0] & (_HF_LMA | _HF_CS64 | _HF_PE)
                == _HF_LMA | _HF_CS64 | _HF_PE,
                struct.unpack_from("<I", blob, layout.hflags2)[0] & (_HF2_GIF | _HF2_VINTR) == _HF2_GIF,
            )
            if not all(checks):
                raise UnicornBackendError(
                    f"this Unicorn build's CPU state layout is not the one this backend knows ({checks})"
                )
            _layout_cache = layout
            return layout
        finally:
            eng.close()


class _Engine:
    """A bare UC_MODE_64 engine through the C API, with one context buffer mapped for reading."""

    def __init__(self) -> None:
        handle = _void_p()
        _check(_lib.uc_open(ucc.UC_ARCH_X86, ucc.UC_MODE_64, ctypes.byref(handle)), "uc_open")
        self.h = handle
        # Before anything initializes the engine: its translation cache is allocated at this size.
        self.ctl(ucc.UC_CTL_TCG_BUFFER_SIZE, ctypes.c_uint32(TCG_BUFFER_SIZE))
        ctx = _void_p()
        _check(_lib.uc_context_alloc(handle, ctypes.byref(ctx)), "uc_context_alloc")
        self.ctx = ctx
        self._contexts = [ctx]
        size = _lib.uc_context_size(handle)
        assert ctx.value is not None
        self.ctx_view = (ctypes.c_ubyte * size).from_address(ctx.value)
        self._finalizer = weakref.finalize(self, _Engine._release, handle, self._contexts)

    @staticmethod
    def _release(handle: ctypes.c_void_p, contexts: list[ctypes.c_void_p]) -> None:
        for ctx in contexts:
            _lib.uc_context_free(ctx)
        _lib.uc_close(handle)

    def close(self) -> None:
        self._finalizer()

    def new_context(self) -> ctypes.c_void_p:
        """Another context buffer, freed with the engine."""
        ctx = _void_p()
        _check(_lib.uc_context_alloc(self.h, ctypes.byref(ctx)), "uc_context_alloc")
        self._contexts.append(ctx)
        return ctx

    def save(self) -> None:
        _check(_lib.uc_context_save(self.h, self.ctx), "uc_context_save")

    def restore(self) -> None:
        _check(_lib.uc_context_restore(self.h, self.ctx), "uc_context_restore")

    def reg_read(self, reg: int) -> int:
        value = _u64()
        _check(_lib.uc_reg_read(self.h, reg, ctypes.byref(value)), "uc_reg_read")
        return value.value

    def reg_write(self, reg: int, value: int) -> None:
        _check(_lib.uc_reg_write(self.h, reg, ctypes.byref(_u64(value & _MASK64))), "uc_reg_write")

    def msr_read(self, msr: int) -> int:
        m = _Msr(msr, 0)
        _check(_lib.uc_reg_read(self.h, ux.UC_X86_REG_MSR, ctypes.byref(m)), "msr read")
        return int(m.value)

    def msr_write(self, msr: int, value: int) -> None:
        _check(_lib.uc_reg_write(self.h, ux.UC_X86_REG_MSR, ctypes.byref(_Msr(msr, value))), "msr write")

    def mmr_write(self, reg: int, selector: int, base: int, limit: int) -> None:
        m = _Mmr(selector, base, limit, 0)
        _check(_lib.uc_reg_write(self.h, reg, ctypes.byref(m)), "descriptor-table register write")

    def ctl(self, ctl: int, *args: Any) -> None:
        _check(_lib.uc_ctl(self.h, _ctl_code(ctl, ucc.UC_CTL_IO_WRITE, len(args)), *args), "uc_ctl")


# -- segment caches --------------------------------------------------------------------------------------


def _seg_flags(seg: Segment) -> int:
    """A Segment as QEMU's cache flags (descriptor high-dword layout); unusable means not present."""
    return (
        (seg.type & 0xF) << 8
        | (DESC_S if seg.s else 0)
        | (seg.dpl & 3) << 13
        | (DESC_P if seg.present and not seg.unusable else 0)
        | (DESC_L if seg.l else 0)
        | (DESC_B if seg.db else 0)
        | (DESC_G if seg.g else 0)
    )


_CPUID_OUT = (ux.UC_X86_REG_RAX, ux.UC_X86_REG_RBX, ux.UC_X86_REG_RCX, ux.UC_X86_REG_RDX)
_cpuid_cache: CpuidTable | None = None


def _engine_cpuid() -> CpuidTable:
    """CPUID of the engine's CPU model, read once per process by running CPUID on a scratch engine."""
    global _cpuid_cache
    with _layout_lock:
        if _cpuid_cache is not None:
            return _cpuid_cache
        eng = _Engine()
        try:
            _check(_lib.uc_mem_map(eng.h, 0, 0x1000, ucc.UC_PROT_ALL), "uc_mem_map")
            code = (ctypes.c_char * 2).from_buffer_copy(b"\x0f\xa2")  # cpuid
            _check(_lib.uc_mem_write(eng.h, _u64(0), code, _u64(2)), "uc_mem_write")

            def run(leaf: int, sub: int) -> tuple[int, int, int, int]:
                eng.reg_write(ux.UC_X86_REG_RAX, leaf)
                eng.reg_write(ux.UC_X86_REG_RCX, sub)
                _check(_lib.uc_emu_start(eng.h, _u64(0), _u64(2), _u64(0), ctypes.c_size_t(0)), "cpuid")
                a, b, c, d = (eng.reg_read(r) & 0xFFFF_FFFF for r in _CPUID_OUT)
                return a, b, c, d

            leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {}
            for first in CPUID_RANGES:
                top = run(first, 0)[0]
                for leaf in range(first, min(top, first + 0xFF) + 1):
                    for sub in range(CPUID_SUBLEAVES if leaf in SUBLEAF_LEAVES else 1):
                        values = run(leaf, sub)
                        if sub == 0 or any(values):
                            leaves[leaf, sub] = values
            _cpuid_cache = CpuidTable(leaves)
            return _cpuid_cache
        finally:
            eng.close()


# -- the backend -----------------------------------------------------------------------------------------


class UnicornBackend:
    """One vCPU on a Unicorn engine, over the RAM of `memory` (shared, never copied).

    Starts in Unicorn's 64-bit state (long mode, paging off, flat CPL-0 segments) unless `control` is
    given; set_control() loads any 64-bit or 32-bit protected-mode state. `max_insns`/`timeout_us` are
    the default budgets of run() (0: none). `walker` translates linear addresses for exception delivery
    (IDT, GDT, TSS, stack): the Vm's own, so the kernel and the hardware agree on MAXPHYADDR.

    Costs measured on the development machine (pytest tests/test_backend_unicorn.py -k bench -s): an
    MMIO exit plus re-entry ~8-12 us, an I/O exit ~25 us (snapshot, RAM protect/unprotect, restore);
    get_regs ~2 us and set_regs ~2.5 us (one batch call each, against ~3 us per register through the
    Python binding); get_control ~1.5 us after a run that left control state alone, ~13 us to rebuild.
    """

    def __init__(
        self,
        memory: GuestMemory,
        walker: Walker,
        *,
        regs: Regs | None = None,
        control: Control | None = None,
        max_insns: int = 0,
        timeout_us: int = 0,
        fastpath: bool | None = None,
    ) -> None:
        self._layout = _probe_layout()
        self._eng = eng = _Engine()
        self._h = eng.h
        self.memory = memory
        self.walker = walker
        self._linear = LinearMemory(walker, memory)
        self.max_insns = max_insns
        self.timeout_us = timeout_us

        self._snap = eng.new_context()  # CPU state at an I/O instruction, restored after the stop
        self._ctx_bytes = memoryview(eng.ctx_view).cast("B")

        self._mapped: list[tuple[RamRegion, ctypes.Array[ctypes.c_char]]] = []
        self._map_new_ram()

        # Register batch buffers: read all 18 at once; writes use per-dirty-mask id/pointer arrays.
        self._vals = (_u64 * _NREGS)()
        self._ids = (ctypes.c_int * _NREGS)(*_REG_IDS)
        self._ptrs = (_void_p * _NREGS)(*(ctypes.addressof(self._vals) + 8 * i for i in range(_NREGS)))
        self._wvals = (_u64 * (_NREGS + 2))()  # written GPRs, two dummies, RIP, RFLAGS (see _write_set)
        self._write_sets: dict[int, _WriteSet] = {}
        self._keep: list[tuple[Any, Any]] = []  # the arrays the write sets point into
        self._rip_val = _u64()  # scratch for single-register reads and writes
        # uc_emu_start's arguments, prebuilt: ctypes converts nothing for objects of the declared types.
        self._start_rip = _u64()  # where the next run starts, valid while `_rip_known`
        self._rip_known = False  # RIP written through the API since the engine last ran
        self._until = _u64(_NO_EXIT)
        self._timeout_arg = _u64(0)
        self._count_arg = ctypes.c_size_t(0)
        self._timeout = self._count = 0  # their values
        self._regs_at = self._layout.eip - 8 * 16  # GPRs, RIP, RFLAGS: 18 qwords in the CPU-state blob
        self._regs_fresh = False  # the blob holds the registers (saved after the last run, none written)
        self._mid_exec = False  # the engine's state was restored from a snapshot taken while it ran
        self._rip_moved = False  # RIP was changed from outside the engine since it last stopped

        # Per-run state written by the hooks.
        self._event: BackendEvent | None = None
        self._last_npf = NpfEvent(-1)  # the last NPF reported, with its access type (events are values)
        self._last_access = -1
        self._intr: tuple[int, int] | None = None  # (interrupt number, RIP in the hook)
        self._fastcall: tuple[FastCall, int] | None = None  # SYSCALL/SYSENTER seen, with its RIP
        self._rolling = False
        self._hook_error: BaseException | None = None
        self._stop_requested = False
        self._running = False
        self._shutdown: ShutdownEvent | None = None
        self._ctl: Control | None = None
        self._ctl_key = b""  # raw bytes the last Control was built from
        self._ctl_last: Control | None = None
        self._stop_at: int | None = None  # stop_at() for the next run
        self._exit_buf = (_u64 * 1)()
        self._flush_pending = False  # the kernel wrote RAM that may hold code no alias lets us name
        self.tb_flushes = 0  # whole translation-cache flushes, for tests and benchmarks
        self._cpuid = _engine_cpuid().without(*HIDDEN_FEATURES)
        # Timers: once a machine arms one, every run has an instruction budget (see set_timer).
        self._budget: int | None = None
        self._ips = INITIAL_IPS  # instructions per second, measured on runs that spend their budget
        self._vec_buf = (ctypes.c_ubyte * 64)()

        # The native exit path (`fast_cycle`): on when built, unless `fastpath` or VMMIO_FASTPATH=0 says no.
        if fastpath is None:
            fastpath = os.environ.get("VMMIO_FASTPATH", "1") != "0"
        self.fastpath: Any = None
        if fastpath and _fastpath is not None:
            self.fastpath = _fastpath.FastPath(
                self._h.value or 0,
                ctypes.cast(_lib.uc_emu_start, _void_p).value or 0,
                ctypes.cast(_lib.uc_reg_write, _void_p).value or 0,
                ctypes.cast(_lib.uc_context_save, _void_p).value or 0,
                eng.ctx.value or 0,
                eng.ctx.value or 0,
                self._layout.hflags,
                self._layout.efer + 8 - self._layout.hflags,  # the bytes get_control compares
                self._regs_at,
                _REG_IDS[:16],
                _NO_EXIT,
                ucc.UC_MEM_READ_UNMAPPED,
                ucc.UC_MEM_WRITE_UNMAPPED,
                ucc.UC_ERR_READ_UNMAPPED,
                ucc.UC_ERR_WRITE_UNMAPPED,
            )
        self._install_hooks()
        # Run until an exit or a budget, never to an address.
        eng.ctl(ucc.UC_CTL_UC_USE_EXITS, ctypes.c_int(1))
        eng.ctl(ucc.UC_CTL_UC_EXITS, ctypes.cast((_u64 * 1)(), _void_p), ctypes.c_size_t(0))
        self._init_cpu()
        if control is not None:
            self.set_control(control)
        if regs is not None:
            self.set_regs(regs, DIRTY_ALL)

    # -- setup ----------------------------------------------------------------------------------------

    def _map_new_ram(self) -> None:
        """Map RAM regions added to `memory` since the last call, in place (uc_mem_map_ptr)."""
        self._mapped_generation = self.memory.generation
        known = {id(r) for r, _ in self._mapped}
        for region in self.memory.ram:
            if id(region) in known:
                continue
            buf = (ctypes.c_char * region.size).from_buffer(region.mem)
            _check(
                _lib.uc_mem_map_ptr(self._h, region.gpa, region.size, ucc.UC_PROT_ALL, ctypes.addressof(buf)),
                f"mapping RAM at {region.gpa:#x}",
            )
            self._mapped.append((region, buf))

    def _install_hooks(self) -> None:
        h = self._h
        self._callbacks: list[Any] = []

        def add(kind: int, cb: Any, *extra: Any) -> None:
            handle = ctypes.c_size_t()
            fptr = ctypes.cast(cb, _void_p)
            _check(
                _lib.uc_hook_add(h, ctypes.byref(handle), kind, fptr, None, _u64(1), _u64(0), *extra), "hook"
            )
            self._callbacks.append(cb)

        if self.fastpath is not None:  # the native hook records the fault for `_stopped` and `fast_cycle`
            handle = ctypes.c_size_t()
            native, user_data = _void_p(self.fastpath.hook), _void_p(self.fastpath.user_data)
            kind = ucc.UC_HOOK_MEM_UNMAPPED
            _check(
                _lib.uc_hook_add(h, ctypes.byref(handle), kind, native, user_data, _u64(1), _u64(0)), "hook"
            )
        else:
            add(ucc.UC_HOOK_MEM_UNMAPPED, _MEM_CB(self._on_unmapped))  # guards itself: it runs on every exit
        add(ucc.UC_HOOK_MEM_PROT, _MEM_CB(self._guard(self._on_prot, False)))
        add(ucc.UC_HOOK_INTR, _INTR_CB(self._guard(self._on_intr, None)))
        add(ucc.UC_HOOK_INSN, _IN_CB(self._guard(self._on_in, 0)), ctypes.c_int(ux.UC_X86_INS_IN))
        add(ucc.UC_HOOK_INSN, _OUT_CB(self._guard(self._on_out, None)), ctypes.c_int(ux.UC_X86_INS_OUT))
        add(ucc.UC_HOOK_INSN, _CPUID_CB(self._guard(self._on_cpuid, 0)), ctypes.c_int(ux.UC_X86_INS_CPUID))
        for insn, entry in ((ux.UC_X86_INS_SYSCALL, syscall), (ux.UC_X86_INS_SYSENTER, sysenter)):
            hook = _SYSCALL_CB(self._guard(partial(self._on_fastcall, entry), None))
            add(ucc.UC_HOOK_INSN, hook, ctypes.c_int(insn))

    def _guard(self, fn: Callable[..., Any], default: Any) -> Callable[..., Any]:
        """Wrap a hook: an exception in it stops the engine and is re-raised by run()."""

        def hook(*args: Any) -> Any:
            try:
                return fn(*args)
            except BaseException as e:
                if self._hook_error is None:
                    self._hook_error = e
                _lib.uc_emu_stop(self._h)
                return default

        return hook

    def _init_cpu(self) -> None:
        """Make Unicorn's 64-bit reset state self-consistent, arm the HLT intercept, keep CR8 in the CPU.

        Unicorn starts with EFER.LMA and CS64 in hflags but all-zero segment caches; give them flat
        present descriptors so that Control describes what the engine runs (64-bit code, CPL 0).
        """
        eng, lay = self._eng, self._layout
        eng.save()
        v = eng.ctx_view
        code = Segment(0, 0, 0xFFFF_FFFF, 0xB, True, 0, True, False, True, True)
        data = Segment(0, 0, 0xFFFF_FFFF, 0x3, True, 0, True, True, False, True)
        for i in range(6):
            seg = code if i == 1 else data
            struct.pack_into("<I", v, lay.segs + i * _SEG_SIZE + 16, 0xFFFF_FFFF)
            struct.pack_into("<I", v, lay.segs + i * _SEG_SIZE + 20, _seg_flags(seg))
        hflags = struct.unpack_from("<I", v, lay.hflags)[0]
        struct.pack_into("<I", v, lay.hflags, hflags | _HF_GUEST)
        hflags2 = struct.unpack_from("<I", v, lay.hflags2)[0]
        struct.pack_into("<I", v, lay.hflags2, hflags2 | _HF2_VINTR)  # CR8 reads back what was written
        intercept = struct.unpack_from("<Q", v, lay.intercept)[0]
        struct.pack_into("<Q", v, lay.intercept, intercept | 1 << (_SVM_EXIT_HLT - _SVM_EXIT_INTR))
        eng.restore()
        eng.reg_write(ux.UC_X86_REG_MXCSR, MXCSR_DEFAULT)  # the engine starts at 0; a CPU at 0x1F80

    @property
    def cpuid(self) -> CpuidTable:
        return self._cpuid

    def _vec_read(self, rid: int, nbytes: int) -> int:
        buf = self._vec_buf
        _check(_lib.uc_reg_read(self._h, rid, buf), "vector register read")
        return int.from_bytes(bytes(buf)[:nbytes], "little")

    def _vec_write(self, rid: int, value: int, nbytes: int) -> None:
        buf = self._vec_buf
        ctypes.memmove(buf, value.to_bytes(nbytes, "little"), nbytes)
        _check(_lib.uc_reg_write(self._h, rid, buf), "vector register write")

    def get_vector(self) -> VectorState:
        """YMM0-15 (XMM in their low halves), MXCSR, the x87 registers (MMX) with FSW and the tags: what
        the engine's CPU has. The tags come back abridged (valid or empty, as FXSAVE keeps them)."""
        vec = VectorState()
        vec.zmm[:16] = [self._vec_read(rid, 32) for rid in _VEC_YMM]
        for n, rid in enumerate(_VEC_FP):
            r = self._vec_read(rid, 10)
            vec.mm[n], vec.mm_hi[n] = r & (1 << 64) - 1, r >> 64
        vec.mxcsr = self._vec_read(ux.UC_X86_REG_MXCSR, 4)
        vec.fsw = self._vec_read(ux.UC_X86_REG_FPSW, 2)
        tags = self._vec_read(ux.UC_X86_REG_FPTAG, 2)
        vec.ftw = sum(1 << n for n in range(8) if tags >> 2 * n & 3 != 3)
        return vec

    def set_vector(self, vec: VectorState) -> None:
        """Load YMM0-15, MXCSR and the x87 registers, FSW and tags; ZMM16-31, the upper ZMM halves and
        opmasks must be zero (the engine has no AVX-512)."""
        if any(v >> 256 for v in vec.zmm) or any(vec.zmm[16:]) or any(vec.k):
            raise UnicornBackendError("the engine has no AVX-512 state to load")
        for n, rid in enumerate(_VEC_YMM):
            self._vec_write(rid, vec.zmm[n], 32)
        for n, rid in enumerate(_VEC_FP):
            self._vec_write(rid, vec.mm[n] | vec.mm_hi[n] << 64, 10)
        self._vec_write(ux.UC_X86_REG_MXCSR, vec.mxcsr, 4)
        self._vec_write(ux.UC_X86_REG_FPSW, vec.fsw, 2)
        # The engine keeps only "empty or not" per register (its FPTAG write reads 11b as empty).
        self._vec_write(ux.UC_X86_REG_FPTAG, sum(0 if vec.ftw >> n & 1 else 3 << 2 * n for n in range(8)), 2)

    def close(self) -> None:
        """Release the engine; the RAM stays with `memory`."""
        self._eng.close()
        self._mapped.clear()

    # -- hooks (run inside uc_emu_start) --------------------------------------------------------------

    def _on_unmapped(self, _h: Any, access: int, address: int, size: int, value: int, _ud: Any) -> bool:
        try:
            if self._event is None and not self._rolling:
                self._event = self._npf_event(address, access)
        except BaseException as e:  # as _guard does for the other hooks
            if self._hook_error is None:
                self._hook_error = e
        return False

    def _on_prot(self, _h: Any, access: int, address: int, size: int, value: int, _ud: Any) -> bool:
        # RAM is only ever protected while an I/O instruction is being rolled back: stop there.
        return False

    def _on_intr(self, _h: Any, intno: int, _ud: Any) -> None:
        if self._intr is None and self._event is None and not self._rolling:
            _lib.uc_reg_read(self._h, ux.UC_X86_REG_RIP, ctypes.byref(self._rip_val))
            self._intr = (intno, self._rip_val.value)
        _lib.uc_emu_stop(self._h)

    def _on_cpuid(self, _h: Any, _ud: Any) -> int:
        """Answer CPUID from the backend's table (the engine's model, less HIDDEN_FEATURES)."""
        eng = self._eng
        leaf = eng.reg_read(ux.UC_X86_REG_EAX) & 0xFFFF_FFFF
        sub = eng.reg_read(ux.UC_X86_REG_ECX) & 0xFFFF_FFFF
        values = self._cpuid.query(leaf, sub)
        for reg, value in zip(_CPUID_OUT, values, strict=True):
            eng.reg_write(reg, value)  # a 32-bit result zero-extends into the 64-bit register
        return 1

    def _on_fastcall(self, entry: FastCall, _h: Any, _ud: Any) -> None:
        """The engine reached SYSCALL/SYSENTER (which it would step over): stop after it and perform
        the entry then (a register write from inside the hook would be moved on by the engine)."""
        if self._rolling or self._event is not None or self._intr is not None or self._fastcall is not None:
            return
        _lib.uc_reg_read(self._h, ux.UC_X86_REG_RIP, ctypes.byref(self._rip_val))
        self._fastcall = (entry, self._rip_val.value)
        _lib.uc_emu_stop(self._h)

    def _fast_system_call(self, entry: FastCall, rip: int) -> None:
        """Perform SYSCALL/SYSENTER (RIP is already past it), or raise its fault at `rip`."""
        regs = self.get_regs()
        try:
            outcome = entry(regs, self.get_control(), self._eng.msr_read)
        except GuestFault as fault:
            self._write_rip(rip)
            self._raise_event(fault.vector, fault.error_code, 0, rip, None)
            return
        self._load_segments(outcome.cs, outcome.ss, outcome.cpl)
        self.set_regs(outcome.regs, DIRTY_ALL)

    def _on_in(self, _h: Any, port: int, size: int, _ud: Any) -> int:
        self._io_exit(port, size, True)
        return 0

    def _on_out(self, _h: Any, port: int, size: int, value: int, _ud: Any) -> None:
        self._io_exit(port, size, False)

    def _io_exit(self, port: int, size: int, is_in: bool) -> None:
        if self._rolling or self._event is not None or self._intr is not None:
            return
        h = self._h
        # The helper runs with the register file synced to the instruction's start: snapshot it, stop at
        # the end of the block, and make RAM read-only so no store of the rest of the block lands.
        _lib.uc_context_save(h, self._snap)
        self._rolling = True
        self._event = IoEvent(port, size, is_in)
        _lib.uc_emu_stop(h)
        for region, _ in self._mapped:
            _lib.uc_mem_protect(h, region.gpa, region.size, ucc.UC_PROT_READ | ucc.UC_PROT_EXEC)

    # -- run ------------------------------------------------------------------------------------------

    def interruptible(self) -> bool:
        """RFLAGS.IF set and no STI/MOV SS shadow (QEMU's inhibit flag in hflags).

        QEMU clears the flag once it has run the instruction after STI/MOV SS/POP SS. When that
        instruction did not run in the engine (the kernel emulated it after an MMIO or I/O exit, an event
        was delivered), the flag is stale: RIP moved since the engine stopped, so the shadow is over. It
        is cleared here, when it matters (after HLT, at once: `_end_interrupt_shadow`).
        """
        _lib.uc_reg_read(self._h, ux.UC_X86_REG_RFLAGS, ctypes.byref(self._rip_val))
        if not self._rip_val.value & IF:
            return False
        eng, lay = self._eng, self._layout
        eng.save()
        hflags = struct.unpack_from("<I", eng.ctx_view, lay.hflags)[0]
        if not hflags & _HF_INHIBIT_IRQ:
            return True
        if not self._rip_moved:
            return False
        struct.pack_into("<I", eng.ctx_view, lay.hflags, hflags & ~_HF_INHIBIT_IRQ)
        eng.restore()
        return True

    def inject_interrupt(self, vector: int) -> None:
        """Deliver an external interrupt through the guest's IDT, RIP (the next instruction) as return."""
        if self._shutdown is not None:
            return
        _lib.uc_reg_read(self._h, ux.UC_X86_REG_RIP, ctypes.byref(self._rip_val))
        self._raise_event(vector, None, 0, self._rip_val.value, None, external=True)

    def set_timer(self, delay_ns: int | None) -> None:
        """Stop the next run (StoppedEvent with `timer`) after about `delay_ns`, as an instruction budget.

        An asynchronous uc_emu_stop is not safe: Unicorn can stop inside a translation block after an
        instruction's store and resume at the block's start, so a read-modify-write runs twice (seen
        with INC/DEC on memory). A budget stops between instructions. Once armed, every run keeps a
        budget (Unicorn flushes all translations whenever counting is switched on or off); the budget
        follows the instructions per second measured on runs that spent theirs.
        """
        delay = MAX_BUDGET_NS if delay_ns is None else min(max(delay_ns, 0), MAX_BUDGET_NS)
        self._budget = max(MIN_BUDGET, delay * self._ips // 1_000_000_000)

    def stop_at(self, rip: int) -> None:
        """Make the next run() stop (StoppedEvent) when RIP reaches `rip`, through Unicorn's exits."""
        self._stop_at = rip & _MASK64

    def ram_written(self, la: int, gpa: int, size: int) -> None:
        """Forget code the engine translated from RAM the kernel changed (self-modifying code through
        the emulator: stores from outside the engine are invisible to QEMU's own tracking).

        QEMU drops translations by the physical page behind a linear code address, so `la` names the
        page exactly when the current CPL may fetch through it; otherwise the page is only reachable as
        code through another mapping, and the whole cache is flushed before the guest runs again.
        """
        ctl = self.get_control()
        try:
            fetch_gpa, _ = self.walker.walk(ctl, la, PFEC_I | (PFEC_U if ctl.cpl == 3 else 0), False)
        except (GuestFault, TranslationError):
            fetch_gpa = -1
        if fetch_gpa == gpa:
            self._eng.ctl(ucc.UC_CTL_TB_REMOVE_CACHE, _u64(la), _u64(la + size))
        else:
            self._flush_pending = True

    def request_stop(self) -> None:
        """Make the current (or next) run() return StoppedEvent; callable from another thread.

        A stop that lands while run() is entering the engine can be lost (uc_emu_start clears Unicorn's
        own request): a caller on another thread repeats it until the run returns (machine.RunControl).
        """
        self._stop_requested = True
        if self._running and self._budget is None:
            # Without a budget only an asynchronous stop ends a run that never exits; it may repeat the
            # read-modify-write it lands in (see set_timer), acceptable for a run being abandoned.
            _lib.uc_emu_stop(self._h)

    def run(self, *, max_insns: int | None = None, timeout_us: int | None = None) -> BackendEvent:
        """Run the guest until the next exit or until the budget is spent (StoppedEvent).

        Guest exceptions the engine raises are delivered here without an exit; under a budget the
        run then ends with StoppedEvent (the budget cannot be carried over into a new engine run).
        """
        if self._shutdown is not None:
            return self._shutdown
        count = self.max_insns if max_insns is None else max_insns
        if self._budget is not None and not count:
            count = self._budget
        timeout = self.timeout_us if timeout_us is None else timeout_us
        if count != self._count or timeout != self._timeout:  # the ctypes arguments, rebuilt only then
            self._count = self._count_arg.value = count
            self._timeout = self._timeout_arg.value = timeout
        if self.memory.generation != self._mapped_generation:
            self._map_new_ram()
        if self._flush_pending:
            self._eng.ctl(ucc.UC_CTL_TB_FLUSH)
            self._flush_pending = False
            self.tb_flushes += 1
        stop_at = self._stop_at
        if stop_at is None:
            return self._run(count, timeout, None)
        self._stop_at = None
        self._set_exits(stop_at)
        try:
            return self._run(count, timeout, stop_at)
        finally:
            # The engine stops at an exit by translating a HLT there: forget that translation.
            self._set_exits(None)
            self._eng.ctl(ucc.UC_CTL_TB_FLUSH)
            self.tb_flushes += 1

    def _set_exits(self, rip: int | None) -> None:
        self._exit_buf[0] = rip or 0
        n = ctypes.c_size_t(0 if rip is None else 1)
        self._eng.ctl(ucc.UC_CTL_UC_EXITS, ctypes.cast(self._exit_buf, _void_p), n)

    def _run(self, count: int, timeout: int, stop_at: int | None) -> BackendEvent:
        h = self._h
        start_rip = self._start_rip
        emu_start = _lib.uc_emu_start
        while True:
            if self._stop_requested:
                self._stop_requested = False
                return StoppedEvent()
            self._event = None
            self._intr = None
            self._fastcall = None
            self._ctl = None
            self._regs_fresh = False
            self._mid_exec = False
            if not self._rip_known:
                _lib.uc_reg_read(h, _RIP, ctypes.byref(start_rip))
            self._running = True
            started = time.perf_counter() if self._budget is not None else 0.0
            err = emu_start(h, start_rip, self._until, self._timeout_arg, self._count_arg)
            self._running = False
            self._rip_known = False
            self._rip_moved = False
            event = self._stopped(err, count, timeout, stop_at, started)
            if event is not None:
                return event

    def _stopped(
        self, err: int, count: int, timeout: int, stop_at: int | None, started: float
    ) -> BackendEvent | None:
        """What stopped the engine (uc_emu_start returned `err`): the event, or None to run on."""
        h = self._h
        fastpath = self.fastpath
        if fastpath is not None:  # the unmapped-memory hook is the native one: its record
            npf = fastpath.take_npf()
            if npf is not None and self._event is None:
                self._event = self._npf_event(*npf)
        if self._rolling:
            _check(_lib.uc_context_restore(h, self._snap), "uc_context_restore")
            for region, _ in self._mapped:
                _lib.uc_mem_protect(h, region.gpa, region.size, ucc.UC_PROT_ALL)
            self._rolling = False
            # A snapshot taken inside the engine keeps RFLAGS as QEMU does while it executes: DF and
            # the arithmetic flags apart, out of the blob's field. Only the register API reads them.
            self._mid_exec = True
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        event = self._event
        if event is not None:
            return event
        intr = self._intr
        if self._fastcall is not None:
            self._fast_system_call(*self._fastcall)
        elif intr is not None:
            intno, rip = intr
            if intno == _INTR_HLT:
                if rip == stop_at:
                    return StoppedEvent(stop_at)  # the engine's exit, not a HLT: RIP stays
                self._write_rip(rip + self._hlt_length(rip))
                self._end_interrupt_shadow()
                return HltEvent()
            if intno == _INTR_SHUTDOWN:
                self._shutdown = ShutdownEvent("triple fault (raised by the engine)")
                return self._shutdown
            if intno >= 256:
                return self._engine_failure(f"unexpected engine event {intno:#x} at {rip:#x}")
            # A guest exception: Unicorn moved RIP to exception_next_eip; the hook saw the right one.
            self._write_rip(rip)
            self._engine_exception(intno, rip)
        elif err == ucc.UC_ERR_INSN_INVALID:
            # Unicorn stops on #UD instead of reporting it; RIP is at the instruction.
            rip_val = self._rip_val
            _lib.uc_reg_read(h, _RIP, ctypes.byref(rip_val))
            self._raise_event(UD, None, 0, rip_val.value, None)
        elif err != ucc.UC_ERR_OK:
            rip_val = self._rip_val
            _lib.uc_reg_read(h, _RIP, ctypes.byref(rip_val))
            detail = f"uc_emu_start: {_lib.uc_strerror(err).decode()} at {rip_val.value:#x}"
            return self._engine_failure(detail)
        else:
            # Nothing of ours stopped it: a budget ran out, request_stop(), or the timer.
            requested, self._stop_requested = self._stop_requested, False
            if self._budget is not None and count == self._budget and not requested:
                spent = time.perf_counter() - started
                if spent > 0:  # a full budget: calibrate instructions per second (smoothed)
                    self._ips = (3 * self._ips + int(count / spent)) // 4
            return StoppedEvent(timer=self._budget is not None and not requested)
        if self._shutdown is not None:
            return self._shutdown
        if count or timeout:
            # Delivery happened inside this budget; give control back rather than start a new one.
            return StoppedEvent(timer=self._budget is not None)
        return None

    # -- the native exit path ---------------------------------------------------------------------------

    def fast_cycle(self, handle: int, value: int) -> int:
        """Through the native exit path (`fastpath`, docs/fastpath.md): complete the planned MOV `handle`
        with `value`, run, and match the next stop against the learned plans. Returns the handle of the
        plan whose request is next (the registers are then in the context blob, as after get_control),
        or a negative code: NOT_RUN (nothing done: run() is not plain now, or the plan was dropped),
        STOPPED or NPF (completed and run; `fast_stopped` gives the event as run() would)."""
        fastpath = self.fastpath
        assert fastpath is not None
        if (
            self._stop_requested
            or not self._regs_fresh
            or self._stop_at is not None
            or self._budget is not None
            or self._flush_pending
            or self._shutdown is not None
            or self.max_insns
            or self.timeout_us
            or self.memory.generation != self._mapped_generation
        ):
            return _FAST_NOT_RUN  # what run() does beyond a plain run
        self._event = None
        self._intr = None
        self._fastcall = None
        self._ctl = None
        self._regs_fresh = False
        self._running = True
        result: int = fastpath.cycle(handle, value, 0, 0)
        self._running = False
        self._rip_known = False
        self._rip_moved = False
        self._mid_exec = False
        if result >= 0:
            if (
                self._event is None
                and self._intr is None
                and self._fastcall is None
                and self._hook_error is None
            ):
                self._ctl = self._ctl_last  # the control bytes matched the plans': the same Control
                self._regs_fresh = True
                return result
            return _FAST_STOPPED  # a hook of ours saw something too: the general way decides
        return result

    @property
    def fast_key(self) -> bytes:
        """The control-state bytes of the Control get_control returned last (what plans hold for)."""
        return self._ctl_key

    def fast_stopped(self) -> BackendEvent:
        """The event of a fast_cycle that did not end at a learned plan, as run() would have returned it."""
        fastpath = self.fastpath
        assert fastpath is not None
        event = self._stopped(fastpath.err, 0, 0, None, 0.0)
        return event if event is not None else self.run()

    def _npf_event(self, address: int, access: int) -> NpfEvent:
        event = self._last_npf  # a driver faults on the same address over and over
        if event.gpa != address or self._last_access != access:
            event = NpfEvent(address, access == _WRITE_UNMAPPED, access == _FETCH_UNMAPPED)
            self._last_npf, self._last_access = event, access
        return event

    def _engine_failure(self, detail: str) -> ShutdownEvent:
        """The engine stopped on something the backend has no model for: whatever the guest did, that is
        the backend's limit, so the vCPU shuts down saying so (never an exception out of run())."""
        self._shutdown = ShutdownEvent(detail, unsupported=True)
        return self._shutdown

    def _end_interrupt_shadow(self) -> None:
        """HLT completed: an STI just before it no longer blocks interrupts. QEMU clears its inhibit
        flag in the HLT helper, after the intercept that reports HLT to us, so `sti; hlt` (the idle
        loop) would otherwise look uninterruptible forever."""
        eng, lay = self._eng, self._layout
        eng.save()
        hflags = struct.unpack_from("<I", eng.ctx_view, lay.hflags)[0]
        if hflags & _HF_INHIBIT_IRQ:
            struct.pack_into("<I", eng.ctx_view, lay.hflags, hflags & ~_HF_INHIBIT_IRQ)
            eng.restore()

    def _write_rip(self, rip: int) -> None:
        self._start_rip.value = rip & _MASK64
        _lib.uc_reg_write(self._h, _RIP, ctypes.byref(self._start_rip))
        self._rip_known = True
        self._regs_fresh = False
        self._rip_moved = True

    def _hlt_length(self, rip: int) -> int:
        """Length of the HLT at RIP (prefixes included), as hardware reports it with the exit.

        The engine decoded a HLT there, so the bytes are prefixes up to an F4; the next page is read
        only if the prefixes run into it.
        """
        ctl = self.get_control()
        la = self._code_la(ctl, rip)
        rex = ctl.code_size == 64
        n = 0
        while n < 15:
            try:
                chunk = self._read_code(ctl, la + n, min(15 - n, PAGE_SIZE - ((la + n) & PAGE_MASK)))
            except (GuestFault, Unsupported):
                break
            for byte in chunk:
                n += 1
                if byte == 0xF4:
                    return n
                if byte not in _LEGACY_PREFIXES and not (rex and 0x40 <= byte <= 0x4F):
                    return 1
        return 1

    @staticmethod
    def _code_la(ctl: Control, rip: int) -> int:
        return rip if ctl.code_size == 64 else (ctl.segs[1].base + rip) & 0xFFFF_FFFF

    def _read_code(self, ctl: Control, la: int, size: int) -> bytes:
        return self._linear.read(ctl, la, size, PFEC_I | (PFEC_U if ctl.cpl == 3 else 0))

    def _engine_exception(self, vector: int, rip: int) -> None:
        """Deliver an exception the engine raised, with the error code QEMU recorded for it."""
        eng, lay = self._eng, self._layout
        eng.save()
        error_code, is_int = struct.unpack_from("<iI", eng.ctx_view, lay.error_code)
        # Delivery is ours, not QEMU's: QEMU must not think this exception is still being delivered, or
        # it turns the next one into #DF and the one after into a triple fault. Nor may it keep
        # `exception_is_int`: Unicorn moves RIP to the stale `exception_next_eip` before calling the
        # interrupt hook of any later event that sets neither (an intercepted HLT), losing the HLT's RIP.
        struct.pack_into("<i", eng.ctx_view, lay.old_exception, -1)
        struct.pack_into("<I", eng.ctx_view, lay.error_code + 4, 0)
        eng.restore()
        if is_int:
            # INT n / INT3 / INTO: Unicorn already moved RIP past the instruction (the return address);
            # a fault while delivering it must point back at it.
            self._raise_event(vector, None, self._soft_int_length(vector, rip), rip, None)
        else:
            ec = error_code & 0xFFFF_FFFF if vector in HAS_ERROR_CODE else None
            if vector == GP and ec == 0 and self._noncanonical_stack_access(rip):
                vector = SS
            self._raise_event(vector, ec, 0, rip, None)

    def _noncanonical_stack_access(self, rip: int) -> bool:
        """Whether the instruction at `rip` (64-bit code) addresses memory through SS at a non-canonical
        address: the CPU raises #SS(0) for it where QEMU raises #GP(0). Decoded on this rare path only.
        (A PUSH or POP with a non-canonical RSP is left as #GP: delivering #SS on that stack would fault
        again, so only an IST handler could tell them apart.)"""
        ctl = self.get_control()
        if ctl.code_size != 64:
            return False
        try:
            insn = decode_cached(self._read_code(ctl, rip, 15), 64)
        except (GuestFault, Unsupported, TranslationError):
            return False
        if type(insn) is not Insn:
            return False
        gprs = self.get_regs().gprs
        mem = insn.mem
        if mem is not None and not mem.vsib:
            if mem.seg != Seg.SS:
                return False
            return not canonical(mem.effective_address(gprs, rip + insn.length))
        return False

    def _soft_int_length(self, vector: int, next_rip: int) -> int:
        """Length of the software interrupt ending at `next_rip`: CC (INT3), CE (INTO) or CD ib."""
        if vector in (3, 4):
            ctl = self.get_control()
            try:
                last = self._read_code(ctl, self._code_la(ctl, next_rip - 1), 1)[0]
            except (GuestFault, Unsupported):
                last = -1
            if last == (0xCC if vector == 3 else 0xCE):
                return 1
        return 2

    # -- registers ------------------------------------------------------------------------------------

    def get_regs(self) -> Regs:
        """All GPRs, RIP and RFLAGS: from the CPU-state blob when get_control saved it after the last run
        (the kernel reads both on every exit) and nothing was written since, else in one batch call."""
        if self._regs_fresh:
            gprs = list(_GPRS.unpack_from(self._ctx_bytes, self._regs_at))
            rip, rflags = _RIP_RFLAGS.unpack_from(self._ctx_bytes, self._regs_at + 128)
        else:
            _lib.uc_reg_read_batch(self._h, self._ids, self._ptrs, _NREGS)
            gprs = list(_GPRS.unpack_from(self._vals))
            rip, rflags = _RIP_RFLAGS.unpack_from(self._vals, 128)
        regs = _new_regs(Regs)  # Regs(gprs, rip, rflags) without the dataclass __init__
        regs.gprs = gprs
        regs.rip = rip
        regs.rflags = rflags
        return regs

    def set_regs(self, regs: Regs, dirty: int) -> None:
        """Write the registers in `dirty` in one uc_reg_write_batch call, its arguments prebuilt per mask:
        the values are packed into a buffer in one call, and the pointers name their slots in it."""
        dirty &= DIRTY_ALL
        if not dirty:
            return
        entry = self._write_sets.get(dirty)
        if entry is None:
            entry = self._write_set(dirty)
        ids, ptrs, n, pick, tail, packer = entry
        values = pick(regs.gprs)
        try:
            if tail == 0:
                packer.pack_into(self._wvals, 0, *values)
            elif tail == 1:
                packer.pack_into(self._wvals, 0, *values, regs.rip)
            elif tail == 2:
                packer.pack_into(self._wvals, 0, *values, regs.rflags)
            else:
                packer.pack_into(self._wvals, 0, *values, regs.rip, regs.rflags)
        except struct.error:  # a value outside 0..2^64-1: store it modulo 2^64 like the CPU would
            regs = Regs([v & _MASK64 for v in regs.gprs], regs.rip & _MASK64, regs.rflags & _MASK64)
            return self.set_regs(regs, dirty)
        _reg_write_batch(self._h, ids, ptrs, n)
        self._regs_fresh = False
        if dirty & DIRTY_RIP:
            self._start_rip.value = regs.rip
            self._rip_known = True
            self._rip_moved = True

    def _write_set(self, dirty: int) -> _WriteSet:
        """uc_reg_write_batch's arguments for the registers in `dirty`, and how their values are packed:
        the dirty GPRs (an itemgetter, with two dummies so that it always returns a tuple), then RIP
        and RFLAGS when dirty (`tail`: bit 0 RIP, bit 1 RFLAGS)."""
        gprs = [n for n in range(16) if dirty >> n & 1]
        tail = (dirty >> 16) & 3
        regs = [*gprs, *(16 + i for i in range(2) if tail >> i & 1)]
        slots = [*range(len(gprs)), *(len(gprs) + 2 + i for i in range(len(regs) - len(gprs)))]
        ids = (ctypes.c_int * len(regs))(*(_REG_IDS[n] for n in regs))
        base = ctypes.addressof(self._wvals)
        ptrs = (_void_p * len(regs))(*(base + 8 * slot for slot in slots))
        self._keep.append((ids, ptrs))
        entry = (
            _void_p(ctypes.addressof(ids)),
            _void_p(ctypes.addressof(ptrs)),
            ctypes.c_int(len(regs)),
            itemgetter(*gprs, 0, 0),
            tail,
            struct.Struct(f"<{len(gprs) + 2 + len(regs) - len(gprs)}Q"),
        )
        if len(self._write_sets) < 512:
            self._write_sets[dirty] = entry
        return entry

    # -- control state --------------------------------------------------------------------------------

    def get_control(self) -> Control:
        """CRs, EFER, CPL and segment caches, read from one uc_context_save.

        Cached until the next run() (or a change made here). After a run the blob is saved again
        (~1 us) and the previous Control object is returned if none of its bytes changed, so the common
        exit costs no rebuild. Callers must not mutate it (set_control() copies what it needs).
        """
        ctl = self._ctl
        if ctl is None:
            # The blob is saved anyway; rebuild the Control only if its bytes changed since last time.
            # The span from hflags to EFER holds the segment caches, descriptor tables and CRs; what
            # lies between the CRs and EFER (A20 mask, MPX bounds) does not change as a guest runs.
            lay = self._layout
            _lib.uc_context_save(self._h, self._eng.ctx)
            self._regs_fresh = not self._mid_exec
            key = self._ctx_bytes[lay.hflags : lay.efer + 8].tobytes()
            ctl = self._ctl_last
            if key != self._ctl_key or ctl is None:
                ctl = self._ctl_last = self._read_control()
                self._ctl_key = key
            self._ctl = ctl
        return ctl

    def _forget_control(self) -> None:
        """Control state changed from here (or a caller may hold the last Control mutated): rebuild."""
        self._ctl = self._ctl_last = None
        self._ctl_key = b""

    def _read_control(self) -> Control:
        """Build a Control from the saved blob."""
        v, lay = self._eng.ctx_view, self._layout
        cr0, _cr1, cr2, cr3, cr4 = struct.unpack_from("<5Q", v, lay.cr)
        segs = [segment_cache(*struct.unpack_from("<I4xQII", v, lay.segs + i * _SEG_SIZE)) for i in range(6)]
        gdt = struct.unpack_from("<Q", v, lay.gdt + 8)[0], struct.unpack_from("<I", v, lay.gdt + 16)[0]
        idt = struct.unpack_from("<Q", v, lay.idt + 8)[0], struct.unpack_from("<I", v, lay.idt + 16)[0]
        return Control(
            cr0=cr0,
            cr2=cr2,
            cr3=cr3,
            cr4=cr4,
            efer=struct.unpack_from("<Q", v, lay.efer)[0],
            cpl=struct.unpack_from("<I", v, lay.hflags)[0] & _HF_CPL,
            segs=segs,
            gdtr=gdt,
            idtr=idt,
            tr=segment_cache(*struct.unpack_from("<I4xQII", v, lay.tr)),
            ldtr=segment_cache(*struct.unpack_from("<I4xQII", v, lay.segs + 6 * _SEG_SIZE)),
            # XCR0 is not in the registers the backend reads: report the most the engine can have (it
            # has no AVX state). VEX/EVEX are #UD on this CPUID whatever XCR0 says.
            xcr0=XCR0_X87 | XCR0_SSE,
        )

    def set_control(self, ctl: Control) -> None:
        """Load CRs, EFER, CPL, the six segment caches, GDTR/IDTR, TR and LDTR.

        CR4, CR3, EFER and CR0 go through Unicorn's register API first so that QEMU flushes its TLB and
        derives its CR-dependent flags (and enters long mode on CR0.PG with EFER.LME, as the CPU does);
        then the blob gets the exact EFER (LMA is not writable through WRMSR), the segment caches and the
        flags QEMU derives from them (CS32/SS32/CS64/ADDSEG/CPL).
        """
        eng, lay = self._eng, self._layout
        eng.msr_write(MSR_EFER, ctl.efer)
        eng.reg_write(ux.UC_X86_REG_CR4, ctl.cr4)
        eng.reg_write(ux.UC_X86_REG_CR3, ctl.cr3)
        eng.reg_write(ux.UC_X86_REG_CR0, ctl.cr0)
        eng.reg_write(ux.UC_X86_REG_CR2, ctl.cr2)
        eng.mmr_write(ux.UC_X86_REG_GDTR, 0, ctl.gdtr[0], ctl.gdtr[1])
        eng.mmr_write(ux.UC_X86_REG_IDTR, 0, ctl.idtr[0], ctl.idtr[1])
        eng.save()
        v = eng.ctx_view
        struct.pack_into("<Q", v, lay.efer, ctl.efer)
        struct.pack_into("<Q", v, lay.cr, ctl.cr0)
        struct.pack_into("<Q", v, lay.cr + 32, ctl.cr4)
        for at, seg in (
            *((lay.segs + i * _SEG_SIZE, seg) for i, seg in enumerate(ctl.segs)),
            (lay.segs + 6 * _SEG_SIZE, ctl.ldtr),
            (lay.tr, ctl.tr),
        ):
            struct.pack_into("<I4xQII", v, at, seg.selector, seg.base, seg.limit, _seg_flags(seg))
        self._fix_hflags(ctl.cpl)
        eng.restore()
        eng.ctl(ucc.UC_CTL_TLB_FLUSH)
        self._forget_control()

    def _fix_hflags(self, cpl: int) -> None:
        """Recompute the hflags QEMU derives from CR0, EFER and the segment caches in the saved blob."""
        v, lay = self._eng.ctx_view, self._layout
        cr0 = struct.unpack_from("<Q", v, lay.cr)[0]
        efer = struct.unpack_from("<Q", v, lay.efer)[0]
        eflags = struct.unpack_from("<Q", v, lay.eip + 8)[0]
        flags = [struct.unpack_from("<I", v, lay.segs + i * _SEG_SIZE + 20)[0] for i in range(6)]
        bases = [struct.unpack_from("<Q", v, lay.segs + i * _SEG_SIZE + 8)[0] for i in range(6)]
        hf = struct.unpack_from("<I", v, lay.hflags)[0] & ~_SEG_HFLAGS
        hf |= cpl & _HF_CPL
        if cr0 & CR0_PE:
            hf |= _HF_PE
        if efer & EFER_LMA:
            hf |= _HF_LMA
        if flags[2] & DESC_B:
            hf |= _HF_SS32
        if hf & _HF_LMA and flags[1] & DESC_L:
            hf |= _HF_CS32 | _HF_CS64
        else:
            if flags[1] & DESC_B:
                hf |= _HF_CS32
            if not cr0 & CR0_PE or eflags & VM or not hf & _HF_CS32 or bases[0] | bases[2] | bases[3]:
                hf |= _HF_ADDSEG
        struct.pack_into("<I", v, lay.hflags, hf)

    def invalidate_code(self) -> None:
        """Drop all translated code: needed after guest code in RAM was changed from outside the engine.

        Unicorn does not see stores to the shared mmap (by the kernel's emulation, a loader, a test), and
        uc_mem_write does not invalidate translations either.
        """
        self._eng.ctl(ucc.UC_CTL_TB_FLUSH)

    # -- exception delivery ---------------------------------------------------------------------------

    def inject_exception(self, vector: int, error_code: int | None, cr2: int | None) -> None:
        """Deliver `vector` through the guest's IDT now, with RIP (the faulting instruction) as return."""
        if self._shutdown is not None:
            return
        _lib.uc_reg_read(self._h, ux.UC_X86_REG_RIP, ctypes.byref(self._rip_val))
        self._raise_event(vector, error_code, 0, self._rip_val.value, cr2)

    def _raise_event(
        self,
        vector: int,
        error_code: int | None,
        soft_len: int,
        rip: int,
        cr2: int | None,
        *,
        external: bool = False,
    ) -> None:
        """Deliver an event with x86.delivery and load what it decided (or shut the vCPU down).

        `soft_len` is the length of a software interrupt (INT n) whose return address `rip` is past it.
        """
        regs = self.get_regs()
        regs.rip = rip
        try:
            outcome = deliver_event(
                vector,
                error_code,
                regs,
                self.get_control(),
                self._linear,
                soft_len=soft_len,
                cr2=cr2,
                external=external,
            )
        finally:
            self._ctl = None
        if isinstance(outcome, Shutdown):
            self._shutdown = ShutdownEvent(outcome.detail, outcome.unsupported)
            return
        if outcome.cr2 is not None:
            self._eng.reg_write(ux.UC_X86_REG_CR2, outcome.cr2)
        self._load_segments(outcome.cs, outcome.ss, outcome.cpl)
        self.set_regs(outcome.regs, (1 << 4) | DIRTY_RIP | DIRTY_RFLAGS)

    def _load_segments(self, cs: Segment, ss: Segment | None, cpl: int) -> None:
        eng, lay = self._eng, self._layout
        eng.save()
        v = eng.ctx_view
        struct.pack_into("<I4xQII", v, lay.segs + _SEG_SIZE, cs.selector, cs.base, cs.limit, _seg_flags(cs))
        if ss is not None:
            struct.pack_into(
                "<I4xQII", v, lay.segs + 2 * _SEG_SIZE, ss.selector, ss.base, ss.limit, _seg_flags(ss)
            )
        self._fix_hflags(cpl)
        eng.restore()
        self._forget_control()
