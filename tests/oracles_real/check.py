"""One pass of checks over swept instructions, shared by the test and the benchmark: vmmio decodes each
instruction (which must not raise), `lookup` says whether it is emulated (which must not raise either),
iced's fields are compared, and optionally an objdump or capstone listing of the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from test_decode_oracles import _imm_mismatch

from oracles_real.compare import Mismatch, compare_iced, compare_text
from oracles_real.corpus import Sample
from oracles_real.known import Known, classify
from oracles_real.listings import Listing
from vmmio.vmm.semantics import lookup
from vmmio.x86.decode import decode
from vmmio.x86.insn import DecodeError, DecodeStatus, Encoding, Insn

__all__ = ["Checked", "Finding", "check_iced", "check_listing"]


@dataclass(frozen=True, slots=True)
class Finding:
    mismatch: Mismatch
    known: Known | None
    text: str = ""  # the oracle's text for the instruction (objdump/capstone)


@dataclass(slots=True)
class Checked:
    sample: Sample
    ours: Insn | DecodeError
    emulated: bool
    findings: list[Finding] = field(default_factory=list)

    def new(self) -> list[Finding]:
        """Findings not explained by a known disagreement."""
        return [f for f in self.findings if f.known is None]

    def report(self, f: Finding) -> str:
        text = f" [{f.text}]" if f.text else ""
        tag = f" (known: {f.known.tag})" if f.known else ""
        return f"{self.sample.where()}: {f.mismatch}{text}{tag}"


def check_iced(s: Sample) -> Checked:
    """Decode with vmmio, look the form up, and compare with iced (and iced's immediates, via the
    synthetic suite's helper). An exception from decode or lookup becomes a finding, not a crash."""
    try:
        ours = decode(s.code, s.range.mode)
    except Exception as e:  # the decoder's contract is to never raise
        err = DecodeError(DecodeStatus.UNDEFINED, 0, f"raised {e!r}")
        crash = Mismatch("vmmio", "exception", repr(e), "no exception")
        return Checked(s, err, False, [Finding(crash, None)])
    c = Checked(s, ours, False)
    if isinstance(ours, Insn):
        try:
            c.emulated = lookup(ours) is not None
        except Exception as e:
            c.findings.append(Finding(Mismatch("vmmio", "lookup exception", repr(e), "no exception"), None))
    mismatches = compare_iced(s, ours)
    if not mismatches and isinstance(ours, Insn) and ours.encoding == Encoding.LEGACY:
        imm = _imm_mismatch(s.code[: ours.length], s.range.mode, ours)
        if imm:
            mismatches.append(Mismatch("iced", "immediate", imm, ""))
    c.findings += [Finding(m, classify(s, ours, m)) for m in mismatches]
    return c


def check_listing(checked: Iterable[Checked], oracle: str, listing: Listing) -> tuple[int, int, int]:
    """Compare with an objdump/capstone listing where it starts an instruction at the same address.

    Returns (instructions compared, memory operands compared, instructions the listing had no entry
    for: it resynchronised elsewhere, or gave (bad)).
    """
    compared = with_mem = unaligned = 0
    for c in checked:
        got = listing.get(c.sample.address)
        if got is None or not isinstance(c.ours, Insn):
            unaligned += got is None
            continue
        compared += 1
        with_mem += c.ours.mem is not None
        length, text = got
        for m in compare_text(oracle, c.sample.range.mode, c.ours, length, text):
            c.findings.append(Finding(m, classify(c.sample, c.ours, m, text), text))
    return compared, with_mem, unaligned
