"""Which real binaries to read and how to walk them: a deterministic, bounded selection of the host's ELF
files (executables, shared libraries, Python itself, 32-bit libraries if installed, kernel modules) and a
Debian kernel image if one is installed, swept linearly with iced-x86 as the instruction-boundary oracle.

Everything streams: files are opened one at a time and the sweep stops at the requested count, so the
same code serves a 40-second test and a multi-million-instruction benchmark.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from iced_x86 import Code, Decoder, DecoderOptions, Instruction, OpKind

from oracles_real.elf import CodeRange, elf_code_ranges, extract_vmlinux, kernel_setup_range

__all__ = [
    "IMPLICIT_MEMORY_KINDS",
    "Sample",
    "Source",
    "all_sources",
    "iced_memory",
    "kernel_sources",
    "spread",
    "sweep",
    "well_known_sources",
]

MAX_INSN = 15
# Sections larger than this are swept only this far (a whole kernel .text fits; libLLVM-sized ones do
# not): keeps a sweep's cost bounded by the count asked for plus at most this much skipping per range.
MAX_RANGE_BYTES = 16 << 20

# Padding, not code: int3 fill (gcc and the kernel pad with it; the kernel's .text ends in megabytes of
# it) and zero fill, which decodes as `add [rax], al` and would count as an emulated memory access.
_FILL = frozenset({b"\xcc", b"\x00\x00"})
_FILL_RUN = re.compile(rb"\xcc+|\x00+")
# With count_memory, a window gives up after this many instructions without a memory operand per one
# it still owes (so code with few memory operands cannot make the sweep run through a whole section).
UNCOUNTED_PER_COUNTED = 50

IMPLICIT_MEMORY_KINDS = frozenset(
    {
        OpKind.MEMORY_SEG_SI,
        OpKind.MEMORY_SEG_ESI,
        OpKind.MEMORY_SEG_RSI,
        OpKind.MEMORY_SEG_DI,
        OpKind.MEMORY_SEG_EDI,
        OpKind.MEMORY_SEG_RDI,
        OpKind.MEMORY_ESDI,
        OpKind.MEMORY_ESEDI,
        OpKind.MEMORY_ESRDI,
    }
)


@dataclass(frozen=True)
class Source:
    """A file to sweep. `kind` is "elf", "kernel" (a vmlinuz: its vmlinux ELF) or "setup" (its 16-bit
    real-mode setup code)."""

    name: str  # short and stable, for test ids and tables
    path: str
    kind: str = "elf"

    @property
    def part(self) -> str:
        """Which part of the corpus the file belongs to (the selection is balanced between parts)."""
        if self.kind == "kernel":
            return "vmlinux"
        if self.kind == "setup":
            return "kernel setup (16-bit)"
        if "/lib/modules/" in self.path:
            return "kernel modules"
        if "/lib32/" in self.path:
            return "32-bit libraries"
        if "/bin/" in self.path or "/sbin/" in self.path or "/gcc/" in self.path:
            return "executables"
        return "64-bit libraries"

    def ranges(self) -> list[CodeRange]:
        if self.kind == "kernel":
            elf = extract_vmlinux(self.path)
            return elf_code_ranges(elf, origin=f"{self.path} (extracted vmlinux {elf})") if elf else []
        if self.kind == "setup":
            r = kernel_setup_range(self.path)
            return [r] if r else []
        return elf_code_ranges(self.path)


@dataclass(frozen=True, slots=True)
class Sample:
    """One instruction iced-x86 decoded: `code` holds up to 15 bytes from its start (what vmmio gets)."""

    range: CodeRange
    offset: int  # within range.data
    code: bytes
    iced: Instruction

    @property
    def address(self) -> int:
        return self.range.address + self.offset

    def where(self) -> str:
        return f"{self.range.where(self.offset)} bytes {self.code[: self.iced.len].hex(' ')}"


def iced_memory(ins: Instruction) -> int:
    """0: no memory operand, 1: an explicit (ModRM/moffs) one, 2: only implicit ones (string ops)."""
    implicit = False
    for k in range(ins.op_count):
        kind = ins.op_kind(k)
        if kind == OpKind.MEMORY:
            return 1
        if kind in IMPLICIT_MEMORY_KINDS:
            implicit = True
    return 2 if implicit else 0


def _is_x86_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[:4] == b"\x7fELF" and head[18:20] in (b"\x3e\x00", b"\x03\x00")


def _unique(paths: Iterable[str]) -> list[str]:
    """Existing regular files, each once (symlinks and hard links collapse to the first name)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if not os.path.isfile(p) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        out.append(p)
    return out


def _name(path: str) -> str:
    return os.path.basename(path) + ("-i386" if "/lib32/" in path else "")


@cache
def kernel_sources() -> tuple[Source, ...]:
    """The newest installed Debian kernel image (by name) as its vmlinux and its 16-bit setup code."""
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    if not images:
        return ()
    img = images[-1]
    return (Source("vmlinux", img, "kernel"), Source("vmlinuz-setup16", img, "setup"))


def _python_files() -> list[str]:
    exe = os.path.realpath(sys.executable)
    libdir = Path(exe).parent.parent / "lib"
    return _unique([exe, *sorted(glob.glob(str(libdir / "libpython3.*.so*")))])


# Well-known files tested first and hardest; those missing on a machine are left out.
_WELL_KNOWN = (
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/usr/lib/x86_64-linux-gnu/libz.so.1",
    "/usr/bin/bash",
    "/usr/lib32/libc.so.6",
    "/usr/lib32/libm.so.6",
)
_WELL_KNOWN_MODULES = ("kvm.ko", "kvm-intel.ko", "e1000e.ko", "ext4.ko", "virtio_net.ko")


def _module_paths() -> list[str]:
    return sorted(glob.glob("/lib/modules/*/kernel/**/*.ko", recursive=True))


@cache
def well_known_sources() -> tuple[Source, ...]:
    """Python, libc, libm, libstdc++, libcrypto, bash, the 32-bit libc, the kernel, a few modules."""
    out = [Source("python" if i == 0 else _name(p), p) for i, p in enumerate(_python_files())]
    out += [Source(_name(p), p) for p in _unique(_WELL_KNOWN) if _is_x86_elf(p)]
    mods = {_name(p): p for p in _module_paths()}
    out += [Source(m, mods[m]) for m in _WELL_KNOWN_MODULES if m in mods]
    out += list(kernel_sources())
    return tuple(out)


@cache
def all_sources() -> tuple[Source, ...]:
    """Every candidate file: the kernel first, then the parts (executables, 64-bit libraries, kernel
    modules, 32-bit libraries) taken in turn, each in a fixed pseudo-random order (by hash of the path).
    Any prefix of the list is thus a spread across parts and directories, not the alphabetically first
    files of the biggest part (modules are three quarters of the files)."""
    pats = (
        "/usr/bin/*",
        "/usr/sbin/*",
        "/usr/lib/x86_64-linux-gnu/*.so*",
        "/usr/lib32/*.so*",
        "/usr/lib/gcc/x86_64-linux-gnu/*/cc1",
    )
    paths = [p for pat in pats for p in sorted(glob.glob(pat))]
    paths = [p for p in _unique([*_python_files(), *paths, *_module_paths()]) if _is_x86_elf(p)]
    paths.sort(key=lambda p: hashlib.sha1(p.encode()).digest())
    names: dict[str, int] = {}
    parts: dict[str, list[Source]] = {}
    for p in paths:
        n = _name(p)
        names[n] = names.get(n, 0) + 1
        src = Source(n if names[n] == 1 else f"{n}#{names[n]}", p)
        parts.setdefault(src.part, []).append(src)
    queues = [parts[k] for k in sorted(parts)]
    out = list(kernel_sources())
    for i in range(max(map(len, queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return tuple(out)


def spread(sources: tuple[Source, ...], n: int) -> list[Source]:
    """n sources taken at an even stride through `sources` (all of them if there are fewer)."""
    if len(sources) <= n:
        return list(sources)
    return [sources[i * len(sources) // n] for i in range(n)]


def sweep(
    ranges: Iterable[CodeRange],
    limit: int,
    windows: int = 1,
    memory_only: bool = False,
    count_memory: bool = False,
) -> Iterator[Sample]:
    """Linear sweep with iced-x86 (invalid bytes skipped), at most `limit` instructions in all.

    With windows > 1 each range is cut into that many equal parts and the quota is split between them,
    so a big section is sampled throughout, not just at its start; the sweep still runs from the
    section start (skipped instructions cost iced's raw decode only), so boundaries stay those of a
    linear sweep. Padding (int3 and zero fill) is skipped. memory_only keeps only instructions with a
    memory operand (explicit or implicit); count_memory yields every instruction but counts only those
    against `limit` ("the first N memory-operand instructions and everything between them").
    """
    left = limit
    for r in ranges:
        if left <= 0:
            return
        data = r.data[:MAX_RANGE_BYTES]
        size = len(data)
        nwin = max(1, min(windows, size // 256 or 1))
        quota = [left // nwin + (1 if i < left % nwin else 0) for i in range(nwin)]
        # count_memory: a window of code without memory operands ends after this many instructions.
        spare = [q * UNCOUNTED_PER_COUNTED for q in quota]
        dec = Decoder(r.mode, data, DecoderOptions.NONE, ip=r.address)
        base = r.address
        for ins in dec:
            if ins.code == Code.INVALID:
                continue
            off = ins.ip - base
            w = off * nwin // size
            if quota[w] <= 0:
                if w == nwin - 1:
                    break
                continue
            if ins.len <= 2 and data[off] in (0, 0xCC) and data[off : off + ins.len] in _FILL:
                run = _FILL_RUN.match(data, off)
                if run and run.end() - off > 64:  # jump over long padding (megabytes at the kernel's end)
                    end = run.end() - (run.end() - off) % ins.len
                    dec.position = end
                    dec.ip = base + end
                continue
            counted = True
            if memory_only or count_memory:
                counted = iced_memory(ins) != 0
                if memory_only and not counted:
                    continue
            yield Sample(r, off, data[off : off + MAX_INSN], ins)
            if counted:
                quota[w] -= 1
                left -= 1
                if left <= 0:
                    return
            else:
                spare[w] -= 1
                if spare[w] <= 0:
                    quota[w] = 0  # what it did not use goes to the following ranges
