"""SYSCALL and SYSENTER, the fast system-call entries, as the CPU performs them (SDM vol. 2B).

Neither touches memory, so the kernel never emulates them; they matter to an execution backend whose
engine does not perform them (Unicorn hands both to a hook and otherwise steps over them). The results
are `Delivered` records, like an interrupt delivery: new registers, CS and SS caches, CPL. Their returns
(SYSRET, SYSEXIT) the engine runs itself.
"""

from __future__ import annotations

from collections.abc import Callable

from vmmio.x86.delivery import Delivered
from vmmio.x86.faults import GP, UD, GuestFault
from vmmio.x86.regs import IF, RF, VM, Gpr
from vmmio.x86.state import CR0_PE, EFER_LMA, EFER_SCE, Control, Regs, Segment, flat_segment

MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK = 0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084
FAST_MSRS = (MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP, MSR_STAR, MSR_LSTAR, MSR_FMASK)

ReadMsr = Callable[[int], int]


def _kernel_segments(selector: int, long_mode: bool) -> tuple[Segment, Segment]:
    """The fixed flat ring-0 CS (64-bit in IA-32e mode) and SS both entries load, whatever the GDT says."""
    cs = flat_segment(selector & 0xFFFC, code=True, bits=64 if long_mode else 32)
    return cs, flat_segment((selector & 0xFFFC) + 8)


def syscall(regs: Regs, ctl: Control, rdmsr: ReadMsr) -> Delivered:
    """SYSCALL with `regs.rip` already past it: RCX and R11 get RIP and RFLAGS, RIP comes from LSTAR.

    #UD unless EFER.SCE is set and the CPU is in 64-bit mode (Intel: compatibility mode has no SYSCALL).
    """
    if not ctl.efer & EFER_SCE or not (ctl.efer & EFER_LMA and ctl.segs[1].l):
        raise GuestFault(UD)
    out = regs.copy()
    out.gprs[Gpr.RCX] = regs.rip
    out.gprs[Gpr.R11] = regs.rflags & ~RF
    out.rip = rdmsr(MSR_LSTAR)
    out.rflags = (regs.rflags & ~rdmsr(MSR_FMASK) & ~RF) | 2
    cs, ss = _kernel_segments(rdmsr(MSR_STAR) >> 32 & 0xFFFF, True)
    return Delivered(out, cs, ss, 0, None)


def sysenter(regs: Regs, ctl: Control, rdmsr: ReadMsr) -> Delivered:
    """SYSENTER: RSP and RIP from the SYSENTER MSRs, flat ring-0 segments from SYSENTER_CS.

    #GP(0) in real mode or with a null SYSENTER_CS (Intel: SYSENTER also works in compatibility mode).
    """
    selector = rdmsr(MSR_SYSENTER_CS) & 0xFFFF
    if not ctl.cr0 & CR0_PE or not selector & 0xFFFC:
        raise GuestFault(GP, 0)
    long_mode = bool(ctl.efer & EFER_LMA)
    width = (1 << 64) - 1 if long_mode else 0xFFFF_FFFF
    out = regs.copy()
    out.gprs[Gpr.RSP] = rdmsr(MSR_SYSENTER_ESP) & width
    out.rip = rdmsr(MSR_SYSENTER_EIP) & width
    out.rflags = regs.rflags & ~(VM | IF | RF) | 2
    cs, ss = _kernel_segments(selector, long_mode)
    return Delivered(out, cs, ss, 0, None)


__all__ = ["FAST_MSRS", "MSR_FMASK", "MSR_LSTAR", "MSR_STAR", "ReadMsr", "syscall", "sysenter"]
