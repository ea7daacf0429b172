"""Run a case on raw Unicorn: 64-bit mode, flat memory, the MMIO window mapped as ordinary RAM.

Every case enters its code with an IRETQ from a stub page, which loads CS, SS and the CPL from
gen_ctl.ORACLE_GDT: CPL 0 (CS 0x10, SS 0x18) for the first families and "kernel" cases, CPL 3 (CS 0x33,
SS 0x2B) for "user" ones, from the CPU state saved when the engine was built (restored before each case,
with GDTR, IDTR, LDTR, TR and CR0 set again: system instructions change them). An exception stops the
engine through an interrupt hook and is reported by vector (raw Unicorn keeps no error code the binding
can read).
"""

from __future__ import annotations

import importlib
from typing import Any

from oracles.gen import CODE, PAGE, RAM, RAM_SIZE, WINDOW, WINDOW_SIZE, Case
from oracles.gen_ctl import (
    GDT_BASE,
    GDT_LIMIT,
    IDTR,
    KERNEL_CS,
    KERNEL_SS,
    TR_SELECTOR,
    USER_CS,
    USER_SS,
    gdt_bytes,
)
from oracles.outcome import Outcome
from oracles.vmmio_run import SEG_NAMES, VECTORS
from vmmio.x86.state import VectorState

STUB = 0x38_0000  # IRETQ into the case
KSTACK = STUB + PAGE  # the IRETQ frame (top of this page)
_IRETQ = b"\x48\xcf"
_HLT = b"\xf4"
_CR0_ENV = 0x33  # PE MP ET NE: bits 15:0 of what the other executors run with (no paging here)
_CR0_FLAT = 0x11  # Unicorn's own
_TSS_FLAGS = 0x8B00  # present, busy 64-bit TSS (descriptor high-dword layout)

__all__ = ["UnicornRunner"]


class UnicornRunner:
    """One engine reused for every case (creating one costs milliseconds): memory and registers are
    rewritten per case. A code hook stops the engine as soon as it reaches any instruction other than
    the case's own (a REP string instruction re-enters it once per iteration)."""

    def __init__(self) -> None:
        # Untyped binding: keep it behind Any.
        unicorn: Any = importlib.import_module("unicorn")
        x: Any = importlib.import_module("unicorn.x86_const")
        self._uc_mod = unicorn
        self.x = x
        self.gpr_ids: list[int] = [
            x.UC_X86_REG_RAX,
            x.UC_X86_REG_RCX,
            x.UC_X86_REG_RDX,
            x.UC_X86_REG_RBX,
            x.UC_X86_REG_RSP,
            x.UC_X86_REG_RBP,
            x.UC_X86_REG_RSI,
            x.UC_X86_REG_RDI,
            x.UC_X86_REG_R8,
            x.UC_X86_REG_R9,
            x.UC_X86_REG_R10,
            x.UC_X86_REG_R11,
            x.UC_X86_REG_R12,
            x.UC_X86_REG_R13,
            x.UC_X86_REG_R14,
            x.UC_X86_REG_R15,
        ]
        self.rip_id = x.UC_X86_REG_RIP
        self.rflags_id = x.UC_X86_REG_RFLAGS
        self.fs_id = x.UC_X86_REG_FS_BASE
        self.gs_id = x.UC_X86_REG_GS_BASE
        # Vector cases: YMM0-15, the x87 registers R0-R7 (physical; UC_X86_REG_MM* do nothing in 64-bit
        # mode), FSW, the tag word and MXCSR: what the engine has (no AVX-512).
        self.ymm_ids: list[int] = [getattr(x, f"UC_X86_REG_YMM{n}") for n in range(16)]
        self.fp_ids: list[int] = [getattr(x, f"UC_X86_REG_FP{n}") for n in range(8)]
        self.vec_ids = (x.UC_X86_REG_MXCSR, x.UC_X86_REG_FPSW, x.UC_X86_REG_FPTAG)
        self.vector = -1
        self.uc = self._engine()

    def _engine(self) -> Any:
        """A fresh engine with the layout mapped and the hooks installed. An engine stopped while it
        delivers a CPU exception is not reused: it would count the next exception as a double fault."""
        unicorn = self._uc_mod
        uc: Any = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        uc.mem_map(CODE, PAGE)
        uc.mem_map(WINDOW, WINDOW_SIZE)
        uc.mem_map(RAM, RAM_SIZE)
        uc.hook_add(unicorn.UC_HOOK_CODE, self._on_code, begin=CODE, end=CODE + PAGE - 1)
        uc.mem_map(GDT_BASE & ~(PAGE - 1), PAGE)
        uc.mem_map(STUB, 2 * PAGE)
        uc.mem_write(STUB, _IRETQ)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_exception)
        # The CPU as built (CPL 0): restored before each case, whatever CPL or tables the last one left.
        self._reset = uc.context_save()
        return uc

    def _on_code(self, uc: Any, address: int, size: int, user_data: object) -> None:
        if address != CODE:
            uc.emu_stop()

    def _on_exception(self, uc: Any, vector: int, user_data: object) -> None:
        """A CPU exception the instruction raised (#DE, #GP, ...): record it and stop there (the first one:
        delivering it through the case's IDT may raise more)."""
        if self.vector < 0:
            self.vector = vector
        uc.emu_stop()

    def run(self, case: Case) -> Outcome:
        uc: Any = self.uc
        # HLTs after the instruction (the other executors have UD2s): one-byte instructions end QEMU's
        # translation blocks wherever a branch lands, so none reads past the code page.
        uc.mem_write(CODE, (case.code + _HLT * PAGE)[:PAGE])
        # Unicorn keeps translated blocks across mem_write: drop them, or the previous case runs again.
        uc.ctl_remove_cache(CODE, CODE + PAGE)
        uc.mem_write(WINDOW, case.window())
        uc.mem_write(RAM, case.ram())
        uc.context_restore(self._reset)
        for reg, value in zip(self.gpr_ids, case.gprs, strict=True):
            uc.reg_write(reg, value)
        x = self.x
        uc.reg_write(self.fs_id, case.fs_base)
        uc.reg_write(self.gs_id, case.gs_base)
        uc.mem_write(GDT_BASE, gdt_bytes())
        uc.reg_write(x.UC_X86_REG_GDTR, (0, GDT_BASE, GDT_LIMIT, 0))
        uc.reg_write(x.UC_X86_REG_IDTR, (0, *IDTR, 0))
        uc.reg_write(x.UC_X86_REG_LDTR, (0, 0, 0, 0))
        uc.reg_write(x.UC_X86_REG_TR, (TR_SELECTOR, 0, 0x67, _TSS_FLAGS))
        uc.reg_write(x.UC_X86_REG_CR0, _CR0_ENV if case.env else _CR0_FLAT)
        user = case.env == "user"
        cs, ss = (USER_CS, USER_SS) if user else (KERNEL_CS, KERNEL_SS)
        frame = b"".join(v.to_bytes(8, "little") for v in (CODE, cs, case.rflags, case.gprs[4], ss))
        uc.mem_write(KSTACK + PAGE - len(frame), frame)
        uc.reg_write(self.gpr_ids[4], KSTACK + PAGE - len(frame))
        if case.vector is not None:
            self._set_vector(case.vector)
        error = fault = ""
        self.vector = -1
        try:
            uc.emu_start(STUB, CODE + PAGE, timeout=2_000_000)
        except self._uc_mod.UcError as exc:
            if exc.errno == self._uc_mod.UC_ERR_INSN_INVALID:
                fault = "#UD"
            else:
                error = f"unicorn error {exc} at rip {uc.reg_read(self.rip_id):#x}"
        if self.vector >= 0 and not error:
            fault = VECTORS.get(self.vector, f"vector {self.vector}")
            if self.vector == 14:
                fault += f" at {uc.reg_read(x.UC_X86_REG_CR2):#x}"
        state: dict[str, object] = {}
        if case.env:
            seg_ids = [x.UC_X86_REG_ES, x.UC_X86_REG_CS, x.UC_X86_REG_SS, x.UC_X86_REG_DS]
            seg_ids += [x.UC_X86_REG_FS, x.UC_X86_REG_GS]
            state = {name: uc.reg_read(r) for name, r in zip(SEG_NAMES, seg_ids, strict=True)}
            for name, reg in (("gdtr", x.UC_X86_REG_GDTR), ("idtr", x.UC_X86_REG_IDTR)):
                _sel, base, limit, _flags = uc.reg_read(reg)
                state[name] = (base, limit)
            state["ldtr"] = uc.reg_read(x.UC_X86_REG_LDTR)[0]
            state["tr"] = uc.reg_read(x.UC_X86_REG_TR)[0]
            state["cr0"] = uc.reg_read(x.UC_X86_REG_CR0) & 0xFFFF
        outcome = Outcome(
            gprs=[uc.reg_read(r) for r in self.gpr_ids],
            rip=uc.reg_read(self.rip_id),
            rflags=uc.reg_read(self.rflags_id),
            window=bytes(uc.mem_read(WINDOW, WINDOW_SIZE)),
            ram=bytes(uc.mem_read(RAM, RAM_SIZE)),
            error=error,
            fault=fault,
            state=state,
            gdt=bytes(uc.mem_read(GDT_BASE, GDT_LIMIT + 1)) if case.env else b"",
            vector=self._get_vector() if case.vector is not None else None,
        )
        if self.vector >= 0:
            self.uc = self._engine()
        return outcome

    def _set_vector(self, vec: VectorState) -> None:
        uc: Any = self.uc
        for rid, z in zip(self.ymm_ids, vec.zmm, strict=False):
            uc.reg_write(rid, z & (1 << 256) - 1)
        for n, rid in enumerate(self.fp_ids):
            uc.reg_write(rid, (vec.mm[n], vec.mm_hi[n]))
        mxcsr, fsw, ftw = self.vec_ids
        uc.reg_write(mxcsr, vec.mxcsr)
        uc.reg_write(fsw, vec.fsw)
        uc.reg_write(ftw, sum(0 if vec.ftw >> n & 1 else 3 << 2 * n for n in range(8)))

    def _get_vector(self) -> VectorState:
        uc: Any = self.uc
        vec = VectorState()
        vec.zmm[:16] = [uc.reg_read(rid) for rid in self.ymm_ids]
        for n, rid in enumerate(self.fp_ids):
            vec.mm[n], vec.mm_hi[n] = uc.reg_read(rid)
        mxcsr, fsw, ftw = self.vec_ids
        vec.mxcsr, vec.fsw = uc.reg_read(mxcsr), uc.reg_read(fsw)
        tags = uc.reg_read(ftw)
        vec.ftw = sum(1 << n for n in range(8) if tags >> 2 * n & 3 != 3)
        return vec
