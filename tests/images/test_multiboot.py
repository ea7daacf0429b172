"""Multiboot v1: header search, a.out-kludge and ELF loading, the information structure read back field
by field (offsets from the specification), modules, and kvm-unit-tests' emulator.flat when cached."""

from __future__ import annotations

import struct

import pytest

from images.synth import (
    CODE,
    LAYOUT,
    MACHINE_IN_USE,
    MIB,
    Elf,
    Ram,
    Seg,
    mb_aout,
    mb_elf,
    mb_header,
    real_image,
)
from vmmio.images import (
    BOOTLOADER_MAGIC,
    CPU_STATES,
    ImageError,
    LoadPlan,
    MemoryLayout,
    apply,
    detect,
    find_multiboot_header,
    load_multiboot,
    parse_elf,
)

# Multiboot information offsets (specification section 3.3).
MBI = {
    "flags": 0, "mem_lower": 4, "mem_upper": 8, "cmdline": 16, "mods_count": 20, "mods_addr": 24,
    "mmap_length": 44, "mmap_addr": 48, "boot_loader_name": 64,
}  # fmt: skip


def _placed(plan: LoadPlan, ram_size: int = 32 * MIB) -> Ram:
    ram = Ram(ram_size)
    apply(plan, ram.write)
    return ram


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        pytest.param(mb_header(0), 0, id="at 0"),
        pytest.param(bytes(8) + mb_header(3), 8, id="at 8"),
        pytest.param(bytes(8180) + mb_header(0), 8180, id="last place that fits 8192"),
        pytest.param(bytes(2) + mb_header(0) + bytes(2) + mb_header(1), 16, id="misaligned one skipped"),
        pytest.param(mb_header(0, checksum=0) + mb_header(2), 12, id="bad checksum skipped"),
    ],
)
def test_header_search_finds_the_first_aligned_header_with_a_valid_checksum(data: bytes, offset: int) -> None:
    hdr = find_multiboot_header(data)
    assert hdr is not None and hdr.offset == offset


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(8184) + mb_header(0), id="header ends past 8192"),
        pytest.param(bytes(8192) + mb_header(0), id="beyond 8192"),
        pytest.param(mb_header(0)[:11], id="truncated"),
        pytest.param(bytes(1) + mb_header(0), id="misaligned"),
        pytest.param(mb_header(0, checksum=1), id="bad checksum"),
    ],
)
def test_no_header_is_found_where_the_spec_puts_none(data: bytes) -> None:
    assert find_multiboot_header(data) is None


def test_aout_kludge_loads_from_load_addr_and_clears_bss() -> None:
    data = mb_aout()
    plan = load_multiboot(data, LAYOUT)
    kernel = next(c for c in plan.chunks if c.what == "multiboot image")
    assert (kernel.gpa, bytes(kernel.data), kernel.zero) == (0x100000, data, 0x2000)
    assert (plan.format, plan.cpu, plan.entry) == ("multiboot", "multiboot32", 0x100060)


def test_aout_kludge_with_the_header_after_load_addr_skips_the_file_bytes_before_load_addr() -> None:
    # load_addr 0x20 before header_addr: loading starts 0x20 before the header in the file.
    data = mb_aout(pad=0x40, header_addr=0x100040, load_addr=0x100020, load_end_addr=0, bss_end_addr=0)
    plan = load_multiboot(data, LAYOUT)
    kernel = next(c for c in plan.chunks if c.what == "multiboot image")
    assert (kernel.gpa, bytes(kernel.data), kernel.zero) == (0x100020, data[0x20:], 0)


def test_elf_kernel_is_loaded_by_its_segments_and_entered_at_its_entry() -> None:
    data = mb_elf()
    assert detect(data) == "multiboot", "a valid multiboot header takes precedence over ELF"
    plan = load_multiboot(data, LAYOUT)
    image = parse_elf(data)
    kernel = [c for c in plan.chunks if c.what.startswith("ELF")]
    assert [(c.gpa, len(c.data), c.zero) for c in kernel] == [
        (s.paddr, s.filesz, s.memsz - s.filesz) for s in image.segments
    ]
    assert plan.entry == 0x10000C


def test_entry_state_is_the_multiboot_one() -> None:
    plan = load_multiboot(mb_elf(), LAYOUT)
    info = dict(plan.boot_info)["multiboot_info"]
    assert plan.regs == (("rax", 0x2BADB002), ("rbx", info)) and BOOTLOADER_MAGIC == 0x2BADB002
    state = CPU_STATES["multiboot32"]
    assert (state.bits, state.paging, state.cs, state.ds) == (32, False, 0x18, 0x10)
    # CS must be a flat 32-bit code segment, DS flat writable data: base 0, limit 4 GiB (G=1, 0xFFFFF).
    for sel, access in ((state.cs, 0x9A), (state.ds, 0x92)):
        desc = state.gdt[sel >> 3]
        assert (desc >> 40) & 0xFF == access
        assert desc & 0xFFFF == 0xFFFF and (desc >> 48) & 0xF == 0xF and (desc >> 55) & 1
        assert (desc >> 16) & 0xFFFFFF == 0 and desc >> 56 == 0
        assert (desc >> 54) & 1 == 1 and (desc >> 53) & 1 == 0  # D/B=1, L=0


def test_information_structure_round_trips() -> None:
    reserved = ((0xA0000, 0x60000), (0xD000_0000, 0x20000))
    layout = MemoryLayout.simple(32 * MIB, reserved=reserved, in_use=MACHINE_IN_USE)
    mods: list[tuple[bytes, str | bytes]] = [
        (b"first module", "initrd one"),
        (bytes(range(200)) * 30, b"second"),
    ]
    plan = load_multiboot(mb_elf(), layout, cmdline="console=ttyS0 x=1", modules=mods)
    ram = _placed(plan)
    info = plan.reg("rbx")
    assert info < MIB and info >= 0x7000, "below 1 MiB, clear of page 0 and of the VMM's page tables"
    field = {name: ram.u32(info + off) for name, off in MBI.items()}
    assert field["flags"] == (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)
    assert (field["mem_lower"], field["mem_upper"]) == (640, 31 * 1024)
    assert ram.cstr(field["cmdline"]) == b"console=ttyS0 x=1"
    assert ram.cstr(field["boot_loader_name"]) == b"vmmio"
    mmap = ram.read(field["mmap_addr"], field["mmap_length"])
    entries = [struct.unpack_from("<IQQI", mmap, n) for n in range(0, len(mmap), 24)]
    assert entries == [
        (20, 0, 0xA0000, 1),
        (20, 0xA0000, 0x60000, 2),
        (20, 0x100000, 31 * MIB, 1),
        (20, 0xD000_0000, 0x20000, 2),
    ]
    assert field["mods_count"] == 2
    kernel_end = max(c.end for c in plan.chunks if c.what.startswith("ELF"))
    prev_end = kernel_end
    for n, (contents, name) in enumerate(mods):
        start, end, string, zero = struct.unpack_from("<IIII", ram.mem, field["mods_addr"] + 16 * n)
        assert start % 0x1000 == 0 and start >= prev_end, "page-aligned, after the kernel"
        assert (end - start, ram.read(start, end - start), zero) == (len(contents), contents, 0)
        assert ram.cstr(string) == (name.encode() if isinstance(name, str) else name)
        prev_end = end
    assert dict(plan.boot_info)["module 1"] == struct.unpack_from("<I", ram.mem, field["mods_addr"] + 16)[0]


def test_memory_info_follows_the_layout() -> None:
    # RAM from 1 MiB only: no lower memory; a hole at 8 MiB ends upper memory there.
    layout = MemoryLayout(((0, 0x80000), (MIB, 7 * MIB), (9 * MIB, 7 * MIB)))
    plan = load_multiboot(mb_elf(), layout)
    ram = _placed(plan, 16 * MIB)
    info = plan.reg("rbx")
    assert (ram.u32(info + 4), ram.u32(info + 8)) == (512, 7 * 1024)


def test_info_addr_can_be_chosen_and_is_checked() -> None:
    plan = load_multiboot(mb_elf(), LAYOUT, info_addr=0x9000)
    assert plan.reg("rbx") == 0x9000
    with pytest.raises(
        ImageError, match=r"multiboot information \[0x3000, .* overlaps RAM in use by the VMM"
    ):
        load_multiboot(mb_elf(), LAYOUT, info_addr=0x3000)
    with pytest.raises(
        ImageError, match=r"multiboot information \[0x100000, .*\) overlaps ELF program header 0"
    ):
        load_multiboot(mb_elf(), LAYOUT, info_addr=0x100000)


def test_empty_module_and_no_modules() -> None:
    plan = load_multiboot(mb_elf(), LAYOUT, modules=[(b"", "empty")])
    ram = _placed(plan)
    mods = ram.u32(plan.reg("rbx") + 24)
    start, end = struct.unpack_from("<II", ram.mem, mods)
    assert start == end and start % 0x1000 == 0
    plan = load_multiboot(mb_elf(), LAYOUT)
    assert _placed(plan).u32(plan.reg("rbx") + 20) == 0


ABOVE_1M = MemoryLayout(((MIB, 31 * MIB),))

# (case, image, layout, options, fragment of the ImageError message)
MALFORMED: list[tuple[str, bytes, MemoryLayout, dict[str, object], str]] = [
    ("no header", Elf(32, [Seg(0x100000, CODE)], 0x100000).build(), LAYOUT, {}, "no multiboot header"),
    (
        "video mode required",
        mb_elf(flags=0x7),
        LAYOUT,
        {},
        "flags 0x7: required bit 2 (video mode table) is not supported",
    ),
    ("undefined required bit", mb_elf(flags=0x20), LAYOUT, {}, "flags 0x20: required bit 5 (undefined)"),
    (
        "address fields truncated",
        mb_header(0x10000) + bytes(8),
        LAYOUT,
        {},
        "flags bit 16 address fields truncated",
    ),
    ("address fields past 8 KiB", bytes(8180) + mb_aout(pad=0), LAYOUT, {}, "address fields truncated"),
    (
        "load_addr > header_addr",
        mb_aout(load_addr=0x100000, header_addr=0xFF000),
        LAYOUT,
        {},
        "load_addr 0x100000 > header_addr 0xff000",
    ),
    (
        "load_addr too far before the header",
        mb_aout(header_addr=0x100080),
        LAYOUT,
        {},
        "header_addr - load_addr = 0x80 is more than",
    ),
    (
        "load_end_addr < load_addr",
        mb_aout(load_end_addr=0xFFFFF),
        LAYOUT,
        {},
        "load_end_addr 0xfffff < load_addr 0x100000",
    ),
    (
        "load_end_addr past the file",
        mb_aout(load_end_addr=0x200000),
        LAYOUT,
        {},
        "load_end_addr 0x200000 needs file bytes up to 0x100000",
    ),
    (
        "bss_end_addr < load end",
        mb_aout(bss_end_addr=0x100010),
        LAYOUT,
        {},
        "bss_end_addr 0x100010 < load end 0x101060",
    ),
    (
        "entry before the image",
        mb_aout(entry_addr=0xFFFFF),
        LAYOUT,
        {},
        "entry_addr 0xfffff is outside the image [0x100000, 0x103060)",
    ),
    (
        "entry after the image",
        mb_aout(entry_addr=0x103060),
        LAYOUT,
        {},
        "entry_addr 0x103060 is outside the image",
    ),
    (
        "image outside RAM",
        mb_aout(load_addr=0x4000000),
        LAYOUT,
        {},
        "multiboot image [0x4000000, 0x4003060) is not inside usable RAM",
    ),
    (
        "image over the page tables",
        mb_aout(load_addr=0x2000),
        LAYOUT,
        {},
        "overlaps RAM in use by the VMM [0x1000, 0x7000)",
    ),
    (
        "image past 4 GiB",
        mb_aout(load_addr=0xFFFFF000, load_end_addr=0, bss_end_addr=0),
        MemoryLayout.simple(8 << 30),
        {},
        "reaches past 0x100000000",
    ),
    (
        "ELF64 above 4 GiB",
        mb_elf(bits=64, paddr=0x1_0000_0000),
        MemoryLayout.simple(8 << 30),
        {},
        "ELF program header 0 [0x100000000, 0x10000100c) reaches past 0x100000000",
    ),
    (
        "not ELF and no addresses",
        mb_header(0) + CODE,
        LAYOUT,
        {},
        "flags bit 16 is clear and the image is not ELF",
    ),
    (
        "malformed ELF under the header",
        mb_elf()[:42] + b"\0\0" + mb_elf()[44:],
        LAYOUT,
        {},
        "ELF e_phentsize 0 < 32",
    ),
    (
        "module too big",
        mb_elf(),
        LAYOUT,
        {"modules": [(bytes(31 * MIB), "big")]},
        "multiboot module 0 (0x1f00000 bytes) does not fit",
    ),
    (
        "too many modules",
        mb_elf(),
        LAYOUT,
        {"modules": [(b"x", "m")] * 65},
        "65 multiboot modules, more than 64",
    ),
    (
        "NUL in the command line",
        mb_elf(),
        LAYOUT,
        {"cmdline": "a\0b"},
        "multiboot command line contains a NUL byte",
    ),
    (
        "NUL in a module string",
        mb_elf(),
        LAYOUT,
        {"modules": [(b"x", b"a\0")]},
        "multiboot module 0 string contains a NUL",
    ),
    (
        "no RAM below 1 MiB for the info",
        mb_elf(paddr=0x200000),
        ABOVE_1M,
        {},
        "no free RAM below 1 MiB for the multiboot information",
    ),
]


@pytest.mark.parametrize(
    ("data", "layout", "options", "fragment"), [pytest.param(*r[1:], id=r[0]) for r in MALFORMED]
)
def test_malformed_multiboot_is_rejected_with_a_one_line_message(
    data: bytes, layout: MemoryLayout, options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ImageError) as err:
        load_multiboot(data, layout, **options)  # type: ignore[arg-type]
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def emulator_flat() -> bytes:
    path = real_image("emulator.flat")
    if path is None:
        pytest.skip(
            "build/cache/emulator.flat not present: build kvm-unit-tests' x86/emulator.flat "
            "(./configure --arch=x86_64 && make x86/emulator.flat) and copy it there"
        )
    return path.read_bytes()


def test_kvm_unit_tests_emulator_flat(emulator_flat: bytes) -> None:
    """A real multiboot v1 kernel: an ELF32 whose text starts with a flags-0 header (cstart64.S)."""
    data = emulator_flat
    assert detect(data) == "multiboot"
    hdr = find_multiboot_header(data)
    assert hdr is not None and hdr.flags == 0
    # The header is the first thing in the text segment, so it is found at that segment's file offset.
    e_phoff, e_phnum = struct.unpack_from("<I", data, 28)[0], struct.unpack_from("<H", data, 44)[0]
    phdrs = [struct.unpack_from("<8I", data, e_phoff + 32 * n) for n in range(e_phnum)]
    loads = [p for p in phdrs if p[0] == 1 and p[5]]
    assert hdr.offset == loads[0][1]
    plan = load_multiboot(data, LAYOUT, cmdline="-- x", modules=[(b"ENV=1\n", "env")])
    assert plan.entry == struct.unpack_from("<I", data, 24)[0]
    kernel = [c for c in plan.chunks if c.what.startswith("ELF")]
    assert [(c.gpa, bytes(c.data), c.zero) for c in kernel] == [
        (p[3], data[p[1] : p[1] + p[4]], p[5] - p[4]) for p in loads
    ]
    ram = _placed(plan)
    info = plan.reg("rbx")
    # What kvm-unit-tests' setup_multiboot and start64 read: mem_upper, cmdline, one module.
    assert ram.u32(info + 8) * 1024 == 32 * MIB - MIB
    assert ram.cstr(ram.u32(info + 16)) == b"-- x"
    assert ram.u32(info + 20) == 1
    start, end = struct.unpack_from("<II", ram.mem, ram.u32(info + 24))
    assert ram.read(start, end - start) == b"ENV=1\n" and start >= max(c.end for c in kernel)
