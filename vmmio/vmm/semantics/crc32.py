"""CRC32 (F2 0F 38 F0/F1, SSE4.2): accumulate the CRC-32C (Castagnoli) of a byte, word, dword or qword.

The destination holds the running CRC in its low 32 bits (bit-reflected, no inversion in or out); a
64-bit destination (REX.W) is written zero-extended. F0 takes a byte source; F1 a word (66), dword or
qword (REX.W) source, consumed from its least significant byte. Flags are unaffected.
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86.insn import Insn, OpMap

_POLY = 0x82F63B78  # 0x1EDC6F41 bit-reflected


def _table() -> tuple[int, ...]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        out.append(c)
    return tuple(out)


_TABLE = _table()


def crc32c(crc: int, data: int, size: int) -> int:
    """`crc` updated with the `size` bytes of `data`, least significant byte first."""
    for _ in range(size):
        crc = (crc >> 8) ^ _TABLE[(crc ^ data) & 0xFF]
        data >>= 8
    return crc


@emulates(OpMap.M0F38, (0xF0, 0xF1), mnemonics=("crc32",))
def crc32(x: Exec, i: Insn) -> Steps:
    x.require("sse4_2")
    size = 1 if i.opcode == 0xF0 else i.opsize
    src = yield from x.rm_read(size)
    dest = 8 if i.rex & 8 else 4
    x.set(i.reg, dest, crc32c(x.get(i.reg, 4), src, size))
