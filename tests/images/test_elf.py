"""ELF32/ELF64 loading: valid plans, one row per malformed-header check, and the hostile-input bounds."""

from __future__ import annotations

import struct
import time
import tracemalloc

import pytest

from images.synth import CODE, LAYOUT, MIB, Elf, Ram, Seg, elf32, elf64
from vmmio.images import ImageError, MemoryLayout, apply, load_elf, parse_elf


def test_elf64_plan_places_segments_at_their_physical_addresses_without_copying() -> None:
    data = elf64()
    plan = load_elf(data, LAYOUT)
    assert (plan.format, plan.cpu, plan.entry, plan.regs) == ("elf", "long64", 0x200010, ())
    assert [(c.gpa, bytes(c.data), c.zero) for c in plan.chunks] == [
        (0x200000, CODE, 0),
        (0x202000, CODE[:0x800], 0x2800),
    ]
    assert all(c.data.obj is data for c in plan.chunks), "segment bytes must be views of the file"
    assert plan.identity_map == 0x205000


def test_elf32_starts_in_flat32_and_apply_clears_the_bss() -> None:
    data = elf32()
    plan = load_elf(data, LAYOUT)
    assert (plan.cpu, plan.state.bits, plan.state.paging, plan.identity_map) == ("flat32", 32, False, 0)
    ram = Ram(4 * MIB)
    ram.mem[0x202000:0x205000] = b"\xff" * 0x3000
    apply(plan, ram.write)
    assert ram.read(0x200000, len(CODE)) == CODE
    assert ram.read(0x202000, 0x800) == CODE[:0x800]
    assert ram.read(0x202800, 0x2800) == bytes(0x2800)
    assert ram.read(0x205000, 1) == b"\0"  # nothing written past the segment


def test_entry_is_translated_from_virtual_to_physical_through_its_segment() -> None:
    data = Elf(64, [Seg(0x400000, CODE, vaddr=0xFFFF_FFFF_8040_0000)], 0xFFFF_FFFF_8040_0123).build()
    image = parse_elf(data)
    assert (image.entry, image.entry_gpa) == (0xFFFF_FFFF_8040_0123, 0x400123)
    assert load_elf(data, LAYOUT).entry == 0x400123


def test_other_program_headers_are_ignored_even_when_they_point_outside_the_file() -> None:
    note = Seg(0, p_type=4, offset=0x7FFF_FFFF, filesz=0x100)  # PT_NOTE past the end of the file
    empty = Seg(0x300000, p_type=1)  # PT_LOAD with nothing in it
    data = Elf(64, [note, Seg(0x200000, CODE), empty], 0x200000).build()
    plan = load_elf(data, LAYOUT)
    assert [c.what for c in plan.chunks] == ["ELF program header 1"]


def _with_phdr(data: bytes, bits: int, n: int, **fields: int) -> bytes:
    """`data` with fields of program header n replaced (offsets from the ELF gABI)."""
    names = (
        ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")
        if bits == 64
        else ("p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align")
    )
    fmt, phoff, size = ("<IIQQQQQQ", 64, 56) if bits == 64 else ("<8I", 52, 32)
    values = dict(zip(names, struct.unpack_from(fmt, data, phoff + n * size), strict=True)) | fields
    out = bytearray(data)
    struct.pack_into(fmt, out, phoff + n * size, *values.values())
    return bytes(out)


RAM_2G = MemoryLayout.simple(2 << 30)
RESERVED_HOLE = MemoryLayout.simple(32 * MIB, reserved=((0x200000, 0x1000),))

# (case, image, layout, fragment of the ImageError message)
MALFORMED = [
    ("empty", b"", LAYOUT, "ELF e_ident truncated"),
    ("magic only", b"\x7fELF", LAYOUT, "ELF e_ident truncated"),
    ("class 0", Elf(32, [], 0, ident={4: 0}).build(), LAYOUT, "e_ident[EI_CLASS] 0 is not 1 (ELF32) or 2"),
    ("class 3", Elf(64, [], 0, ident={4: 3}).build(), LAYOUT, "e_ident[EI_CLASS] 3"),
    ("big-endian", Elf(64, [], 0, ident={5: 2}).build(), LAYOUT, "e_ident[EI_DATA] 2 is not 1 (little"),
    ("ident version 0", Elf(64, [], 0, ident={6: 0}).build(), LAYOUT, "e_ident[EI_VERSION] 0 is not 1"),
    ("truncated ELF64 header", elf64()[:40], LAYOUT, "ELF64 header truncated: file is 40 bytes, the header"),
    ("truncated ELF32 header", elf32()[:51], LAYOUT, "ELF32 header truncated: file is 51 bytes"),
    ("ET_DYN", elf64(e_type=3), LAYOUT, "ELF e_type 3 (ET_DYN) is not ET_EXEC (2)"),
    ("ET_REL", elf32(e_type=1), LAYOUT, "ELF e_type 1 (ET_REL)"),
    ("ET_CORE", elf64(e_type=4), LAYOUT, "ELF e_type 4 (ET_CORE)"),
    ("ELF32 for ARM", elf32(e_machine=40), LAYOUT, "ELF e_machine 40 is not EM_386 (3) for ELF32"),
    ("ELF64 for i386", elf64(e_machine=3), LAYOUT, "ELF e_machine 3 is not EM_X86_64 (62) for ELF64"),
    ("ELF32 for x86-64 (x32)", elf32(e_machine=62), LAYOUT, "ELF e_machine 62 is not EM_386"),
    ("e_version 0", elf64(e_version=0), LAYOUT, "ELF e_version 0 is not 1"),
    ("e_phentsize 0", elf64(e_phentsize=0), LAYOUT, "ELF e_phentsize 0 < 56"),
    ("e_phentsize short", elf32(e_phentsize=31), LAYOUT, "ELF e_phentsize 31 < 32"),
    ("e_phnum PN_XNUM", elf64(e_phnum=0xFFFF), LAYOUT, "ELF e_phnum 0xffff (PN_XNUM"),
    ("e_phnum over the cap", elf64(e_phnum=1025), LAYOUT, "ELF e_phnum 1025 > 1024"),
    ("table past the file", elf64(e_phoff=0x10000), LAYOUT, "ELF program header table [0x10000, 0x10070)"),
    ("table end past the file", elf32(e_phnum=400), LAYOUT, "is past the end of the file"),
    ("no program headers", elf64(e_phnum=0), LAYOUT, "ELF has no PT_LOAD segment"),
    ("only a PT_NOTE", Elf(64, [Seg(0x200000, CODE, p_type=4)], 0).build(), LAYOUT, "ELF has no PT_LOAD"),
    (
        "p_filesz > p_memsz",
        _with_phdr(elf64(), 64, 1, p_filesz=0x2000, p_memsz=0x1000),
        LAYOUT,
        "ELF program header 1: p_filesz 0x2000 > p_memsz 0x1000",
    ),
    (
        "segment past the end of the file",
        _with_phdr(elf32(), 32, 0, p_offset=0x1000, p_filesz=0x1000),
        LAYOUT,
        "ELF program header 0: file bytes [0x1000, 0x2000) (p_offset, p_filesz) are past the end of the file",
    ),
    (
        "segment outside RAM",
        _with_phdr(elf64(), 64, 0, p_paddr=0x4000_0000),
        LAYOUT,
        "ELF program header 0 [0x40000000, 0x40001000) is not inside usable RAM (RAM [0x0, 0x2000000))",
    ),
    (
        "segment straddles the end of RAM",
        _with_phdr(elf32(), 32, 1, p_paddr=0x1FFF000),
        LAYOUT,
        "ELF program header 1 [0x1fff000, 0x2002000) is not inside usable RAM",
    ),
    (
        "1 GiB .bss in 32 MiB",
        _with_phdr(elf64(), 64, 1, p_memsz=1 << 30),
        LAYOUT,
        "ELF program header 1 [0x202000, 0x40202000) is not inside usable RAM",
    ),
    (
        "segment over the VMM's page tables",
        _with_phdr(elf64(), 64, 1, p_paddr=0x3000),
        LAYOUT,
        "ELF program header 1 [0x3000, 0x6000) overlaps RAM in use by the VMM [0x1000, 0x7000)",
    ),
    ("segment in a reserved range", elf64(), RESERVED_HOLE, "program header 0 [0x200000, 0x201000) is not"),
    (
        "overlapping segments",
        _with_phdr(elf64(), 64, 1, p_paddr=0x200800),
        LAYOUT,
        "ELF program header 1 [0x200800, 0x203800) overlaps ELF program header 0 [0x200000, 0x201000)",
    ),
    ("entry outside every segment", elf64(e_entry=0x100000), LAYOUT, "e_entry 0x100000 is not inside any"),
    ("entry in no segment (32)", elf32(e_entry=0x205000), LAYOUT, "ELF e_entry 0x205000 is not inside any"),
    (
        "ELF32 segment wraps 4 GiB",
        _with_phdr(elf32(), 32, 1, p_paddr=0xFFFF_F000),
        RAM_2G,
        "ELF program header 1: [0xfffff000, 0x100002000) (p_paddr, p_memsz) wraps ELF32 addresses",
    ),
    (
        "ELF64 segment wraps 2**64",
        _with_phdr(elf64(), 64, 1, p_paddr=0xFFFF_FFFF_FFFF_F000),
        LAYOUT,
        "wraps ELF64 addresses",
    ),
]


@pytest.mark.parametrize(("data", "layout", "fragment"), [pytest.param(*r[1:], id=r[0]) for r in MALFORMED])
def test_malformed_elf_is_rejected_with_a_one_line_message(
    data: bytes, layout: MemoryLayout, fragment: str
) -> None:
    with pytest.raises(ImageError) as err:
        load_elf(data, layout)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def _timed(data: bytes, layout: MemoryLayout) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        load_elf(data, layout)
    except ImageError as e:
        return time.perf_counter() - start, str(e)
    return time.perf_counter() - start, ""


def test_phnum_65535_with_phentsize_0_is_rejected_at_once() -> None:
    """The review's 8-minute case: 65535 zero-size headers. It must fail on the header, not loop."""
    for fields, fragment in (
        ({"e_phnum": 0xFFFF, "e_phentsize": 0}, "e_phentsize 0 < 56"),
        ({"e_phnum": 0xFFFF}, "PN_XNUM"),
        ({"e_phnum": 0xFFFE}, "e_phnum 65534 > 1024"),
    ):
        elapsed, message = _timed(elf64(**fields), LAYOUT)
        assert fragment in message
        assert elapsed < 0.05, f"{fields}: {elapsed:.3f}s"


def test_a_full_table_of_empty_headers_is_walked_quickly() -> None:
    """1024 program headers (the cap), all PT_LOAD with nothing to load: bounded work, then no segment."""
    segs = [Seg(0x200000 + n * 0x1000, p_type=1) for n in range(1024)]
    elapsed, message = _timed(Elf(64, segs, 0x200000).build(), LAYOUT)
    assert "no PT_LOAD segment" in message
    assert elapsed < 0.05


def test_1gib_bss_is_rejected_fast_without_allocating_it() -> None:
    data = _with_phdr(elf64(), 64, 1, p_memsz=1 << 30)
    tracemalloc.start()
    try:
        elapsed, message = _timed(data, LAYOUT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "is not inside usable RAM" in message
    assert elapsed < 0.05
    assert peak < 256 << 10, f"peak {peak} bytes"


def test_1gib_bss_that_fits_is_planned_as_a_count_and_applied_by_fill_zero() -> None:
    data = _with_phdr(elf64(), 64, 1, p_memsz=1 << 30)
    tracemalloc.start()
    try:
        plan = load_elf(data, RAM_2G)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, f"peak {peak} bytes"
    assert plan.chunks[1].zero == (1 << 30) - 0x800
    writes: list[tuple[int, int]] = []
    zeros: list[tuple[int, int]] = []
    apply(plan, lambda gpa, b: writes.append((gpa, len(b))), lambda gpa, n: zeros.append((gpa, n)))
    assert writes == [(0x200000, 0x1000), (0x202000, 0x800)]
    assert zeros == [(0x202800, (1 << 30) - 0x800)]
