"""Disagreements found on real code and judged (against the Intel SDM), so that a sweep can tell them
from new ones. `who` is the side that is wrong: "vmmio" entries are decoder bugs, each with a strict
xfail regression test in tests/test_decode_real_code.py (remove the entry when it is fixed); the others
are quirks of an oracle that vmmio rightly does not copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from iced_x86 import Mnemonic, Register

from oracles_real.compare import Mismatch
from oracles_real.corpus import Sample
from vmmio.x86.insn import DecodeError, Encoding, Insn

__all__ = ["KNOWN", "Known", "classify"]


@dataclass(frozen=True)
class Known:
    tag: str
    who: str  # "vmmio", "capstone" or "objdump": the side that is wrong
    analysis: str
    matches: Callable[[Sample, Insn | DecodeError, Mismatch, str], bool]  # (sample, ours, mismatch, text)


def _evex_disp8(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    return (
        isinstance(ours, Insn)
        and ours.encoding == Encoding.EVEX
        and m.field == "displacement"
        and s.iced.memory_displ_size == 1
    )


def _vsib_index(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    """A vector index register that vmmio drops: SIB.index = 4 (no GPR index, but xmm4 in VSIB), or one
    of xmm16-31 (EVEX.V' extends the index)."""
    idx = s.iced.memory_index
    vector = Register.XMM0 <= idx <= Register.ZMM31
    return vector and isinstance(ours, Insn) and m.field in ("index", "registers")


_NO_64BIT_FORM = frozenset(
    {
        Mnemonic.IN,
        Mnemonic.OUT,
        Mnemonic.INSD,
        Mnemonic.OUTSD,
        Mnemonic.XBEGIN,
        Mnemonic.FLDENV,
        Mnemonic.FNSTENV,
        Mnemonic.FRSTOR,
        Mnemonic.FNSAVE,
    }
)


def _capstone_ud(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    return m.oracle == "capstone" and m.field == "length" and s.iced.mnemonic in (Mnemonic.UD0, Mnemonic.UD1)


_LEGACY_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})


def _capstone_null_segment(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    """FS/GS, then an ES/CS/SS/DS prefix later in the prefix bytes, in 64-bit mode."""
    if m.oracle != "capstone" or m.field != "segment" or not isinstance(ours, Insn) or ours.mode != 64:
        return False
    n = 0
    while n < len(ours.raw) and (ours.raw[n] in _LEGACY_PREFIXES or 0x40 <= ours.raw[n] <= 0x4F):
        n += 1
    prefixes = ours.raw[:n]
    fsgs = [i for i, b in enumerate(prefixes) if b in (0x64, 0x65)]
    null = [i for i, b in enumerate(prefixes) if b in (0x26, 0x2E, 0x36, 0x3E)]
    return bool(fsgs and null and max(null) > min(fsgs))


_PREFIX_WORDS = frozenset(
    {"es", "cs", "ss", "ds", "fs", "gs", "data16", "addr32", "lock", "rep", "repz", "repnz"}
)


def _objdump_rex(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    words = text.split()
    return (
        m.oracle == "objdump"
        and m.field == "length"
        and any(w.startswith("rex") for w in words)
        and all(w.startswith("rex") or w in _PREFIX_WORDS for w in words)
    )


def _objdump_fwait(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str) -> bool:
    return m.oracle == "objdump" and m.field == "length" and s.iced.mnemonic == Mnemonic.WAIT


KNOWN: tuple[Known, ...] = (
    Known(
        "evex-disp8xN",
        "vmmio",
        "EVEX disp8 is scaled by N (SDM Vol. 2, 2.7.5 'Compressed Displacement (disp8*N)'): iced, capstone "
        "and objdump all report disp8*N; vmmio's MemOperand keeps the raw disp8. Not emulated (no EVEX "
        "form is), but the memory operand vmmio reports for these is wrong.",
        _evex_disp8,
    ),
    Known(
        "vsib-index",
        "vmmio",
        "VSIB (gathers/scatters; SDM Vol. 2, 2.3.12 'Vector SIB Memory Addressing'): the index is a "
        "vector register and SIB.index = 100b is xmm4/ymm4/zmm4 (or 12, 20, 28), not 'no index'; EVEX.V' "
        "adds 16. vmmio reports no index for SIB.index = 4 and ignores V'. Not emulated.",
        _vsib_index,
    ),
    Known(
        "capstone-ud0-ud1-modrm",
        "capstone",
        "UD1 is 0F B9 /r and UD0 is 0F FF /r (SDM Vol. 2 UD: 'UD0 r32, r/m32', 'UD1 r32, r/m32'): both "
        "have a ModRM byte (AMD documents UD0 without one; vmmio and iced follow Intel), which capstone 5 "
        "does not consume.",
        _capstone_ud,
    ),
    Known(
        "capstone-null-segment-prefix",
        "capstone",
        "In 64-bit mode ES/CS/SS/DS prefixes are null prefixes: one after FS/GS does not displace it. "
        "Checked on this host's CPU: `64 2e 48 8b 04 25 00 00 00 00` (fs, cs, mov rax, [0]) reads the "
        "same TCB pointer as `64 48 8b 04 25 ...`. iced and vmmio say FS; capstone reports the last "
        "segment prefix written.",
        _capstone_null_segment,
    ),
    Known(
        "objdump-rex-split",
        "objdump",
        "A REX prefix not immediately before the opcode is ignored, yet part of the instruction (SDM Vol. "
        "2, 2.2.1); objdump prints it, with any prefixes before it, as a separate line ('rex.W', "
        "'es rex.WRX', 'addr32 rex.W'). iced and vmmio count it in the instruction, as the CPU does.",
        _objdump_rex,
    ),
    Known(
        "objdump-fwait-merge",
        "objdump",
        "9B is WAIT/FWAIT, an instruction of its own (SDM Vol. 2 WAIT/FWAIT); objdump folds it into the "
        "following FNSTCW/FNSTSW/... and prints the FSTCW-style assembler alias. iced and vmmio decode two "
        "instructions.",
        _objdump_fwait,
    ),
)


def classify(s: Sample, ours: Insn | DecodeError, m: Mismatch, text: str = "") -> Known | None:
    """The known disagreement this mismatch is an instance of, or None when it is new."""
    for k in KNOWN:
        if k.matches(s, ours, m, text):
            return k
    return None
