"""Decoder cases as data: (mode, instruction bytes, expected fields), one row per addressing/immediate form
and per error status, so a failure names the form that broke."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vmmio.x86 import decode as decode_mod
from vmmio.x86.decode import decode, decode_cached
from vmmio.x86.insn import DecodeError, DecodeStatus, Encoding, Insn, MemOperand, OpMap
from vmmio.x86.regs import NO_REG, RIP_REG, XMM_REG, Gpr, Seg

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = (int(r) for r in list(Gpr)[:8])
R8, R12, R13, R15 = int(Gpr.R8), int(Gpr.R12), int(Gpr.R13), int(Gpr.R15)
ES, CS, SS, DS, FS, GS = (int(s) for s in Seg)
BX, BP, SI, DI = RBX, RBP, RSI, RDI  # 16-bit forms use the same register numbers


def M(seg: int, base: int, index: int = NO_REG, scale: int = 1, disp: int = 0, asz: int = 8) -> MemOperand:
    return MemOperand(seg=seg, base=base, index=index, scale=scale, disp=disp, addr_size=asz)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


Row = tuple[int, str, dict[str, Any]]

MODRM_ROWS: list[Row] = [
    # 32/64-bit ModRM: mod 0/1/2, negative displacements, register forms.
    (
        64,
        "8b 43 08",
        dict(length=3, mnemonic="mov", opsize=4, addr_size=8, reg=0, rm=-1, mem=M(DS, RBX, disp=8)),
    ),
    (64, "8b 43 f8", dict(length=3, mem=M(DS, RBX, disp=-8))),
    (64, "8b 00", dict(length=2, mem=M(DS, RAX), modrm=0x00)),
    (64, "8b 80 00 00 00 80", dict(length=6, mem=M(DS, RAX, disp=-0x80000000))),
    (64, "89 c8", dict(length=2, reg=RCX, rm=RAX, mem=None, modrm=0xC8)),
    (64, "45 89 c8", dict(length=3, reg=9, rm=8, rex=0x45)),
    (64, "4c 89 c0", dict(opsize=8, reg=8, rm=0)),
    # SIB: no index (index field 4), no base (mod 0, base 5), scales, rSP/rBP bases default to SS.
    (64, "8b 04 25 00 10 00 00", dict(length=7, mem=M(DS, NO_REG, disp=0x1000))),
    (64, "8b 04 8d 10 00 00 00", dict(length=7, mem=M(DS, NO_REG, RCX, 4, 0x10))),
    (64, "8b 04 24", dict(length=3, mem=M(SS, RSP))),
    (64, "8b 44 24 08", dict(length=4, mem=M(SS, RSP, disp=8))),
    (64, "8b 45 00", dict(length=3, mem=M(SS, RBP))),
    (64, "8b 04 cb", dict(length=3, mem=M(DS, RBX, RCX, 8))),
    (64, "8b 44 4d f0", dict(length=4, mem=M(SS, RBP, RCX, 2, -16))),
    (64, "8b 84 8d 00 01 00 00", dict(length=7, mem=M(SS, RBP, RCX, 4, 0x100))),
    (64, "8b 04 e0", dict(length=3, mem=M(DS, RAX))),
    # REX.X makes index 4 a real register (r12); REX.B: r12 needs a SIB, r13 a displacement, both use DS.
    (64, "42 8b 04 e0", dict(length=4, mem=M(DS, RAX, R12, 8))),
    (64, "41 8b 04 24", dict(length=4, mem=M(DS, R12))),
    (64, "41 8b 45 00", dict(length=4, mem=M(DS, R13))),
    (64, "41 8b 04 25 00 10 00 00", dict(length=8, mem=M(DS, NO_REG, disp=0x1000))),
    (64, "43 8b 04 e4", dict(length=4, mem=M(DS, R12, R12, 8))),
    # RIP-relative (REX.B does not change it), EIP-relative with 67, disp32 absolute in 32-bit mode.
    (64, "8b 05 f0 ff ff ff", dict(length=6, mem=M(DS, RIP_REG, disp=-16))),
    (64, "41 8b 05 10 00 00 00", dict(length=7, mem=M(DS, RIP_REG, disp=16))),
    (64, "67 8b 05 10 00 00 00", dict(length=7, addr_size=4, mem=M(DS, RIP_REG, disp=16, asz=4))),
    (64, "67 8b 03", dict(length=3, addr_size=4, mem=M(DS, RBX, asz=4))),
    (32, "8b 05 00 10 00 00", dict(length=6, addr_size=4, mem=M(DS, NO_REG, disp=0x1000, asz=4))),
    (32, "8b 43 08", dict(length=3, opsize=4, mem=M(DS, RBX, disp=8, asz=4))),
    (32, "8b 04 25 00 10 00 00", dict(length=7, mem=M(DS, NO_REG, disp=0x1000, asz=4))),
    # 16-bit forms: every rm, BP-based forms use SS, [disp16], mod 1/2 displacements are signed.
    (16, "8b 00", dict(length=2, opsize=2, addr_size=2, mem=M(DS, BX, SI, asz=2))),
    (16, "8b 01", dict(mem=M(DS, BX, DI, asz=2))),
    (16, "8b 02", dict(mem=M(SS, BP, SI, asz=2))),
    (16, "8b 03", dict(mem=M(SS, BP, DI, asz=2))),
    (16, "8b 04", dict(mem=M(DS, SI, asz=2))),
    (16, "8b 05", dict(mem=M(DS, DI, asz=2))),
    (16, "8b 06 34 12", dict(length=4, mem=M(DS, NO_REG, disp=0x1234, asz=2))),
    (16, "8b 07", dict(length=2, mem=M(DS, BX, asz=2))),
    (16, "8b 46 08", dict(length=3, mem=M(SS, BP, disp=8, asz=2))),
    (16, "8b 42 ff", dict(length=3, mem=M(SS, BP, SI, disp=-1, asz=2))),
    (16, "8b 87 00 80", dict(length=4, mem=M(DS, BX, disp=-0x8000, asz=2))),
    (16, "8b 96 fe ff", dict(length=4, reg=RDX, mem=M(SS, BP, disp=-2, asz=2))),
    (16, "8a 07", dict(length=2, mnemonic="mov", mem=M(DS, BX, asz=2))),
    # Address-size override: 16 -> 32 and 32 -> 16.
    (16, "66 67 8b 44 24 08", dict(length=6, opsize=4, addr_size=4, mem=M(SS, RSP, disp=8, asz=4))),
    (32, "67 8b 47 08", dict(length=4, addr_size=2, mem=M(DS, BX, disp=8, asz=2))),
    (32, "67 8b 06 00 10", dict(length=5, mem=M(DS, NO_REG, disp=0x1000, asz=2))),
    # Segment overrides: the last one wins; recorded in 64-bit mode too.
    (64, "2e 3e 64 8b 00", dict(length=5, seg_override=FS, mem=M(FS, RAX))),
    (64, "26 8b 45 00", dict(seg_override=ES, mem=M(SS, RBP))),  # 64-bit mode ignores ES/CS/SS/DS overrides
    (64, "65 48 8b 04 25 28 00 00 00", dict(length=9, opsize=8, mem=M(GS, NO_REG, disp=0x28))),
    (32, "36 8b 03", dict(mem=M(SS, RBX, asz=4))),
    (16, "3e 8b 46 00", dict(mem=M(DS, BP, asz=2))),
    # mov to/from CR/DR ignore mod: always register operands, no SIB/displacement.
    (64, "0f 20 c0", dict(length=3, mnemonic="mov", mem=None, reg=0, rm=0)),
    (64, "0f 22 18", dict(length=3, mem=None, reg=3, rm=0)),
    (64, "44 0f 20 c0", dict(length=4, reg=8)),
    (32, "0f 21 3f", dict(length=3, reg=7, rm=7)),
]

MOFFS_ROWS: list[Row] = [
    (64, "a1 88 77 66 55 44 33 22 11", dict(length=9, mem=M(DS, NO_REG, disp=0x1122334455667788))),
    (64, "48 a3 00 00 00 00 00 00 00 80", dict(length=10, opsize=8, mem=M(DS, NO_REG, disp=1 << 63))),
    (64, "67 a1 00 00 00 80", dict(length=6, addr_size=4, mem=M(DS, NO_REG, disp=0x80000000, asz=4))),
    (32, "a3 00 00 00 f0", dict(length=5, mem=M(DS, NO_REG, disp=0xF0000000, asz=4))),
    (32, "64 a2 00 80 ff ff", dict(length=6, mem=M(FS, NO_REG, disp=0xFFFF8000, asz=4))),
    (32, "67 a0 00 80", dict(length=4, mem=M(DS, NO_REG, disp=0x8000, asz=2))),
    (16, "a0 34 12", dict(length=3, mem=M(DS, NO_REG, disp=0x1234, asz=2), imm_size=0)),
    (16, "67 a1 00 00 00 80", dict(length=6, mem=M(DS, NO_REG, disp=0x80000000, asz=4))),
]

IMM_ROWS: list[Row] = [
    (64, "c6 00 ff", dict(length=3, mnemonic="mov", imm=-1, imm_size=1)),
    (
        64,
        "c7 05 00 10 00 00 01 00 00 00",
        dict(length=10, imm=1, imm_size=4, mem=M(DS, RIP_REG, disp=0x1000)),
    ),
    (64, "48 c7 c0 ff ff ff ff", dict(length=7, opsize=8, imm=-1, imm_size=4, rm=RAX)),
    (64, "66 c7 00 34 12", dict(length=5, opsize=2, imm=0x1234, imm_size=2)),
    (16, "c7 06 00 10 34 12", dict(length=6, imm=0x1234, imm_size=2, mem=M(DS, NO_REG, disp=0x1000, asz=2))),
    (16, "66 c7 06 00 10 78 56 34 12", dict(length=9, opsize=4, imm=0x12345678, imm_size=4)),
    (32, "66 81 c1 ff 7f", dict(length=5, mnemonic="add", opsize=2, imm=0x7FFF, imm_size=2)),
    (64, "83 c0 80", dict(length=3, mnemonic="add", imm=-128, imm_size=1)),
    (64, "66 83 0f 01", dict(length=4, mnemonic="or", opsize=2, imm=1, mem=M(DS, RDI))),
    (
        64,
        "48 b8 88 77 66 55 44 33 22 11",
        dict(length=10, opsize=8, reg=RAX, imm=0x1122334455667788, imm_size=8),
    ),
    (64, "41 b8 01 00 00 00", dict(length=6, reg=R8, imm=1, imm_size=4)),
    (64, "66 b8 01 00", dict(length=4, opsize=2, imm_size=2)),
    (16, "b8 01 00", dict(length=3, imm_size=2)),
    (64, "b4 7f", dict(length=2, reg=4, imm=0x7F)),  # mov ah, imm8 (no REX)
    (64, "c2 08 00", dict(length=3, mnemonic="ret", opsize=8, imm=8, imm_size=2)),
    (64, "c8 10 00 01", dict(length=4, mnemonic="enter", imm=16, imm_size=2)),
    (32, "9a 44 33 22 11 08 00", dict(length=7, mnemonic="call", imm=0x11223344, imm_size=4)),
    (16, "9a 34 12 00 f0", dict(length=5, imm=0x1234, imm_size=2)),
    (32, "66 ea 34 12 00 f0", dict(length=6, mnemonic="jmp")),
    (64, "68 00 00 00 80", dict(length=5, mnemonic="push", opsize=8, imm=-0x80000000, imm_size=4)),
    (64, "66 68 34 12", dict(length=4, opsize=2, imm_size=2)),
    (64, "6a ff", dict(length=2, opsize=8, imm=-1)),
    (64, "e8 00 00 00 00", dict(length=5, mnemonic="call", opsize=8, imm_size=4)),
    (64, "66 e8 00 00 00 00", dict(length=6, opsize=8, imm_size=4)),  # 66 ignored on near branches
    (32, "66 e8 00 10", dict(length=4, opsize=2, imm=0x1000, imm_size=2)),
    (16, "e9 00 10", dict(length=3, mnemonic="jmp", imm_size=2)),
    (64, "0f 84 00 00 00 00", dict(length=6, mnemonic="je", opmap=OpMap.M0F, opcode=0x84)),
    (64, "74 fe", dict(length=2, mnemonic="je", imm=-2)),
    (64, "a8 80", dict(length=2, mnemonic="test", imm=-128)),
    (64, "f6 00 01", dict(length=3, mnemonic="test", imm=1)),
    (64, "f6 08 01", dict(length=3, mnemonic="test")),  # /1 is an alias of /0
    (64, "f6 10", dict(length=2, mnemonic="not", imm_size=0)),
    (64, "f7 00 01 00 00 00", dict(length=6, mnemonic="test", imm_size=4)),
    (64, "f7 18", dict(length=2, mnemonic="neg")),
    (64, "0f ba 20 05", dict(length=4, mnemonic="bt", imm=5)),
    (64, "c0 e0 04", dict(length=3, mnemonic="shl", imm=4)),
    (64, "c1 f8 1f", dict(length=3, mnemonic="sar", imm=31)),
    (64, "d1 30", dict(length=2, mnemonic="sal")),
    (64, "6b c0 ff", dict(length=3, mnemonic="imul", imm=-1)),
    (64, "69 c0 00 01 00 00", dict(length=6, mnemonic="imul", imm=0x100)),
    (64, "c7 f8 00 00 00 00", dict(length=6, mnemonic="xbegin", imm_size=4)),
    (64, "66 c7 f8 00 00", dict(length=5, mnemonic="xbegin", imm_size=2)),
    (64, "c6 f8 01", dict(length=3, mnemonic="xabort", imm=1)),
    (64, "cd 80", dict(length=2, mnemonic="int", imm=-128)),
    (64, "e4 60", dict(length=2, mnemonic="in", imm=0x60)),
    (64, "66 0f 3a 0f c1 08", dict(length=6, mnemonic="palignr", opmap=OpMap.M0F3A, imm=8)),
    (64, "66 0f 78 c0 01 02", dict(length=6, mnemonic="extrq", imm=1, imm_size=1)),
    (64, "0f 38 f0 07", dict(length=4, mnemonic="movbe", opmap=OpMap.M0F38, opcode=0xF0)),
    (64, "f2 0f 38 f1 c1", dict(length=5, mnemonic="crc32", rep=0xF2)),
    (64, "f3 0f b8 c1", dict(length=4, mnemonic="popcnt")),
]

SIZE_ROWS: list[Row] = [
    (64, "50", dict(length=1, mnemonic="push", opsize=8, reg=RAX)),
    (64, "66 50", dict(length=2, opsize=2)),
    (64, "41 57", dict(length=2, reg=R15, opsize=8)),
    (64, "ff 30", dict(length=2, mnemonic="push", opsize=8)),
    (64, "66 ff 30", dict(length=3, opsize=2)),
    (64, "8f 00", dict(length=2, mnemonic="pop", opsize=8)),
    (64, "8f c0", dict(length=2, mnemonic="pop", rm=RAX)),
    (64, "ff 10", dict(length=2, mnemonic="call", opsize=8)),
    (64, "ff 18", dict(length=2, mnemonic="call", opsize=4)),  # far call through memory is not d64
    (64, "48 66 89 00", dict(length=4, opsize=2, rex=0, opsize_prefix=True)),  # REX before 66 is ignored
    (64, "66 48 89 00", dict(length=4, opsize=8, rex=0x48, opsize_prefix=True)),
    (64, "41 48 89 00", dict(length=4, rex=0x48, mem=M(DS, RAX))),  # only the last REX counts
    (
        64,
        "48 2e 89 00",
        dict(length=4, opsize=4, rex=0, mem=M(DS, RAX), seg_override=CS),
    ),  # REX before a prefix is ignored; CS ignored in 64-bit
    (32, "40", dict(length=1, mnemonic="inc", reg=RAX)),
    (32, "4f", dict(length=1, mnemonic="dec", reg=RDI)),
    (32, "66 41", dict(length=2, mnemonic="inc", opsize=2, reg=RCX)),
    (64, "63 c1", dict(length=2, mnemonic="movsxd", reg=RAX, rm=RCX)),
    (32, "63 c1", dict(length=2, mnemonic="arpl")),
    (16, "8b 00", dict(opsize=2, addr_size=2)),
    (16, "66 8b 00", dict(opsize=4)),
    (32, "66 8b 00", dict(opsize=2)),
    (64, "0f b6 07", dict(length=3, mnemonic="movzx", opsize=4, mem=M(DS, RDI))),
    (64, "48 0f b7 07", dict(length=4, mnemonic="movzx", opsize=8)),
    (64, "0f be c0", dict(length=3, mnemonic="movsx", rm=RAX)),
    (64, "0f c8", dict(length=2, mnemonic="bswap", reg=RAX)),
    (64, "41 0f cf", dict(length=3, reg=R15)),
    (64, "48 0f c8", dict(length=3, opsize=8)),
    (64, "e3 fe", dict(length=2, mnemonic="jrcxz")),
    (64, "67 e3 fe", dict(length=3, mnemonic="jecxz")),
    (16, "e3 fe", dict(length=2, mnemonic="jcxz")),
    (64, "98", dict(mnemonic="cwde")),
    (64, "48 98", dict(mnemonic="cdqe")),
    (16, "99", dict(mnemonic="cwd")),
]

MNEMONIC_ROWS: list[Row] = [
    (64, "80 20 01", dict(length=3, mnemonic="and")),
    (64, "81 38 00 00 00 00", dict(length=6, mnemonic="cmp")),
    (64, "0f ae 38", dict(length=3, mnemonic="clflush")),
    (64, "66 0f ae 38", dict(length=4, mnemonic="clflushopt")),
    (64, "0f ae f0", dict(length=3, mnemonic="mfence")),
    (64, "f3 a5", dict(length=2, mnemonic="movsd", opsize=4, rep=0xF3, mem=None)),
    (64, "f3 48 a5", dict(length=3, mnemonic="movsq", opsize=8)),
    (64, "f3 a4", dict(length=2, mnemonic="movsb")),
    (64, "f2 a6", dict(length=2, mnemonic="cmpsb", rep=0xF2)),
    (64, "f3 f2 a4", dict(length=3, rep=0xF2)),  # the last F2/F3 wins
    (64, "aa", dict(mnemonic="stosb")),
    (64, "90", dict(length=1, mnemonic="nop")),
    (64, "41 90", dict(length=2, mnemonic="xchg", reg=R8)),
    (64, "f3 90", dict(length=2, mnemonic="pause")),
    (64, "87 03", dict(mnemonic="xchg")),
    (64, "0f b1 0b", dict(mnemonic="cmpxchg")),
    (64, "0f c7 0e", dict(mnemonic="cmpxchg8b")),
    (64, "48 0f c7 0e", dict(mnemonic="cmpxchg16b")),
    (64, "0f 18 00", dict(mnemonic="prefetchnta")),
    (64, "0f 1f 44 00 00", dict(length=5, mnemonic="nop")),
    (64, "f3 0f 1e fa", dict(length=4, mnemonic="endbr64")),
    (64, "0f 01 f8", dict(length=3, mnemonic="swapgs")),
    (64, "0f 01 d0", dict(length=3, mnemonic="xgetbv")),
    (64, "f3 0f ae 20", dict(length=4, mnemonic="ptwrite")),
    (32, "d9 c9", dict(length=2, mnemonic="fxch", opmap=OpMap.X87, opcode=0xD9, rm=1, mem=None)),
    (32, "dd 00", dict(length=2, mnemonic="fld", opmap=OpMap.X87, mem=M(DS, RAX, asz=4))),
    (64, "df e0", dict(length=2, mnemonic="fnstsw")),
    (32, "0f 0f c1 b4", dict(length=4, mnemonic="pfmul", opmap=OpMap.M3DNOW, opcode=0xB4)),
    (32, "0f 0f 40 10 9e", dict(length=5, mnemonic="pfadd", mem=M(DS, RAX, disp=16, asz=4), imm_size=0)),
    (64, "66 0f 58 c1", dict(length=4, mnemonic="addpd")),
    (64, "f3 66 0f 58 c1", dict(length=5, mnemonic="addss", opsize_prefix=True)),  # F3 beats 66
]

VECTOR_ROWS: list[Row] = [
    (64, "c5 f8 77", dict(length=3, encoding=Encoding.VEX, opmap=OpMap.M0F, opcode=0x77, modrm=-1)),
    (64, "c5 fc 10 00", dict(length=4, encoding=Encoding.VEX, vex_l=1, mem=M(DS, RAX))),
    (64, "c5 f9 70 c1 1b", dict(length=5, imm=0x1B, imm_size=1)),
    (64, "c4 e3 79 0f c1 05", dict(length=6, opmap=OpMap.M0F3A, opcode=0x0F, imm=5)),
    (64, "c4 e2 79 18 05 00 10 00 00", dict(length=9, opmap=OpMap.M0F38, mem=M(DS, RIP_REG, disp=0x1000))),
    (64, "c4 c2 78 f2 00", dict(length=5, mem=M(DS, R8))),  # VEX.B extends the base
    (64, "67 c5 f8 10 00", dict(length=5, addr_size=4)),
    (32, "c5 f8 77", dict(length=3, encoding=Encoding.VEX)),
    (16, "c4 e1 78 10 00", dict(length=5, addr_size=2, mem=M(DS, BX, SI, asz=2))),
    (64, "c4 42 7d 90 04 88", dict(length=6, encoding=Encoding.VEX)),
    (64, "62 f1 7c 48 10 40 01", dict(length=7, encoding=Encoding.EVEX, vex_l=2)),
    (64, "62 f1 fd 48 7f 84 24 00 02 00 00", dict(length=11, encoding=Encoding.EVEX)),
    (64, "62 f3 7d 48 0f c1 05", dict(length=7, opmap=OpMap.M0F3A, imm=5)),
    (64, "62 f1 7d 48 72 e1 03", dict(length=7, imm=3)),
    (64, "62 f5 7c 48 58 c1", dict(length=6, opmap=OpMap.EVEX_MAP5)),
    (64, "62 f6 7d 48 96 c1", dict(length=6, opmap=OpMap.EVEX_MAP6)),
    (32, "62 f1 7c 48 10 00", dict(length=6, encoding=Encoding.EVEX)),
    (64, "8f e8 78 c2 c1 05", dict(length=6, encoding=Encoding.XOP, opmap=OpMap.XOP8, imm=5)),
    (64, "8f e9 78 81 c1", dict(length=5, encoding=Encoding.XOP, opmap=OpMap.XOP9, imm_size=0)),
    (64, "8f ea 78 10 c0 78 56 34 12", dict(length=9, opmap=OpMap.XOPA, imm=0x12345678, imm_size=4)),
    (32, "8f e8 78 c2 c1 05", dict(length=6, encoding=Encoding.XOP)),
    # Outside 64-bit mode C4/C5/62 are LES/LDS/BOUND unless the next byte has mod = 11.
    (32, "c4 00", dict(length=2, mnemonic="les", encoding=Encoding.LEGACY)),
    (32, "c5 06", dict(length=2, mnemonic="lds")),
    (16, "c4 06 00 10", dict(length=4, mnemonic="les", mem=M(DS, NO_REG, disp=0x1000, asz=2))),
    (32, "62 00", dict(length=2, mnemonic="bound")),
    (32, "8f 00", dict(length=2, mnemonic="pop", opsize=4)),
]

ERROR_ROWS: list[tuple[int, str, DecodeStatus, int]] = [
    # (mode, bytes, status, DecodeError.length)
    (64, "", DecodeStatus.TRUNCATED, 0),
    (64, "8b", DecodeStatus.TRUNCATED, 1),
    (64, "8b 04", DecodeStatus.TRUNCATED, 2),
    (64, "8b 44 24", DecodeStatus.TRUNCATED, 3),
    (64, "c7 05 00 10 00 00 01", DecodeStatus.TRUNCATED, 7),
    (64, "48", DecodeStatus.TRUNCATED, 1),
    (64, "66", DecodeStatus.TRUNCATED, 1),
    (64, "0f", DecodeStatus.TRUNCATED, 1),
    (64, "0f 38", DecodeStatus.TRUNCATED, 2),
    (64, "a1 00 00", DecodeStatus.TRUNCATED, 3),
    (64, "c4 e2", DecodeStatus.TRUNCATED, 2),
    (64, "62 f1 7c 48", DecodeStatus.TRUNCATED, 4),
    (32, "0f 0f c1", DecodeStatus.TRUNCATED, 3),
    (64, "66 " * 10 + "c7 05 00", DecodeStatus.TRUNCATED, 13),  # would be too long, but first: fetch more
    # Over 15 bytes: #GP even when every prefix is redundant, even if the bytes stop at 15.
    (64, "66 " * 15 + "90", DecodeStatus.TOO_LONG, 15),
    (64, "f3 " * 15, DecodeStatus.TOO_LONG, 15),
    (64, "66 " * 14 + "c7 05 00 10 00 00 01 00 00 00", DecodeStatus.TOO_LONG, 15),
    (64, "2e " * 6 + "48 c7 84 24 00 01 00 00 01 00 00 00", DecodeStatus.TOO_LONG, 15),
    (64, "66 " * 14 + "0f 04", DecodeStatus.TOO_LONG, 15),
    # LOCK: only lockable forms with a memory destination; never before VEX.
    (64, "f0 8b 00", DecodeStatus.BAD_LOCK, 3),
    (64, "f0 01 c0", DecodeStatus.BAD_LOCK, 3),
    (64, "f0 90", DecodeStatus.BAD_LOCK, 2),
    (64, "f0 0f b1 c8", DecodeStatus.BAD_LOCK, 4),
    (64, "f0 80 38 01", DecodeStatus.BAD_LOCK, 4),  # cmp
    (64, "f0 c5 f8 77", DecodeStatus.BAD_LOCK, 2),
    (32, "f0 0f 22 c0", DecodeStatus.BAD_LOCK, 4),  # AMD's CR8 alias is not decoded (Intel behaviour)
    # Undefined encodings.
    (64, "0f 04", DecodeStatus.UNDEFINED, 2),
    (64, "ff ff", DecodeStatus.UNDEFINED, 2),
    (64, "8d c0", DecodeStatus.UNDEFINED, 2),
    (64, "06", DecodeStatus.UNDEFINED, 1),
    (64, "82 c0 01", DecodeStatus.UNDEFINED, 1),
    (64, "c6 08 00", DecodeStatus.UNDEFINED, 2),
    (64, "c6 f9 00", DecodeStatus.UNDEFINED, 2),
    (64, "8f 20", DecodeStatus.UNDEFINED, 2),
    (32, "0f 01 f8", DecodeStatus.UNDEFINED, 3),
    (64, "66 c5 f8 77", DecodeStatus.UNDEFINED, 2),
    (64, "48 c5 f8 77", DecodeStatus.UNDEFINED, 2),
    (64, "f3 c4 e2 79 18 00", DecodeStatus.UNDEFINED, 2),
    (64, "c4 e0 78 00 00", DecodeStatus.UNDEFINED, 3),
    (64, "62 f0 7c 48 10 00", DecodeStatus.UNDEFINED, 4),
    (64, "62 f1 78 48 10 00", DecodeStatus.UNDEFINED, 4),  # EVEX P1 bit 2 must be 1
    (32, "62 f1 7c 40 58 c1", DecodeStatus.UNDEFINED, 4),  # EVEX.V' = 1 (stored 0): no zmm16+ in 32-bit
    (64, "8f eb 78 10 c0", DecodeStatus.UNDEFINED, 3),
    (64, "0f 20 c8", DecodeStatus.UNDEFINED, 3),
    (64, "44 0f 20 c8", DecodeStatus.UNDEFINED, 4),
    (64, "44 0f 21 c0", DecodeStatus.UNDEFINED, 4),
    (64, "0f 0f c1 00", DecodeStatus.UNDEFINED, 4),
    (64, "d9 d1", DecodeStatus.UNDEFINED, 2),
    (64, "8c f0", DecodeStatus.UNDEFINED, 2),
    (64, "8e c8", DecodeStatus.UNDEFINED, 2),
    (64, "f3 0f 50 c0", DecodeStatus.UNDEFINED, 4),
    (16, "f3 0f a6 c0", DecodeStatus.UNDEFINED, 4),  # VIA MONTMUL needs 32-bit addressing
]


def _rows() -> list[Row]:
    return MODRM_ROWS + MOFFS_ROWS + IMM_ROWS + SIZE_ROWS + MNEMONIC_ROWS + VECTOR_ROWS


@pytest.mark.parametrize(
    ("mode", "hexbytes", "expected"), _rows(), ids=lambda v: v if isinstance(v, str) else None
)
def test_decode_fields(mode: int, hexbytes: str, expected: dict[str, Any]) -> None:
    code = h(hexbytes) + h("cc cc cc")  # trailing bytes must not be consumed
    insn = decode(code, mode)
    assert isinstance(insn, Insn), insn
    assert type(insn) is Insn
    assert insn.mode == mode
    assert insn.raw == code[: insn.length]
    got = {k: getattr(insn, k) for k in expected}
    assert got == expected


@pytest.mark.parametrize(
    ("mode", "hexbytes", "status", "length"), ERROR_ROWS, ids=lambda v: v if isinstance(v, str) else None
)
def test_decode_errors(mode: int, hexbytes: str, status: DecodeStatus, length: int) -> None:
    r = decode(h(hexbytes), mode)
    assert isinstance(r, DecodeError), r
    assert (r.status, r.length) == (status, length)


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_lock_allowed_with_memory_destination(mode: int) -> None:
    for text in (
        "f0 01 00",
        "f0 0f c7 0f",
        "f0 87 00",
        "f0 f6 10",
        "f0 0f ba 28 01",
        "f0 ff 00",
        "f0 0f c1 00",
    ):
        insn = decode(h(text), mode)
        assert isinstance(insn, Insn), (text, insn)
        assert insn.lock


def test_trailing_bytes_of_exact_length_instruction() -> None:
    insn = decode(h("66 " * 14 + "90"), 64)  # exactly 15 bytes is fine
    assert isinstance(insn, Insn)
    assert insn.length == 15


def test_record_is_a_frozen_insn_equal_to_a_constructed_one() -> None:
    insn = decode(h("8b 43 08"), 64)
    assert isinstance(insn, Insn)
    with pytest.raises(dataclasses.FrozenInstanceError):
        insn.length = 5  # type: ignore[misc]
    assert insn.mem is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        insn.mem.disp = 0  # type: ignore[misc]
    assert type(insn.mem) is MemOperand
    twin = dataclasses.replace(insn)
    assert twin == insn
    assert hash(twin) == hash(insn)
    assert insn.mem.effective_address([0, 0, 0, 0x1000] + [0] * 12, 0) == 0x1008


def test_effective_address_wraps_at_address_size() -> None:
    insn = decode(h("67 8b 05 10 00 00 00"), 64)
    assert isinstance(insn, Insn) and insn.mem is not None
    assert insn.mem.effective_address([0] * 16, 0xFFFF_FFF8) == 0x8


def test_cached_returns_the_same_object() -> None:
    code = h("48 89 04 25 00 10 00 00")
    a = decode_cached(code, 64)
    assert a is decode_cached(bytes(code), 64)
    assert a == decode(code, 64)
    assert decode_cached(code, 32) is not a  # the mode is part of the key
    err = decode_cached(h("0f 04"), 64)
    assert isinstance(err, DecodeError)
    assert err is decode_cached(h("0f 04"), 64)


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_mod, "CACHE_LIMIT", 8)
    for n in range(50):
        decode_cached(bytes([0xB8 + n % 8, n, 0, 0, 0]), 64)
        assert len(decode_mod._CACHES[64]) <= 8


def test_bad_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decode(b"\x90", 8)


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_never_raises_on_every_two_byte_string(mode: int) -> None:
    for a in range(256):
        for b in range(256):
            r = decode(bytes((a, b)), mode)
            assert isinstance(r, Insn | DecodeError)


def test_vsib_operand_has_no_single_effective_address() -> None:
    """vgatherdps xmm1, [rax+xmm4*1], xmm0: the index is vector register 4, not RSP and not 'none'."""
    insn = decode(bytes.fromhex("c4e279920c20"), 64)
    assert isinstance(insn, Insn) and insn.mem is not None
    assert insn.mem.vsib and insn.mem.index == XMM_REG + 4 and insn.mem.base == 0
    with pytest.raises(ValueError, match="VSIB"):
        insn.mem.effective_address([0] * 16, 0)
