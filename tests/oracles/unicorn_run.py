"""Run a case on raw Unicorn: 64-bit mode, flat memory, the MMIO window mapped as ordinary RAM."""

from __future__ import annotations

import importlib
from typing import Any

from oracles.gen import CODE, PAGE, RAM, RAM_SIZE, WINDOW, WINDOW_SIZE, Case
from oracles.outcome import Outcome
from oracles.vmmio_run import FILLER, VECTORS
from vmmio.x86.state import VectorState

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
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_exception)
        return uc

    def _on_code(self, uc: Any, address: int, size: int, user_data: object) -> None:
        if address != CODE:
            uc.emu_stop()

    def _on_exception(self, uc: Any, vector: int, user_data: object) -> None:
        """A CPU exception the instruction raised (#DE, #GP, ...): record it and stop there."""
        self.vector = vector
        uc.emu_stop()

    def run(self, case: Case) -> Outcome:
        uc: Any = self.uc
        uc.mem_write(CODE, (case.code + FILLER * (PAGE // len(FILLER)))[:PAGE])
        # Unicorn keeps translated blocks across mem_write: drop them, or the previous case runs again.
        uc.ctl_remove_cache(CODE, CODE + PAGE)
        uc.mem_write(WINDOW, case.window())
        uc.mem_write(RAM, case.ram())
        for reg, value in zip(self.gpr_ids, case.gprs, strict=True):
            uc.reg_write(reg, value)
        uc.reg_write(self.fs_id, case.fs_base)
        uc.reg_write(self.gs_id, case.gs_base)
        uc.reg_write(self.rflags_id, case.rflags)
        uc.reg_write(self.rip_id, CODE)
        if case.vector is not None:
            self._set_vector(case.vector)
        error = fault = ""
        self.vector = -1
        try:
            uc.emu_start(CODE, CODE + PAGE, timeout=2_000_000)
        except self._uc_mod.UcError as exc:
            if exc.errno == self._uc_mod.UC_ERR_INSN_INVALID:
                fault = "#UD"
            else:
                error = f"unicorn error {exc} at rip {uc.reg_read(self.rip_id):#x}"
        if self.vector >= 0 and not error:
            fault = VECTORS.get(self.vector, f"vector {self.vector}")
        outcome = Outcome(
            gprs=[uc.reg_read(r) for r in self.gpr_ids],
            rip=uc.reg_read(self.rip_id),
            rflags=uc.reg_read(self.rflags_id),
            window=bytes(uc.mem_read(WINDOW, WINDOW_SIZE)),
            ram=bytes(uc.mem_read(RAM, RAM_SIZE)),
            error=error,
            fault=fault,
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
