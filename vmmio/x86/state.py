"""The CPU state an instruction reads and writes, as a VMCS guest-state area holds it.

`Regs` is what changes on nearly every instruction (GPRs, RIP, RFLAGS); `Control` is what decides modes,
paging and checks (CRs, EFER, CPL, segment caches, descriptor-table registers) and changes rarely. Both
are plain records shared by the kernel, the backends and the tests; the presets build the states an OS
loader leaves a CPU in, with every field open to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import overload

from vmmio.x86.regs import RFLAGS_FIXED1, Gpr

# Control-register and EFER bits.
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_LA57 = 1 << 12
CR4_OSXSAVE = 1 << 18
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# XCR0 (XSETBV) state components: VEX needs SSE|AVX enabled, EVEX also the three AVX-512 components.
XCR0_X87 = 1 << 0
XCR0_SSE = 1 << 1
XCR0_AVX = 1 << 2
XCR0_OPMASK = 1 << 5
XCR0_ZMM_HI256 = 1 << 6
XCR0_HI16_ZMM = 1 << 7
XCR0_AVX512 = XCR0_OPMASK | XCR0_ZMM_HI256 | XCR0_HI16_ZMM

# SSE usable, as firmware leaves the CPU for an OS: CR0.MP|ET|NE, CR4.OSFXSR|OSXMMEXCPT.
CR0_SSE = CR0_MP | CR0_ET | CR0_NE
CR4_SSE = CR4_OSFXSR | CR4_OSXMMEXCPT

# Write-back masks for Regs: bit n is GPR n (hardware numbering), then RIP and RFLAGS.
DIRTY_RIP = 1 << 16
DIRTY_RFLAGS = 1 << 17
DIRTY_ALL = (1 << 18) - 1

# Descriptor types (the 4-bit type field with S=1 for code/data).
TYPE_DATA_RW = 3  # read/write, accessed
TYPE_CODE_RX = 11  # execute/read, accessed
TYPE_TSS_BUSY = 11  # 64-bit or 32-bit busy TSS (S=0)
TYPE_LDT = 2  # S=0


@dataclass(slots=True)
class Segment:
    """A segment register's hidden part (descriptor cache), as VMX's guest-state area holds it."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    type: int = TYPE_DATA_RW  # descriptor type field
    s: bool = True  # code/data (True) or system descriptor
    dpl: int = 0
    present: bool = True
    db: bool = False  # D/B: default operand size (CS) or stack size (SS)
    l: bool = False  # 64-bit code segment (CS only)
    g: bool = False
    unusable: bool = False


def _default_segments() -> list[Segment]:
    return [Segment() for _ in range(6)]


def _default_tr() -> Segment:
    return Segment(type=TYPE_TSS_BUSY, s=False)


def _default_ldtr() -> Segment:
    return Segment(type=TYPE_LDT, s=False, unusable=True, present=False)


@dataclass(slots=True)
class Control:
    """Control state that decides modes, paging and checks; changes rarely compared to GPRs."""

    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    cpl: int = 0
    segs: list[Segment] = field(default_factory=_default_segments)  # ES CS SS DS FS GS
    gdtr: tuple[int, int] = (0, 0xFFFF)  # (base, limit)
    idtr: tuple[int, int] = (0, 0xFFFF)
    tr: Segment = field(default_factory=_default_tr)
    ldtr: Segment = field(default_factory=_default_ldtr)
    # PAE paging: the four PDPTEs as loaded with CR3 (VMX keeps them in the VMCS); None: read at CR3.
    pdptes: tuple[int, int, int, int] | None = None
    pkru: int = 0  # protection-key rights for user pages (CR4.PKE)
    # XCR0 as XSETBV set it: what an OS that enabled AVX has (x87, SSE, AVX). It decides VEX/EVEX #UD
    # together with CR4.OSXSAVE; backends that cannot read it say so (see each backend's get_control).
    xcr0: int = XCR0_X87 | XCR0_SSE | XCR0_AVX

    @property
    def code_size(self) -> int:
        """Default code size (16, 32 or 64) from CR0.PE, EFER.LMA and CS.L/CS.D."""
        if not self.cr0 & CR0_PE:
            return 16
        cs = self.segs[1]
        if self.efer & EFER_LMA and cs.l:
            return 64
        return 32 if cs.db else 16

    def copy(self) -> Control:
        """A deep copy: the segment records are mutable."""
        return Control(
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.efer,
            self.cpl,
            [_copy_segment(s) for s in self.segs],
            self.gdtr,
            self.idtr,
            _copy_segment(self.tr),
            _copy_segment(self.ldtr),
            self.pdptes,
            self.pkru,
            self.xcr0,
        )


def _copy_segment(s: Segment) -> Segment:
    return Segment(s.selector, s.base, s.limit, s.type, s.s, s.dpl, s.present, s.db, s.l, s.g, s.unusable)


class _GprField:
    """`regs.rax` and friends: a named view of one slot of `Regs.gprs`."""

    __slots__ = ("n",)

    def __init__(self, n: Gpr) -> None:
        self.n = int(n)

    @overload
    def __get__(self, obj: None, owner: type[Regs]) -> _GprField: ...
    @overload
    def __get__(self, obj: Regs, owner: type[Regs]) -> int: ...
    def __get__(self, obj: Regs | None, owner: type[Regs]) -> int | _GprField:
        return self if obj is None else obj.gprs[self.n]

    def __set__(self, obj: Regs, value: int) -> None:
        obj.gprs[self.n] = value


@dataclass(slots=True)
class Regs:
    """The GPRs (hardware numbering), RIP and RFLAGS: what an instruction reads and writes.

    Registers are also reachable by name: `regs.rax`, `regs.r15 = 1`.
    """

    gprs: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    rflags: int = RFLAGS_FIXED1

    rax = _GprField(Gpr.RAX)
    rcx = _GprField(Gpr.RCX)
    rdx = _GprField(Gpr.RDX)
    rbx = _GprField(Gpr.RBX)
    rsp = _GprField(Gpr.RSP)
    rbp = _GprField(Gpr.RBP)
    rsi = _GprField(Gpr.RSI)
    rdi = _GprField(Gpr.RDI)
    r8 = _GprField(Gpr.R8)
    r9 = _GprField(Gpr.R9)
    r10 = _GprField(Gpr.R10)
    r11 = _GprField(Gpr.R11)
    r12 = _GprField(Gpr.R12)
    r13 = _GprField(Gpr.R13)
    r14 = _GprField(Gpr.R14)
    r15 = _GprField(Gpr.R15)

    def copy(self) -> Regs:
        return Regs(self.gprs[:], self.rip, self.rflags)

    def __repr__(self) -> str:
        names = " ".join(f"{g.name.lower()}={v:#x}" for g, v in zip(Gpr, self.gprs, strict=True))
        return f"Regs({names} rip={self.rip:#x} rflags={self.rflags:#x})"


MXCSR_DEFAULT = 0x1F80  # all exceptions masked, round to nearest: the reset value


FSW_TOP = 7 << 11  # x87 status word: top-of-stack pointer
FSW_ES = 1 << 7  # x87 status word: an unmasked exception is pending (#MF on the next MMX/x87 instruction)


@dataclass(slots=True)
class VectorState:
    """The vector registers: ZMM0-31 (whose low 128/256 bits are XMMn/YMMn), opmasks k0-k7, MXCSR, and
    MMX mm0-7 (the x87 registers' mantissas). Registers as unsigned ints, little-endian lanes.

    MMX instructions also touch the x87 state they alias (SDM vol. 1, 9.5): every one sets TOP to 0 and
    all tags valid, and a write to mmN sets bits 79:64 of the x87 register RN to ones. `fsw`, `ftw` and
    `mm_hi` hold that much of it, by physical register number (not stack order).

    An execution backend holds as much of it as its CPU has; the rest stays zero.
    """

    zmm: list[int] = field(default_factory=lambda: [0] * 32)
    k: list[int] = field(default_factory=lambda: [0] * 8)
    mxcsr: int = MXCSR_DEFAULT
    mm: list[int] = field(default_factory=lambda: [0] * 8)
    fsw: int = 0  # x87 status word
    ftw: int = 0  # x87 tag word, abridged as FXSAVE stores it: bit n set when RN is not empty
    mm_hi: list[int] = field(default_factory=lambda: [0] * 8)  # bits 79:64 (sign, exponent) of RN

    def copy(self) -> VectorState:
        return VectorState(self.zmm[:], self.k[:], self.mxcsr, self.mm[:], self.fsw, self.ftw, self.mm_hi[:])

    def __repr__(self) -> str:
        """The fields that are not 0, in hex (all of them in decimal run to thousands of digits)."""
        named = [(f"zmm{n}", v) for n, v in enumerate(self.zmm)] + [
            (f"k{n}", v) for n, v in enumerate(self.k)
        ]
        named += [(f"mm{n}", v) for n, v in enumerate(self.mm)]
        named += [(f"mm_hi{n}", v) for n, v in enumerate(self.mm_hi)]
        named += [("mxcsr", self.mxcsr), ("fsw", self.fsw), ("ftw", self.ftw)]
        return "VectorState(" + ", ".join(f"{k}={v:#x}" for k, v in named if v) + ")"


@dataclass(slots=True)
class CpuState:
    """Everything a vCPU starts from: registers and control state."""

    regs: Regs = field(default_factory=Regs)
    control: Control = field(default_factory=Control)


def flat_segment(selector: int, *, code: bool = False, bits: int = 32, dpl: int = 0) -> Segment:
    """A flat 4 GiB code or data segment; `bits` 64 makes a long-mode code segment (L=1, D=0)."""
    return Segment(
        selector=selector,
        limit=0xFFFF_FFFF,
        type=TYPE_CODE_RX if code else TYPE_DATA_RW,
        dpl=dpl,
        db=bits == 32 or (not code and bits == 64),
        l=code and bits == 64,
        g=True,
    )


def long_mode_control(
    cr3: int,
    code_selector: int = 8,
    *,
    data_selector: int = 0,
    cr0: int = CR0_PE | CR0_PG | CR0_WP,
    cr4: int = CR4_PAE,
    efer: int = EFER_LME | EFER_LMA | EFER_NXE,
    gdtr: tuple[int, int] = (0, 0xFFFF),
    idtr: tuple[int, int] = (0, 0xFFFF),
) -> Control:
    """64-bit mode with 4-level paging rooted at `cr3`: the state a 64-bit kernel runs in.

    Data segment caches keep their reset shape with `data_selector` (64-bit mode checks neither
    their limits nor, for a null selector, their use); pass `segs` to a Control for anything else.
    """
    ctl = Control(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer, gdtr=gdtr, idtr=idtr)
    ctl.segs = [Segment(selector=data_selector) for _ in range(6)]
    ctl.segs[1] = flat_segment(code_selector, code=True, bits=64)
    return ctl


def flat_protected_control(
    code_selector: int = 0x18,
    data_selector: int = 0x10,
    *,
    cr0: int = CR0_PE,
    cr3: int = 0,
    cr4: int = 0,
    efer: int = 0,
    gdtr: tuple[int, int] = (0, 0xFFFF),
    idtr: tuple[int, int] = (0, 0xFFFF),
) -> Control:
    """Flat 32-bit protected mode (paging off unless `cr0` says otherwise): where multiboot starts."""
    ctl = Control(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer, gdtr=gdtr, idtr=idtr)
    ctl.segs = [flat_segment(data_selector) for _ in range(6)]
    ctl.segs[1] = flat_segment(code_selector, code=True)
    return ctl


__all__ = [
    "CR0_AM",
    "CR0_EM",
    "CR0_ET",
    "CR0_MP",
    "CR0_NE",
    "CR0_PE",
    "CR0_PG",
    "CR0_SSE",
    "CR0_TS",
    "CR0_WP",
    "CR4_LA57",
    "CR4_OSFXSR",
    "CR4_OSXMMEXCPT",
    "CR4_OSXSAVE",
    "CR4_PAE",
    "CR4_PKE",
    "CR4_PSE",
    "CR4_SMAP",
    "CR4_SMEP",
    "CR4_SSE",
    "DIRTY_ALL",
    "DIRTY_RFLAGS",
    "DIRTY_RIP",
    "EFER_LMA",
    "EFER_LME",
    "EFER_NXE",
    "EFER_SCE",
    "FSW_ES",
    "FSW_TOP",
    "MXCSR_DEFAULT",
    "XCR0_AVX",
    "XCR0_AVX512",
    "XCR0_HI16_ZMM",
    "XCR0_OPMASK",
    "XCR0_SSE",
    "XCR0_X87",
    "XCR0_ZMM_HI256",
    "Control",
    "CpuState",
    "Regs",
    "Segment",
    "VectorState",
    "flat_protected_control",
    "flat_segment",
    "long_mode_control",
]
