"""The instruction behind an exit, read the way the CPU fetched it: for traces and statistics.

Device models never see decode state, and the tools do not need the kernel's either: between exits the
vCPU's registers and control state are readable (`Vcpu.regs`/`control`, `KvmVcpu.get_regs`/
`get_control`), so the bytes at CS:RIP are found through the guest's own segmentation and page tables
(`x86.paging.Walker.walk`, whose accessed/dirty updates are not applied: looking changes nothing) and
decoded again. vmmio's kernel keeps RIP at the instruction until it completes, so this is the instruction
that made the request. Linux's emulator (`--backend kvm`) completes a write (MMIO or OUT) before it
reports it, so RIP is already past the instruction: such exits are marked `past` and show the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from vmmio.abi import InoutExit, InstEmulExit, MmioExit, VmExit
from vmmio.memory import PAGE_MASK, PAGE_SIZE, GuestMemory
from vmmio.x86.decode import decode_cached
from vmmio.x86.faults import PFEC_I, PFEC_U, GuestFault
from vmmio.x86.format import format_insn
from vmmio.x86.insn import MAX_INSN_LEN, Insn
from vmmio.x86.paging import TranslationError, Walker
from vmmio.x86.regs import Seg
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import Control, Regs

__all__ = ["InsnAt", "StateReader", "Where", "cpu_state", "reports_writes_past", "state_reader"]


@runtime_checkable
class _KernelState(Protocol):
    @property
    def regs(self) -> Regs: ...
    @property
    def control(self) -> Control: ...


@runtime_checkable
class _KvmState(Protocol):
    def get_regs(self) -> Regs: ...
    def get_control(self) -> Control: ...


StateReader = Callable[[], tuple[Regs, Control]]


def state_reader(vcpu: object) -> StateReader | None:
    """How to read the registers and control state of vmmio's `Vcpu` or the KVM reference vCPU (None
    for other exit sources). Resolved once: a protocol check per exit would cost more than the read."""
    if isinstance(vcpu, _KernelState):
        kernel = vcpu
        return lambda: (kernel.regs, kernel.control)
    if isinstance(vcpu, _KvmState):
        kvm = vcpu
        return lambda: (kvm.get_regs(), kvm.get_control())
    return None


def cpu_state(vcpu: object) -> tuple[Regs, Control] | None:
    """The registers and control state of a vCPU now, if it has them (see `state_reader`)."""
    read = state_reader(vcpu)
    return None if read is None else read()


def reports_writes_past(vcpu: object) -> bool:
    """Whether the vCPU reports a write (MMIO or OUT) with RIP already past its instruction: KVM does."""
    return isinstance(vcpu, _KvmState) and not isinstance(vcpu, _KernelState)


def _is_write(ex: VmExit | None) -> bool:
    return (isinstance(ex, MmioExit) and ex.is_write) or (isinstance(ex, InoutExit) and not ex.is_in)


@dataclass(frozen=True, slots=True)
class Where:
    """Where the guest was at an exit: RIP, the instruction's bytes and text ("" when unreadable).

    `past`: RIP was already past the instruction that exited (KVM's writes); the text is the next one.
    """

    rip: int | None
    raw: bytes = b""
    insn: Insn | None = None
    text: str = ""
    past: bool = False


_NOWHERE = Where(None)
_CACHE_LIMIT = 4096


class InsnAt:
    """Reads the instruction at a vCPU's CS:RIP through guest paging; texts are cached by bytes and RIP."""

    def __init__(self, vcpu: object, memory: GuestMemory, walker: Walker) -> None:
        self.read_state = state_reader(vcpu)
        self.writes_past = reports_writes_past(vcpu)
        self.memory = memory
        self.walker = walker
        self._texts: dict[tuple[bytes, int, int], Where] = {}

    def __call__(self, ex: VmExit | None = None) -> Where:
        """The instruction at the exit (an `InstEmulExit` carries its own); `_NOWHERE` when unknowable."""
        state = self.read_state() if self.read_state is not None else None
        if isinstance(ex, InstEmulExit):
            return self._where(ex.insn, ex.rip, state[1].code_size if state is not None else 64)
        if state is None:
            return _NOWHERE
        regs, ctl = state
        mode = ctl.code_size
        where = self._where(self._fetch(ctl, regs.rip, regs.rflags, mode), regs.rip, mode)
        return replace(where, past=True) if self.writes_past and _is_write(ex) else where

    def _where(self, raw: bytes, rip: int, mode: int) -> Where:
        if not raw:
            return Where(rip, raw)
        key = (raw, rip, mode)
        hit = self._texts.get(key)
        if hit is None:
            insn = decode_cached(raw, mode)
            if isinstance(insn, Insn):
                hit = Where(rip, raw[: insn.length], insn, format_insn(insn, rip))
            else:
                hit = Where(rip, raw[:1], None, "(bad)")
            if len(self._texts) >= _CACHE_LIMIT:
                self._texts.clear()
            self._texts[key] = hit
        return hit

    def _fetch(self, ctl: Control, rip: int, rflags: int, mode: int) -> bytes:
        """Up to 15 bytes at CS:RIP, stopping where the code is not readable RAM."""
        access = PFEC_I | (PFEC_U if ctl.cpl == 3 else 0)
        out = b""
        try:
            la = linear_address(ctl, mode, int(Seg.CS), rip, 1, PFEC_I, rflags)
            while len(out) < MAX_INSN_LEN:
                gpa, _ = self.walker.walk(ctl, la + len(out), access, False)
                n = min(MAX_INSN_LEN - len(out), PAGE_SIZE - ((la + len(out)) & PAGE_MASK))
                region = self.memory.ram_at(gpa, 1)
                if region is None:
                    break
                n = min(n, region.end - gpa)
                out += bytes(region.view[gpa - region.gpa : gpa - region.gpa + n])
        except (GuestFault, TranslationError):
            pass
        return out
