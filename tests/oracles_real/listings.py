"""Independent disassemblies of the same bytes: objdump (one process per range) and capstone, each as a
map from address to (length, Intel-syntax text). They sweep on their own, so the caller joins them with
iced's sweep by address and compares only where both start an instruction at the same place.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache

import capstone

from oracles_real.elf import CodeRange

__all__ = ["Listing", "capstone_listing", "objdump_available", "objdump_chunks", "objdump_listing"]

Listing = dict[int, tuple[int, str]]

_LINE = re.compile(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t(.*)$")
_RAW_MACHINE = {16: "i8086", 32: "i386", 64: "i386:x86-64"}
_CS_MODE = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}


def objdump_available() -> bool:
    return shutil.which("objdump") is not None


def objdump_listing(r: CodeRange, start: int, stop: int) -> Listing:
    """`objdump -d -M intel` over data[start:stop] of the range; (bad) entries are left out."""
    lo, hi = r.address + start, r.address + stop
    cmd = ["objdump", "-z", "-w", "-M", "intel", "--insn-width=15"]
    cmd += [f"--start-address={lo:#x}", f"--stop-address={hi:#x}"]
    if r.raw:
        vma = r.address - r.file_offset
        cmd += ["-D", "-b", "binary", "-m", _RAW_MACHINE[r.mode], f"--adjust-vma={vma:#x}"]
    else:
        cmd += ["-d", "-j", r.section]
    cmd.append(r.file)
    return {a: v for a, v in _parse(_run(cmd)) if lo <= a < hi}


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout


def _parse(text: str) -> list[tuple[int, tuple[int, str]]]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        insn = m.group(3).strip()
        if insn and "(bad)" not in insn:
            out.append((int(m.group(1), 16), (len(m.group(2)) // 3, insn)))
    return out


# Between chunks: one-byte NOPs, so that objdump, having ended a chunk on an instruction boundary,
# starts the next chunk on one too.
_SEPARATOR = b"\x90" * 16


def objdump_chunks(mode: int, chunks: Sequence[tuple[int, bytes]]) -> Listing:
    """objdump over several (address, bytes) runs in one process: the runs, each starting and ending on
    an instruction boundary, are laid end to end in a raw file with NOPs between them, and the listing
    is mapped back to their addresses. Used where one objdump per run would cost too many processes."""
    starts: list[int] = []
    blob = bytearray()
    for _, data in chunks:
        starts.append(len(blob))
        blob += data + _SEPARATOR
    fd, path = tempfile.mkstemp(prefix="vmmio-objdump-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        cmd = ["objdump", "-D", "-z", "-w", "-M", "intel", "--insn-width=15", "-b", "binary"]
        text = _run([*cmd, "-m", _RAW_MACHINE[mode], path])
    finally:
        os.unlink(path)
    out: Listing = {}
    for off, entry in _parse(text):
        i = bisect.bisect_right(starts, off) - 1
        rel = off - starts[i]
        if i >= 0 and rel < len(chunks[i][1]):
            out[chunks[i][0] + rel] = entry
    return out


@cache
def _capstone(mode: int) -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, _CS_MODE[mode])
    md.skipdata = True  # go on after bytes it cannot decode instead of stopping
    return md


def capstone_listing(r: CodeRange, start: int, stop: int) -> Listing:
    """capstone (no detail: its text is parsed like objdump's) over data[start:stop] of the range."""
    out: Listing = {}
    for addr, size, mnemonic, ops in _capstone(r.mode).disasm_lite(r.data[start:stop], r.address + start):
        if mnemonic != ".byte":
            out[addr] = (size, f"{mnemonic} {ops}")
    return out
