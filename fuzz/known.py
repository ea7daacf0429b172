"""vmmio bugs this fuzzer found that are not fixed yet: counted and shown apart from new failures.

A failure is known when its target and signature (the violated invariant's key, see `fuzz.core`) match
a row and, if the row has one, its `matches` predicate accepts the case. Known failures are still
printed with a shrunk reproducer, so they stay visible; they do not make `make fuzz` fail. Delete the
row when vmmio is fixed: the fuzzer then checks the fix like any other invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownBug:
    id: str
    target: str
    signatures: tuple[str, ...]
    summary: str
    matches: Callable[[object], bool] | None = None


KNOWN: tuple[KnownBug, ...] = (
    KnownBug(
        "decoder-byte-16",
        "decoder",
        ("beyond-15",),
        "decode() lets the 16th byte decide: after 14 prefix bytes, a C4/C5/62/8F opcode at byte 15 is "
        "judged (UNDEFINED or BAD_LOCK, length 15) from its VEX/EVEX/XOP payload at byte 16, while the "
        "same 15 bytes alone give TOO_LONG; _special returns length i after reading code[i]. The vCPU "
        "fetches at most 15 bytes, so guests see #GP(0) as they should; decode() callers with longer "
        "buffers (vmmio decode, tools) get #UD's status instead.",
    ),
    KnownBug(
        "linux-above-4g",
        "images",
        ("struct.error in linux.py:_put",),
        "A bzImage whose kernel is placed at or above 4 GiB (pref_address there and not relocatable, or "
        "init_size too big for RAM below 4 GiB in a layout with RAM above it) makes build_boot_params "
        "pack kernel_addr into the 32-bit code32_start: struct.error escapes load() instead of an "
        "ImageError (or a placement below 4 GiB).",
    ),
    KnownBug(
        "cross-kind-exit",
        "insns",
        ("npf-without-memory-access", "io-exit-without-port"),
        "GPA_MISMATCH (docs/abi.md: no decoded memory operand translates to the GPA the hardware "
        "reported, i.e. the code changed under the exit) is only checked within one kind of exit: after "
        "an NPF the kernel performs an instruction with no memory operand at all (a register-only ALU "
        "form, or OUT as an InoutExit), and after an I/O exit one that does no port I/O (MMIO requests, "
        "RAM writes); _complete skips the check when the instruction made no access "
        "(cur.accesses == 0), and a fault_port/fault_page of the other kind is never compared.",
    ),
)


def classify(target: str, sig: str, case: object) -> KnownBug | None:
    """The known bug this failure is, or None for a new failure."""
    for bug in KNOWN:
        if bug.target == target and sig in bug.signatures and (bug.matches is None or bug.matches(case)):
            return bug
    return None
