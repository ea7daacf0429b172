"""Prebuilt guest programs, shipped so that running them needs no toolchain.

    hello      prints "Hello from vmmio!" through the MMIO UART and exits with status 0
    insntest   runs every instruction form the kernel emulates against the test device (MMIO) and
               against RAM, compares the results, prints a verdict per case; status = failures

They are flat 64-bit images for `Machine.load` (vmmio/machine.py has the machine contract), built from
guests/ in the source tree by `python guests/build.py`:

    from vmmio.guests import load
    from vmmio.machine import Machine

    m = Machine()
    result = m.run(m.vcpu(m.load(load("hello"))))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NAMES = ("hello", "insntest")

# The assembler the shipped images were built with (`guests/build.py --toolchain`); another binutils
# version may encode some instructions differently, so byte-identical rebuilds are promised only with it.
BUILT_WITH = "GNU assembler (GNU Binutils for Debian) 2.40"

_DIR = Path(__file__).resolve().parent
_VERDICT = re.compile(r"^(PASS|FAIL|KNOWN|SKIP) (\S+)(?: ([0-9a-f]{8})\b)?(.*)$")


def image_path(name: str) -> Path:
    """Where the image `name` (one of NAMES) is installed."""
    if name not in NAMES:
        raise ValueError(f"unknown guest {name!r} (choose from {', '.join(NAMES)})")
    return _DIR / f"{name}.bin"


def load(name: str) -> bytes:
    """The bytes of the image `name`, for `Machine.load`."""
    return image_path(name).read_bytes()


@dataclass(frozen=True)
class Verdict:
    """One case of insntest's report."""

    status: str  # PASS, FAIL, KNOWN (a known, analysed failure) or SKIP (native build only)
    name: str
    digest: str  # 8 hex digits summarising the MMIO run's result; "" for the exception tests
    detail: str  # the rest of the line, plus the indented lines that follow a mismatch


def parse_report(text: str) -> list[Verdict]:
    """The verdicts in insntest's output, in order."""
    verdicts: list[Verdict] = []
    for line in text.splitlines():
        if line.startswith("    ") and verdicts:
            last = verdicts[-1]
            verdicts[-1] = Verdict(last.status, last.name, last.digest, f"{last.detail}\n{line.strip()}")
            continue
        m = _VERDICT.match(line)
        if m is not None:
            verdicts.append(Verdict(m[1], m[2], m[3] or "", m[4].strip()))
    return verdicts


__all__ = ["BUILT_WITH", "NAMES", "Verdict", "image_path", "load", "parse_report"]
