"""Malformed guest images through `vmmio.images.load` and `Machine().load`: an ImageError or a valid plan.

Cases start from the synthetic ELF32/ELF64/multiboot (a.out kludge and ELF)/bzImage builders of
tests/images/synth.py, mutated at header fields with boundary values, byte by byte anywhere, cut,
extended or spliced; or are random bytes, some behind a format's signature. Format, file name and boot
options (command line, modules, initrd) vary, some not taken by the format.

Invariants: `load` raises ImageError (a one-line message) and nothing else, or returns a plan whose
chunks lie in usable RAM, sorted and disjoint, whose entry point is inside one of them and whose
identity map covers them when it pages; each chunk's bytes are a view of the input or boot structures
of at most STRUCTURES_MAX bytes, and (sampled with tracemalloc) loading allocates no more than the
input plus STRUCTURES_MAX plus SLACK. Each load takes under TIME_LIMIT (a slow case is re-run before
it counts, so a preempted worker is not a failure). `Machine().load` raises only ImageError.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, cast

from fuzz.core import FIXED, Stats, Target, Violation, Weighted
from vmmio.images import Format, ImageError, LoadPlan, MemoryLayout, load
from vmmio.machine import Machine

_TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(_TESTS) not in sys.path:  # the synthetic builders live with the loader tests
    sys.path.append(str(_TESTS))
from images.synth import LAYOUT, bzimage, elf32, elf64, mb_aout, mb_elf  # noqa: E402

TIME_LIMIT = 0.05
STRUCTURES_MAX = 0x2000  # boot_params + command line, or the multiboot information and its strings
SLACK = 0x8000  # Python's own objects while parsing
LAYOUTS = (LAYOUT, MemoryLayout(((0, 64 << 20), (4 << 30, 1 << 30)), reserved=((0xD000_0000, 0x20000),)))
BASES = {"elf64": elf64(), "elf32": elf32(), "mb_aout": mb_aout(), "mb_elf": mb_elf(), "linux": bzimage()}
HEADER_END = {"elf64": 0xB0, "elf32": 0x80, "mb_aout": 0x80, "mb_elf": 0x90, "linux": 0x290}
SIGNATURES = (b"\x7fELF\x02\x01\x01", b"\x7fELF\x01\x01\x01", struct.pack("<III", 0x1BADB002, 0, 0xE4524FFE))
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0xFFFF, 0x10000, 0x7FFF_FFFF, 0x8000_0000,
               0xFFFF_FFFF, 1 << 32, 1 << 40, 1 << 63, (1 << 64) - 1, 0x200000, 0x1000000)  # fmt: skip
FORMATS = ("", "", "", "elf", "multiboot", "linux", "flat", "bogus")
NAMES = ("", "", "kernel.elf", "guest.bin", "vmlinuz", "README.txt")
_PACK = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


@dataclass(frozen=True)
class Case:
    data: bytes
    format: str = field(default="", metadata=FIXED)  # "" detects
    name: str = field(default="", metadata=FIXED)  # "" passes none
    cmdline: bytes = b""
    module: bytes = b""  # a multiboot module, or the Linux initrd, when options are passed
    options: bool = False
    layout: int = field(default=0, metadata=FIXED)
    machine: bool = False  # also through Machine().load
    trace: bool = False  # measure allocations with tracemalloc (no time bound then)


def _store_field(rng: random.Random, data: bytearray, kind: str) -> None:
    width = rng.choice((1, 2, 4, 8))
    off = rng.randrange(max(1, HEADER_END[kind] // width)) * width
    value = rng.choice(INTERESTING) if rng.random() < 0.6 else rng.getrandbits(8 * width)
    if off + width <= len(data):
        struct.pack_into(_PACK[width], data, off, value & ((1 << (8 * width)) - 1))


def _mutated(rng: random.Random) -> bytes:
    kind = rng.choice(tuple(BASES))
    data = bytearray(BASES[kind])
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.55:
            _store_field(rng, data, kind)
        elif r < 0.75:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif r < 0.85:
            data = data[: rng.randrange(len(data) + 1)] or bytearray(1)
        elif r < 0.92:
            data += rng.randbytes(rng.randint(1, 0x400))
        else:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(data)


def _random(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice((0, 1, 16, 64, 0x200, 0x400, 0x1000)))
    if rng.random() < 0.5:
        return body
    if rng.random() < 0.3:  # a bzImage signature at its fixed offsets
        raw = bytearray(body.ljust(0x300, b"\0"))
        raw[0x1FE:0x200] = b"\x55\xaa"
        raw[0x202:0x206] = b"HdrS"
        return bytes(raw)
    return rng.choice(SIGNATURES) + body


DATA: Weighted[Callable[[random.Random], bytes]] = Weighted(((8, _mutated), (2, _random)))


def generate(rng: random.Random) -> Case:
    data = DATA(rng)(rng)
    return Case(
        data,
        rng.choice(FORMATS),
        rng.choice(NAMES),
        rng.randbytes(rng.choice((0, 5, 40))).replace(b"\0", b"x") if rng.random() < 0.5 else b"",
        rng.randbytes(rng.choice((0, 1, 0x1001))),
        rng.random() < 0.25,
        rng.randrange(len(LAYOUTS)),
        rng.random() < 0.05,
        rng.random() < 0.02,
    )


def _options(case: Case) -> dict[str, object]:
    if not case.options:
        return {}
    out: dict[str, object] = {"cmdline": case.cmdline}
    if case.format in ("multiboot", ""):
        out["modules"] = [(case.module, "mod")]
    if case.format in ("linux", ""):
        out["initrd"] = case.module
    return out


def _format(case: Case) -> Format | None:
    return cast(Format | None, case.format or None)  # "bogus" too: an unknown format is an ImageError


def _load(case: Case, layout: MemoryLayout) -> tuple[LoadPlan | None, float]:
    kw: Any = _options(case)
    start = perf_counter()
    try:
        plan = load(case.data, layout, format=_format(case), name=case.name or None, **kw)
    except ImageError as err:
        if "\n" in str(err):
            raise Violation("multi-line-error", repr(str(err))) from None
        plan = None
    return plan, perf_counter() - start


def _check_plan(case: Case, plan: LoadPlan, layout: MemoryLayout) -> None:
    usable = layout.usable
    inputs = (case.data, case.module)
    built = 0
    for c in plan.chunks:
        if not any(b <= c.gpa and c.end <= b + s for b, s in usable):
            raise Violation("chunk-outside-ram", f"{c.what} [{c.gpa:#x}, {c.end:#x}) is not in usable RAM")
        if not any(c.data.obj is i for i in inputs):
            built += len(c.data)
    if built > STRUCTURES_MAX:
        raise Violation("chunk-copies", f"{built} bytes of chunks are not views of the input")
    for a, b in itertools.pairwise(plan.chunks):
        if a.end > b.gpa:
            raise Violation("chunks-overlap", f"{a.what} and {b.what}")
    if not any(c.gpa <= plan.entry < c.end for c in plan.chunks):
        raise Violation("entry-outside", f"entry {plan.entry:#x} is in no chunk")
    if plan.state.paging and plan.identity_map < max(c.end for c in plan.chunks):
        raise Violation("identity-map", f"identity map {plan.identity_map:#x} does not cover the chunks")


def _traced(case: Case, layout: MemoryLayout) -> None:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _load(case, layout)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    bound = len(case.data) + len(case.module) + STRUCTURES_MAX + SLACK
    if peak > bound:
        raise Violation("allocates", f"loading {len(case.data)} bytes allocated {peak} bytes at peak")


def check(case: Case, stats: Stats) -> int:
    layout = LAYOUTS[case.layout]
    if case.trace:
        _traced(case, layout)
        return 1
    plan, took = _load(case, layout)
    if took > TIME_LIMIT:  # confirm: a preempted or collecting worker is not the loader's fault
        took = min(took, _load(case, layout)[1], _load(case, layout)[1])
        if took > TIME_LIMIT:
            raise Violation("slow", f"load took {took * 1000:.1f} ms")
    stats.time(took)
    if plan is not None:
        _check_plan(case, plan, layout)
        stats.notes[f"plan.{plan.format}"] += 1
    else:
        stats.notes["ImageError"] += 1
    if case.machine:
        with contextlib.suppress(ImageError):
            Machine(uart_sink=lambda _: None).load(case.data, name=case.name or None, format=_format(case))
    return 1


TARGET = Target("images", "image", 20_000, 1_000, generate, check, __name__)
