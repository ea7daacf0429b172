"""Hostile input: random and mutated images give a valid plan or an ImageError, quickly and without
allocating more than the file and the boot structures.

Mutations overwrite header bytes of valid ELF32/ELF64, multiboot (a.out kludge and ELF) and bzImage
files with boundary values (0, 1, all ones, top bit, huge sizes) at field-aligned offsets, or truncate
them; every plan that comes out is checked against the layout it was made for.
"""

from __future__ import annotations

import itertools
import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from images.synth import LAYOUT, bzimage, elf32, elf64, mb_aout, mb_elf
from vmmio.images import ImageError, LoadPlan, MemoryLayout, load

BASES = {"elf64": elf64(), "elf32": elf32(), "mb_aout": mb_aout(), "mb_elf": mb_elf(), "linux": bzimage()}
# Where the headers are: ELF header + program headers, multiboot header, boot sector + setup header.
HEADER_END = {"elf64": 0xB0, "elf32": 0x80, "mb_aout": 0x80, "mb_elf": 0x90, "linux": 0x290}
INTERESTING = [
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x1000,
    0xFFFF,
    0x10000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
]
INTERESTING += [1 << 32, 1 << 40, (1 << 63), (1 << 64) - 1, 0x200000, 0x1000000, 0x100000, 0x40000000]
TIME_LIMIT = 0.05  # CPU seconds of this thread: the work is bounded, whatever the load
# Boot structures a plan may build beyond views of the file: boot_params + command line, or the multiboot
# information with its memory map and strings. Anything bigger must be a view of the input.
STRUCTURES_MAX = 0x2000
LAYOUTS = [LAYOUT, MemoryLayout(((0, 64 << 20), (4 << 30, 1 << 30)), reserved=((0xD000_0000, 0x20000),))]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(BASES)))
    data = bytearray(BASES[kind])
    for _ in range(draw(st.integers(1, 6))):
        width = draw(st.sampled_from([1, 2, 4, 8]))
        off = draw(st.integers(0, HEADER_END[kind] // width - 1)) * width
        if draw(st.booleans()):
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
        else:
            value = draw(st.integers(0, (1 << (8 * width)) - 1))
        struct.pack_into("<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], data, off, value)
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return kind, bytes(data)


def _check(data: bytes, plan: LoadPlan, layout: MemoryLayout) -> None:
    usable = layout.usable
    chunks = plan.chunks
    for c in chunks:
        assert any(b <= c.gpa and c.end <= b + s for b, s in usable), c
        assert c.data.obj is data or len(c.data) <= STRUCTURES_MAX, (c.what, len(c.data))
    for a, b in itertools.pairwise(chunks):
        assert a.end <= b.gpa, (a, b)
    assert any(c.gpa <= plan.entry < c.end for c in chunks), hex(plan.entry)
    if plan.state.paging:
        assert plan.identity_map >= max(c.end for c in chunks)


def _run(data: bytes, **options: object) -> None:
    for layout in LAYOUTS:
        start = time.thread_time()
        try:
            plan = load(data, layout, **options)  # type: ignore[arg-type]
        except ImageError as e:
            assert "\n" not in str(e)
            plan = None
        elapsed = time.thread_time() - start
        assert elapsed < TIME_LIMIT, f"{elapsed * 1000:.1f} ms"
        if plan is not None:
            _check(data, plan, layout)


@settings(max_examples=600, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_headers_give_a_plan_or_an_image_error(case: tuple[str, bytes]) -> None:
    kind, data = case
    _run(data)
    _run(
        data,
        format={"elf64": "elf", "elf32": "elf", "mb_aout": "multiboot", "mb_elf": "multiboot"}.get(
            kind, "linux"
        ),
    )


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.sampled_from([b"", b"\x7fELF\x02\x01\x01", b"\x7fELF\x01\x01\x01", b"\x02\xb0\xad\x1b"]),
    st.binary(max_size=0x400),
)
def test_random_bytes_give_a_plan_or_an_image_error(prefix: bytes, body: bytes) -> None:
    data = prefix + body
    _run(data)
    for fmt in ("elf", "multiboot", "linux", "flat"):
        _run(data, format=fmt)


def test_mutations_reach_plans_as_well_as_errors() -> None:
    """The fuzzing above is only meaningful if valid bases plan and their mutations can still plan."""
    for data in BASES.values():
        load(data, LAYOUT)
    tweaked = bytearray(BASES["linux"])
    struct.pack_into("<I", tweaked, 0x238, 0x100)  # a smaller cmdline_size is still a valid image
    assert load(bytes(tweaked), LAYOUT).format == "linux"
