"""Linux bzImages: setup header parsing, placement, boot_params read back field by field with the offsets
of boot.rst and bootparam.h, one row per malformed-image check, and a Debian kernel when cached."""

from __future__ import annotations

import struct

import pytest

from images.synth import LAYOUT, MACHINE_IN_USE, MIB, PAYLOAD, SETUP, Ram, bzimage, real_image
from vmmio.images import (
    CPU_STATES,
    ImageError,
    LoadPlan,
    MemoryLayout,
    apply,
    detect,
    load_linux,
    parse_setup_header,
)

GIB = 1 << 30
LAYOUT_64M = MemoryLayout.simple(64 * MIB, reserved=((0xD000_0000, 0x20000),), in_use=MACHINE_IN_USE)

# boot_params offsets outside the setup header (arch/x86/include/uapi/asm/bootparam.h).
EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE, EXT_CMD_LINE_PTR = 0x0C0, 0x0C4, 0x0C8
E820_ENTRIES, SENTINEL, E820_TABLE = 0x1E8, 0x1EF, 0x2D0


def field(blob: bytes, name: str) -> int | bytes:
    off, fmt = SETUP[name]
    value: int | bytes = struct.unpack_from("<" + fmt, blob, off)[0]
    return value


def boot_params(plan: LoadPlan) -> bytes:
    chunk = next(c for c in plan.chunks if c.gpa == plan.reg("rsi"))
    return bytes(chunk.data[:4096])


def test_every_setup_header_field_is_read_from_its_offset() -> None:
    data = bzimage(vid_mode=0x1234, payload_offset=0x1111, init_size=0x30000, min_alignment=13)
    hdr = parse_setup_header(data)
    for name in SETUP:
        value = field(data, name)
        assert getattr(hdr, name) == (
            int.from_bytes(value, "little") if isinstance(value, bytes) else value
        ), name
    assert (hdr.version_str, hdr.header_end, hdr.setup_size) == ("2.15", 0x26C, 5 * 512)


def test_setup_sects_zero_means_four() -> None:
    data = bzimage(setup_sects=0)
    assert parse_setup_header(data).setup_size == 5 * 512
    plan = load_linux(data, LAYOUT)
    assert bytes(plan.chunks[1].data) == PAYLOAD


def test_plan_places_the_kernel_at_pref_address_and_enters_64_bit_code_at_0x200() -> None:
    data = bzimage()
    plan = load_linux(data, LAYOUT, cmdline="console=ttyS0")
    kernel = next(c for c in plan.chunks if c.what.startswith("Linux kernel"))
    assert (kernel.gpa, bytes(kernel.data), kernel.size) == (0x1000000, PAYLOAD, 0x20000)
    assert kernel.data.obj is data, "the kernel is a view of the file"
    assert (plan.format, plan.cpu, plan.entry) == ("linux", "linux64", 0x1000200)
    bp = plan.reg("rsi")
    assert bp % 0x1000 == 0 and bp >= 0x7000, "page-aligned, clear of page 0 and the VMM's page tables"
    assert plan.identity_map >= 0x1020000
    state = CPU_STATES["linux64"]
    assert (state.bits, state.paging, state.cs, state.ds) == (64, True, 0x10, 0x18)
    cs, ds = state.gdt[0x10 >> 3], state.gdt[0x18 >> 3]
    assert (cs >> 40) & 0xFF == 0x9A and (cs >> 53) & 1, "__BOOT_CS: present execute/read, 64-bit (L=1)"
    assert (ds >> 40) & 0xFF == 0x92 and ds & 0xFFFF == 0xFFFF and (ds >> 55) & 1, (
        "__BOOT_DS: flat read/write"
    )


def test_boot_params_round_trip() -> None:
    data = bzimage(loadflags=0x01 | 0x20 | 0x40 | 0x80, vid_mode=0x0F04)
    initrd = bytes(range(256)) * 64
    plan = load_linux(data, LAYOUT_64M, cmdline="root=/dev/vda quiet", initrd=initrd, vid_mode=0xFFFD)
    ram = Ram(64 * MIB)
    apply(plan, ram.write)
    bp = ram.read(plan.reg("rsi"), 4096)
    changed = {
        "type_of_loader": 0xFF,
        "loadflags": 0x01,  # LOADED_HIGH kept; QUIET, KEEP_SEGMENTS, CAN_USE_HEAP cleared: no setup code runs
        "vid_mode": 0xFFFD,
        "code32_start": 0x1000000,
        "heap_end_ptr": 0,
    }
    for name in SETUP:
        want = changed.get(name, field(data, name))
        if name not in ("ramdisk_image", "ramdisk_size", "cmd_line_ptr"):
            assert field(bp, name) == want, name
    assert bp[SENTINEL] == 0
    cmdline = field(bp, "cmd_line_ptr")
    assert isinstance(cmdline, int) and ram.cstr(cmdline) == b"root=/dev/vda quiet"
    image, size = field(bp, "ramdisk_image"), field(bp, "ramdisk_size")
    assert isinstance(image, int) and (size, ram.read(image, len(initrd))) == (len(initrd), initrd)
    assert struct.unpack_from("<III", bp, EXT_RAMDISK_IMAGE) == (0, 0, 0)
    # The initrd goes as high as RAM allows, page-aligned, and shows in the plan at the same place.
    assert image % 0x1000 == 0 and image + len(initrd) <= 64 * MIB and image + len(initrd) > 64 * MIB - 0x1000
    assert dict(plan.boot_info)["initrd"] == image
    entries = [struct.unpack_from("<QQI", bp, E820_TABLE + 20 * n) for n in range(bp[E820_ENTRIES])]
    assert entries == [(0, 64 * MIB, 1), (0xD000_0000, 0x20000, 2)]
    assert bp[E820_TABLE + 20 * len(entries) : E820_TABLE + 20 * 128] == bytes(20 * (128 - len(entries)))


def test_e820_carves_reserved_ranges_out_of_ram() -> None:
    layout = MemoryLayout(
        ((0, 16 * MIB), (4 * GIB, GIB)), reserved=((0x9F000, 0x61000), (0xFEC0_0000, 0x1000))
    )
    bp = boot_params(load_linux(bzimage(pref_address=2 * MIB), layout))
    entries = [struct.unpack_from("<QQI", bp, E820_TABLE + 20 * n) for n in range(bp[E820_ENTRIES])]
    assert entries == [
        (0, 0x9F000, 1),
        (0x9F000, 0x61000, 2),
        (0x100000, 15 * MIB, 1),
        (0xFEC0_0000, 0x1000, 2),
        (4 * GIB, GIB, 1),
    ]


def test_initrd_above_4gib_fills_the_ext_fields_when_the_kernel_allows_it() -> None:
    layout = MemoryLayout(((0, 64 * MIB), (4 * GIB, GIB)))
    initrd = b"\x5a" * 0x1800
    bp = boot_params(load_linux(bzimage(xloadflags=0x3), layout, initrd=initrd))
    addr = field(bp, "ramdisk_image")
    assert isinstance(addr, int)
    high = struct.unpack_from("<I", bp, EXT_RAMDISK_IMAGE)[0]
    assert ((high << 32) | addr) == 5 * GIB - 0x2000
    assert (field(bp, "ramdisk_size"), struct.unpack_from("<I", bp, EXT_RAMDISK_SIZE)[0]) == (0x1800, 0)
    # Without XLF_CAN_BE_LOADED_ABOVE_4G, initrd_addr_max bounds it.
    bp = boot_params(load_linux(bzimage(xloadflags=0x1, initrd_addr_max=0x37FFFFF), layout, initrd=initrd))
    assert (field(bp, "ramdisk_image"), struct.unpack_from("<I", bp, EXT_RAMDISK_IMAGE)[0]) == (0x37FE000, 0)


def test_initrd_stays_clear_of_the_kernel_init_size_range() -> None:
    # 18 MiB of RAM: the kernel owns [16 MiB, 16 MiB + 1 MiB); the initrd must go below it or above.
    data = bzimage(init_size=MIB)
    plan = load_linux(data, MemoryLayout.simple(18 * MIB), initrd=bytes(MIB + 1))
    initrd = dict(plan.boot_info)["initrd"]
    assert initrd + MIB + 1 <= 16 * MIB


def test_relocatable_kernel_moves_when_pref_address_is_taken_and_a_fixed_one_does_not() -> None:
    taken = MemoryLayout.simple(64 * MIB, in_use=((16 * MIB, 0x1000),))
    plan = load_linux(bzimage(), taken)
    # Never below pref_address: the decompressor would move itself back up there (head_64.S).
    assert plan.entry == 18 * MIB + 0x200, "lowest kernel_alignment-aligned free address above pref_address"
    with pytest.raises(ImageError, match="relocatable_kernel 0: only pref_address will do"):
        load_linux(bzimage(relocatable_kernel=0), taken)
    small = load_linux(bzimage(pref_address=0), MemoryLayout.simple(8 * MIB))
    assert small.entry == 2 * MIB + 0x200
    with pytest.raises(ImageError, match="no free RAM below 4 GiB for the kernel at or above pref_address"):
        load_linux(bzimage(), MemoryLayout(((0, 16 * MIB), (4 * GIB, GIB))))  # room only above 4 GiB


def test_a_signature_after_syssize_is_not_loaded() -> None:
    data = bzimage(tail=b"SIGNATURE" * 100)
    kernel = load_linux(data, LAYOUT).chunks[1]
    assert bytes(kernel.data) == PAYLOAD


BAD_HEADER: list[tuple[str, bytes, str]] = [
    (
        "truncated",
        bzimage()[:0x260],
        "Linux setup header truncated: file is 0x260 bytes, the header ends at 0x26c",
    ),
    ("boot_flag", bzimage(boot_flag=0x55AA), "Linux setup header boot_flag 0x55aa is not 0xAA55"),
    ("header magic", bzimage(header=b"HdrZ"), "Linux setup header header 0x5a726448 is not 'HdrS'"),
    ("protocol 2.11", bzimage(version=0x020B), "Linux setup header version 2.11 < 2.12"),
    ("jump not short", bzimage(jump=0x6AE9), "Linux setup header jump 0x6ae9 is not a short JMP (0xEB)"),
    ("header too short", bzimage(jump=0x50EB), "header end 0x252 (0x202 + displacement) is not within"),
    ("header too long", bzimage(jump=0x90EB), "header end 0x292"),
    ("zImage", bzimage(loadflags=0), "Linux setup header loadflags 0x00 lacks LOADED_HIGH (bit 0)"),
    ("no 64-bit entry", bzimage(xloadflags=0x2), "Linux setup header xloadflags 0x0002 lacks XLF_KERNEL_64"),
    (
        "alignment not a power of 2",
        bzimage(kernel_alignment=0x300000),
        "kernel_alignment 0x300000 is not a power",
    ),
    ("alignment 0", bzimage(kernel_alignment=0), "kernel_alignment 0x0 is not a power of two"),
    ("syssize 0", bzimage(syssize=0), "Linux setup header syssize 0: no protected-mode kernel"),
    ("cmdline_size 0", bzimage(cmdline_size=0), "Linux setup header cmdline_size 0"),
    ("init_size 0", bzimage(init_size=0), "Linux setup header init_size 0"),
    ("setup past the file", bzimage()[:0x800], "setup_sects 4: the setup code (0xa00 bytes) reaches the end"),
    (
        "setup_sects huge",
        bzimage(setup_sects=255)[:0x1000],
        "setup_sects 255: the setup code (0x20000 bytes)",
    ),
    (
        "syssize past the file",
        bzimage(syssize=0x400),
        "syssize 0x400: 0x4000 bytes of kernel, the file has 0x3000",
    ),
    ("init_size < kernel", bzimage(init_size=0x2000), "init_size 0x2000 < the kernel's 0x3000 bytes"),
]


@pytest.mark.parametrize(("data", "fragment"), [pytest.param(*r[1:], id=r[0]) for r in BAD_HEADER])
def test_malformed_bzimage_is_rejected_with_a_one_line_message(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageError) as err:
        load_linux(data, LAYOUT)
    assert fragment in str(err.value) and "\n" not in str(err.value)


NO_LOW_RAM = MemoryLayout(((16 * MIB, 0x20000), (4 * GIB, GIB)))
SPLIT_RAM = MemoryLayout(
    tuple((n * 2 * MIB, MIB) for n in range(64)),
    reserved=tuple((n * 2 * MIB + MIB // 2, 0x1000) for n in range(64)),
)
BAD_LOAD: list[tuple[str, MemoryLayout, dict[str, object], str]] = [
    (
        "cmdline too long",
        LAYOUT,
        {"cmdline": "x" * 0x800},
        "command line is 2048 bytes, longer than cmdline_size 2047",
    ),
    ("NUL in cmdline", LAYOUT, {"cmdline": "a\0b"}, "Linux command line contains a NUL byte"),
    ("vid_mode", LAYOUT, {"vid_mode": 0x10000}, "vid_mode 0x10000 does not fit 16 bits"),
    (
        "initrd too large",
        LAYOUT,
        {"initrd": bytes(16 * MIB)},
        "initrd (0x1000000 bytes) does not fit in free RAM below",
    ),
    (
        "kernel needs more RAM",
        MemoryLayout.simple(2 * MIB),
        {},
        "init_size 0x20000: no free RAM below 4 GiB for the kernel",
    ),
    ("no low RAM for boot_params", NO_LOW_RAM, {}, "no free RAM below 4 GiB for boot_params"),
    (
        "e820 table overflow",
        SPLIT_RAM,
        {},
        "memory map has 192 entries, more than 128",
    ),
]


@pytest.mark.parametrize(("layout", "options", "fragment"), [pytest.param(*r[1:], id=r[0]) for r in BAD_LOAD])
def test_impossible_placements_and_options_are_rejected(
    layout: MemoryLayout, options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ImageError) as err:
        load_linux(bzimage(), layout, **options)  # type: ignore[arg-type]
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def debian_kernel() -> bytes:
    path = real_image("vmlinuz-*")
    if path is None:
        pytest.skip(
            "no build/cache/vmlinuz-*: apt-get download linux-image-<version>-cloud-amd64, "
            "dpkg-deb -x it and copy boot/vmlinuz-* to build/cache/"
        )
    return path.read_bytes()


# Magic numbers of the compressions a kernel payload may use (arch/x86/boot/compressed).
COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\x5d\x00\x00": "lzma", b"\xfd7zXZ\x00": "xz",
    b"\x89LZO": "lzo", b"\x02\x21\x4c\x18": "lz4", b"\x28\xb5\x2f\xfd": "zstd",
}  # fmt: skip


def test_debian_kernel(debian_kernel: bytes) -> None:
    """A real bzImage: its header parses, the payload lands where the kernel looks for it, boot_params
    carries the header the kernel expects and the e820 map of the layout."""
    data = debian_kernel
    assert detect(data) == "linux"
    hdr = parse_setup_header(data)
    assert hdr.version >= 0x20C and hdr.xloadflags & 1 and hdr.relocatable_kernel
    layout = MemoryLayout.simple(512 * MIB, reserved=((0xD000_0000, 0x20000),), in_use=MACHINE_IN_USE)
    plan = load_linux(data, layout, cmdline="console=ttyS0 earlyprintk=serial", initrd=b"\x07" * 0x10000)
    kernel = next(c for c in plan.chunks if c.what.startswith("Linux kernel"))
    assert kernel.gpa % hdr.kernel_alignment == 0 and kernel.gpa >= MIB
    assert kernel.size == hdr.init_size and plan.entry == kernel.gpa + 0x200
    setup_size = (data[0x1F1] + 1) * 512
    assert bytes(kernel.data) == data[setup_size : setup_size + hdr.syssize * 16]
    # payload_offset (from the protected-mode code) points at the compressed vmlinux: a known magic.
    compressed = bytes(kernel.data[hdr.payload_offset : hdr.payload_offset + 6])
    assert any(compressed.startswith(m) for m in COMPRESSION_MAGIC), compressed.hex()
    assert hdr.payload_offset + hdr.payload_length <= len(kernel.data)
    bp = boot_params(plan)
    header_end = 0x202 + data[0x201]
    kept = [n for n in SETUP if SETUP[n][0] < header_end]
    changed = {"type_of_loader", "loadflags", "code32_start", "ramdisk_image", "ramdisk_size", "cmd_line_ptr"}
    changed |= {"vid_mode", "heap_end_ptr"}
    assert all(field(bp, n) == field(data, n) for n in kept if n not in changed)
    assert bp[E820_ENTRIES] == 2
    assert plan.identity_map >= kernel.end
