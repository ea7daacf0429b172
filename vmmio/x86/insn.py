"""The decoder's output: one immutable record per decoded instruction.

Everything the emulator needs is here, so the emulator never looks at instruction bytes. Records are
shared through the decode cache, hence immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from vmmio.x86.regs import NO_REG, RIP_REG, VEC_REG

MAX_INSN_LEN = 15  # the CPU raises #GP when decoding runs past this many bytes


class OpMap(IntEnum):
    """Opcode map of the opcode byte (VEX/EVEX maps share the legacy escape numbering)."""

    ONE = 0  # one-byte map
    M0F = 1  # 0F xx
    M0F38 = 2  # 0F 38 xx
    M0F3A = 3  # 0F 3A xx
    X87 = 4  # D8-DF escape (opcode is the D8-DF byte)
    M3DNOW = 5  # 0F 0F modrm imm8 (opcode is the imm8 suffix)
    EVEX_MAP5 = 6  # EVEX map 5 (AVX512-FP16)
    EVEX_MAP6 = 7  # EVEX map 6 (AVX512-FP16)
    XOP8 = 8  # AMD XOP map 8
    XOP9 = 9
    XOPA = 10


class Encoding(IntEnum):
    LEGACY = 0
    VEX = 1
    EVEX = 2
    XOP = 3


class DecodeStatus(IntEnum):
    """Why bytes did not decode into an instruction the emulator may run."""

    TRUNCATED = 1  # the byte string ended before the instruction did (fetch more, or #PF/#GP at fetch)
    TOO_LONG = 2  # longer than 15 bytes: #GP(0) on the CPU
    BAD_LOCK = 3  # LOCK on a form that does not allow it: #UD
    UNDEFINED = 4  # no instruction has this encoding in this mode: #UD


@dataclass(frozen=True, slots=True)
class DecodeError:
    status: DecodeStatus
    length: int  # bytes consumed before the problem was seen (15 for TOO_LONG)
    detail: str


@dataclass(frozen=True, slots=True)
class MemOperand:
    """A ModRM/SIB/moffs memory operand; `seg` already has defaults and overrides applied."""

    seg: int  # Seg number
    base: int  # GPR number, NO_REG, or RIP_REG (RIP-relative: base is the next instruction's RIP)
    index: int  # GPR number, NO_REG, or XMM_REG/YMM_REG/ZMM_REG + n (VSIB: gathers, scatters)
    scale: int  # 1, 2, 4 or 8
    disp: int  # signed displacement (moffs: the unsigned offset; EVEX disp8: already multiplied by N)
    addr_size: int  # 2, 4 or 8 bytes

    @property
    def vsib(self) -> bool:
        """A vector index: one address per element, so there is no single effective address."""
        return self.index >= VEC_REG

    def effective_address(self, gprs: list[int], next_rip: int) -> int:
        """Offset within the segment (before adding the segment base), wrapped to the address size."""
        ea = self.disp
        if self.base >= 0:
            ea += next_rip if self.base == RIP_REG else gprs[self.base]
        if self.index != NO_REG:
            if self.index >= VEC_REG:
                raise ValueError("a VSIB operand has one address per vector element")
            ea += gprs[self.index] * self.scale
        return ea & ((1 << (self.addr_size * 8)) - 1)


@dataclass(frozen=True, slots=True)
class Insn:
    """A decoded instruction.

    `opsize` is the effective operand-size attribute (2, 4 or 8) after mode, 66h, REX.W and the
    default-64/forced-64 rules; `width` is what the operation works on (1 for byte forms).
    """

    length: int
    mode: int  # code size the instruction was decoded for: 16, 32 or 64
    encoding: Encoding
    opmap: OpMap
    opcode: int  # the opcode byte within its map
    mnemonic: str  # lower-case Intel mnemonic ("mov", "add", ...); "(bad)" never appears here
    opsize: int  # 2, 4 or 8
    width: int  # bytes the operation works on: 1 for byte forms (the table's `b`), else `opsize`
    addr_size: int  # 2, 4 or 8
    modrm: int  # the ModRM byte, or -1 if the form has none
    reg: int  # ModRM.reg with REX.R applied (0..15), or -1 without ModRM
    rm: int  # ModRM.rm with REX.B applied for register forms (mod == 3), else -1
    mem: MemOperand | None  # the memory operand, if any
    imm: int  # first immediate, sign-interpreted at its encoded width (0 if none)
    imm_size: int  # bytes of the first immediate (0 if none)
    rex: int  # the effective REX byte (0x40-0x4F) or 0; decides AH..BH versus SPL..DIL
    rep: int  # 0, 0xF3 or 0xF2: the last of F2/F3 seen
    lock: bool
    opsize_prefix: bool  # 66h present
    seg_override: int  # Seg number of the last segment override prefix, or -1
    vex_l: int  # VEX.L / EVEX.L'L, 0 for legacy encodings
    raw: bytes  # the instruction's own bytes (exactly `length` of them)
