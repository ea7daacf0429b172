"""Register numbering shared by the decoder, the emulator and the backends.

GPRs use the hardware encoding (ModRM/REX numbering), so a decoded register field indexes the register
file directly. Segment registers likewise use the encoding of the ModRM.reg field of `mov Sreg`.
"""

from enum import IntEnum


class Gpr(IntEnum):
    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


class Seg(IntEnum):
    ES = 0
    CS = 1
    SS = 2
    DS = 3
    FS = 4
    GS = 5


# Pseudo-register numbers used in memory operands.
NO_REG = -1
RIP_REG = 16
# A VSIB index (gathers, scatters) in MemOperand.index: XMM_REG + n, YMM_REG + n or ZMM_REG + n.
XMM_REG = 32
YMM_REG = 64
ZMM_REG = 96
VEC_REG = XMM_REG  # indexes from here on are vector registers


def vector_name(reg: int) -> str:
    """`xmm4`, `ymm20`, `zmm31` for XMM_REG + 4, YMM_REG + 20, ZMM_REG + 31."""
    return f"{'xyz'[(reg - VEC_REG) >> 5]}mm{reg & 31}"


# RFLAGS bits.
CF = 1 << 0
PF = 1 << 2
AF = 1 << 4
ZF = 1 << 6
SF = 1 << 7
TF = 1 << 8
IF = 1 << 9
DF = 1 << 10
OF = 1 << 11
IOPL = 3 << 12
NT = 1 << 14
RF = 1 << 16
VM = 1 << 17
AC = 1 << 18
VIF = 1 << 19
VIP = 1 << 20
ID = 1 << 21
STATUS_FLAGS = CF | PF | AF | ZF | SF | OF
RFLAGS_FIXED1 = 1 << 1

MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}
SIGN = {1: 0x80, 2: 0x8000, 4: 0x8000_0000, 8: 0x8000_0000_0000_0000}

GPR_NAMES = {
    8: (
        "rax",
        "rcx",
        "rdx",
        "rbx",
        "rsp",
        "rbp",
        "rsi",
        "rdi",
        "r8",
        "r9",
        "r10",
        "r11",
        "r12",
        "r13",
        "r14",
        "r15",
    ),
    4: (
        "eax",
        "ecx",
        "edx",
        "ebx",
        "esp",
        "ebp",
        "esi",
        "edi",
        "r8d",
        "r9d",
        "r10d",
        "r11d",
        "r12d",
        "r13d",
        "r14d",
        "r15d",
    ),
    2: (
        "ax",
        "cx",
        "dx",
        "bx",
        "sp",
        "bp",
        "si",
        "di",
        "r8w",
        "r9w",
        "r10w",
        "r11w",
        "r12w",
        "r13w",
        "r14w",
        "r15w",
    ),
    1: (
        "al",
        "cl",
        "dl",
        "bl",
        "spl",
        "bpl",
        "sil",
        "dil",
        "r8b",
        "r9b",
        "r10b",
        "r11b",
        "r12b",
        "r13b",
        "r14b",
        "r15b",
    ),
}
LEGACY_BYTE_NAMES = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
