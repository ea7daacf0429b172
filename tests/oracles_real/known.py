"""Disagreements found on real code and judged (against the Intel SDM), so that a sweep can tell them
from new ones. `who` is the side that is wrong. Every entry today is a quirk of an oracle that vmmio
rightly does not copy; a decoder bug found this way is fixed and gets a named regression test in
tests/test_decode_real_code.py (EVEX disp8*N and VSIB indexes were the two so far), and while it is open
it is listed here as "vmmio" with a strict xfail test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from iced_x86 import Mnemonic

from oracles_real.compare import Mismatch
from oracles_real.corpus import Sample
from vmmio.x86.insn import DecodeError, Insn

__all__ = ["KNOWN", "Known", "classify"]


@dataclass(frozen=True)
class Known:
    tag: str
    who: str  # "vmmio", "capstone" or "objdump": the side that is wrong
    analysis: str
    matches: Callable[[Sample, Insn | DecodeError, Mismatch, str], bool]  # (sample, ours, mismatch, text)


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
