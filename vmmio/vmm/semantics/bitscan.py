"""Bit scans and counts: BSF, BSR (0F BC/BD), TZCNT, LZCNT (F3 0F BC/BD), POPCNT (F3 0F B8).

TZCNT and LZCNT are the F3 forms of BSF and BSR: a CPU without the feature (CPUID bmi1 for TZCNT, abm
for LZCNT) ignores the F3 prefix and executes BSF/BSR, and so does vmmio. POPCNT without its feature is
#UD. BSF/BSR with a zero source set ZF and leave the destination as it was (on the Intel host not even
the upper half of a 32-bit destination is cleared; Intel documents the value as undefined, AMD as
unchanged).
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.flags import ScanOp
from vmmio.x86.insn import Insn, OpMap

# mnemonic -> (operation, CPUID feature, what runs without the feature: an operation or None for #UD)
_SCANS: dict[str, tuple[ScanOp, str, ScanOp | None]] = {
    "bsf": (ScanOp.BSF, "", None),
    "bsr": (ScanOp.BSR, "", None),
    "tzcnt": (ScanOp.TZCNT, "bmi1", ScanOp.BSF),
    "lzcnt": (ScanOp.LZCNT, "abm", ScanOp.BSR),
    "popcnt": (ScanOp.POPCNT, "popcnt", None),
}


@emulates(OpMap.M0F, (0xBC, 0xBD))
@emulates(OpMap.M0F, (0xB8,), mnemonics=("popcnt",))
def bit_scan(x: Exec, i: Insn) -> Steps:
    op, feature, fallback = _SCANS[i.mnemonic]
    if feature and not x.cpuid.has(feature):
        if fallback is None:
            x.require(feature)
        else:
            op = fallback
    w = i.width
    src = yield from x.rm_read(w)
    res, fl = flags.scan(op, w, src, x.rflags)
    if res is not None:
        x.set(i.reg, w, res)
    x.set_flags(fl)
