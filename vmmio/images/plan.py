"""What a loader returns: the bytes to place, where, and the CPU state to start in. Nothing touches RAM.

A `LoadPlan` is data, so it can be checked, printed and tested without a VM; `apply` writes it through
two callbacks. Chunk payloads are read-only views of the image (or of small boot structures the loader
built), and a segment's zero-filled tail is a count, so a 1 GiB .bss costs nothing until it is applied.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from vmmio.images.errors import ImageError, span
from vmmio.images.layout import MemoryLayout

CpuMode = Literal["long64", "flat32", "multiboot32", "linux64"]
Format = Literal["elf", "multiboot", "linux", "flat"]

# Flat 4 GiB descriptors: 64-bit code (L=1), data, 32-bit code (D=1); all present, DPL 0, G=1.
CODE64 = 0x00AF9A000000FFFF
DATA = 0x00CF92000000FFFF
CODE32 = 0x00CF9A000000FFFF


@dataclass(frozen=True)
class EntryMode:
    """The fixed part of a mode's entry state; the plan adds RIP and the registers that vary.

    gdt is the descriptor table to load (index = selector >> 3); cs is loaded into CS, ds into DS, ES,
    FS, GS and SS. paging says whether CR0.PG is set (then with an identity map, see LoadPlan).
    """

    bits: int
    paging: bool
    gdt: tuple[int, ...]
    cs: int
    ds: int
    summary: str


CPU_STATES: dict[CpuMode, EntryMode] = {
    "long64": EntryMode(
        64, True, (0, CODE64, DATA, CODE32), 0x08, 0x10,
        "64-bit long mode, identity paging, flat segments, IF=0; other registers are the VMM's choice",
    ),
    "flat32": EntryMode(
        32, False, (0, CODE64, DATA, CODE32), 0x18, 0x10,
        "32-bit protected mode, paging off, flat 4 GiB segments, IF=0",
    ),
    "multiboot32": EntryMode(
        32, False, (0, CODE64, DATA, CODE32), 0x18, 0x10,
        "multiboot v1: 32-bit protected mode, paging off, A20 on, flat 4 GiB CS/DS/ES/FS/GS/SS, "
        "IF=0, EFLAGS.VM=0, EAX=0x2BADB002, EBX=multiboot information; ESP and the GDT are not promised",
    ),
    "linux64": EntryMode(
        64, True, (0, 0, CODE64, DATA), 0x10, 0x18,
        "Linux 64-bit boot protocol: long mode, identity paging, GDT with __BOOT_CS 0x10 and __BOOT_DS "
        "0x18 (DS/ES/SS), IF=0, RSI=boot_params, RIP=kernel load address + 0x200",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Chunk:
    """`data` copied to `gpa`, then `zero` bytes cleared right after it; `what` names it in messages."""

    gpa: int
    data: memoryview
    zero: int = 0
    what: str = ""

    @property
    def size(self) -> int:
        return len(self.data) + self.zero

    @property
    def end(self) -> int:
        return self.gpa + self.size


@dataclass(frozen=True)
class LoadPlan:
    """A parsed image placed in a memory layout: what to write where, and how to start the CPU.

    format        "elf", "multiboot", "linux" or "flat": which loader built it.
    cpu           the entry mode; CPU_STATES[cpu] describes its segments, GDT and paging.
    entry         guest-physical RIP/EIP (paging modes run identity-mapped, so it is also the linear one).
    chunks        what to write, sorted by address, inside usable RAM, clear of `in_use` and of each other.
    regs          registers other than RIP the entry state sets, e.g. (("rax", 0x2BADB002), ("rbx", info)).
    identity_map  paging modes: the identity map must cover at least [0, identity_map); 0 without paging.
    boot_info     (name, gpa) of the boot structures the loader built, e.g. ("boot_params", 0x7000).
    """

    format: Format
    cpu: CpuMode
    entry: int
    chunks: tuple[Chunk, ...]
    regs: tuple[tuple[str, int], ...] = ()
    identity_map: int = 0
    boot_info: tuple[tuple[str, int], ...] = ()

    @property
    def state(self) -> EntryMode:
        return CPU_STATES[self.cpu]

    def reg(self, name: str, default: int = 0) -> int:
        """The entry value of one register, `default` when the plan leaves it to the VMM."""
        return dict(self.regs).get(name, default)


def check_chunks(chunks: Iterable[Chunk], layout: MemoryLayout, limit: int) -> tuple[Chunk, ...]:
    """Sorted non-empty chunks, each inside one usable RAM range below `limit`, clear of `in_use` and
    of each other; the first violation raises ImageError naming the chunk."""
    usable = layout.usable
    out = sorted((c for c in chunks if c.size), key=lambda c: c.gpa)
    for c in out:
        where = span(c.gpa, c.end)
        if c.end > limit:
            raise ImageError(
                f"{c.what} {where} reaches past {limit:#x}, beyond what this entry mode addresses"
            )
        if not any(b <= c.gpa and c.end <= b + s for b, s in usable):
            raise ImageError(f"{c.what} {where} is not inside usable RAM ({layout.describe()})")
        for b, s in layout.in_use:
            if b < c.end and c.gpa < b + s:
                raise ImageError(f"{c.what} {where} overlaps RAM in use by the VMM {span(b, b + s)}")
    for lo, hi in itertools.pairwise(out):
        if hi.gpa < lo.end:
            raise ImageError(f"{hi.what} {span(hi.gpa, hi.end)} overlaps {lo.what} {span(lo.gpa, lo.end)}")
    return tuple(out)


APPLY_BLOCK = 1 << 20  # bytes handed to a callback at once, so applying never holds more than this


def apply(
    plan: LoadPlan,
    write: Callable[[int, bytes], None],
    fill_zero: Callable[[int, int], None] | None = None,
) -> None:
    """Write `plan` into guest RAM through `write(gpa, bytes)` and `fill_zero(gpa, size)`.

    Without `fill_zero`, zeroes are written through `write`. Payloads go out in blocks of at most
    APPLY_BLOCK bytes, so a large kernel or .bss never needs a second full-size buffer.
    """
    zeros = bytes(APPLY_BLOCK) if fill_zero is None and any(c.zero for c in plan.chunks) else b""
    for c in plan.chunks:
        for off in range(0, len(c.data), APPLY_BLOCK):
            write(c.gpa + off, bytes(c.data[off : off + APPLY_BLOCK]))
        base = c.gpa + len(c.data)
        if fill_zero is not None:
            if c.zero:
                fill_zero(base, c.zero)
            continue
        for off in range(0, c.zero, APPLY_BLOCK):
            write(base + off, zeros[: min(APPLY_BLOCK, c.zero - off)])
