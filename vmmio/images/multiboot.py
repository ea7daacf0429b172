"""Multiboot v1 kernels: the header search, loading (ELF or the a.out-kludge addresses) and the
multiboot information structure, all as a LoadPlan.

Facts from the Multiboot Specification 0.6.96. The header is three little-endian u32 (magic
0x1BADB002, flags, checksum with magic + flags + checksum = 0 mod 2**32), 4-byte aligned, wholly in
the first 8192 bytes of the file. Flag bits 0-15 are requirements a boot loader must refuse when it
cannot meet them; this one meets bit 0 (modules page-aligned: they always are) and bit 1 (memory
information: always given), and refuses bit 2 (video mode) and the undefined ones. Bit 16 says the
header carries load addresses; otherwise the image must be ELF.

The information structure, its memory map, module list and strings are built as one chunk, by default
at the lowest free page from 0x1000 below 1 MiB (page 0 is left alone: on a PC it holds the real-mode
IVT and BIOS data). Modules go page-aligned after the kernel. It always sets info flags 0 (mem_lower,
mem_upper), 2 (command line, "" by default: kvm-unit-tests reads it without checking the flag), 3
(modules, possibly none), 6 (memory map from the layout: usable RAM type 1, reserved ranges type 2)
and 9 (boot loader name "vmmio"); no boot device, symbols, drives, APM, VBE or framebuffer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vmmio.images.elf import elf_chunks, is_elf, parse_elf
from vmmio.images.errors import ImageError, span
from vmmio.images.layout import LIMIT_4G, PAGE, MemoryLayout, align_up, find_free
from vmmio.images.plan import Chunk, LoadPlan, check_chunks

MULTIBOOT_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002  # in EAX at entry
SEARCH_LIMIT = 8192
HEADER_ALIGN = 4

# Header flags.
HF_PAGE_ALIGN = 1 << 0
HF_MEMORY_INFO = 1 << 1
HF_VIDEO_MODE = 1 << 2
HF_AOUT_KLUDGE = 1 << 16
REQUIRED_MASK = 0xFFFF
SUPPORTED_REQUIRED = HF_PAGE_ALIGN | HF_MEMORY_INFO
_REQUIRED_NAMES = {2: "video mode table"}

_HEADER = struct.Struct("<III")  # magic, flags, checksum
_ADDRESSES = struct.Struct("<5I")  # header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (flag 16)
_MAGIC_BYTES = MULTIBOOT_MAGIC.to_bytes(4, "little")

# Information structure: u32 fields at these offsets, and the flags saying which are valid.
INFO_SIZE = 116  # through the framebuffer fields, as GRUB allocates it
INFO_FIELDS = {
    "flags": 0, "mem_lower": 4, "mem_upper": 8, "boot_device": 12, "cmdline": 16, "mods_count": 20,
    "mods_addr": 24, "mmap_length": 44, "mmap_addr": 48, "boot_loader_name": 64,
}  # fmt: skip
MBI_MEMORY = 1 << 0  # mem_lower, mem_upper
MBI_CMDLINE = 1 << 2
MBI_MODS = 1 << 3
MBI_MMAP = 1 << 6
MBI_LOADER_NAME = 1 << 9
MMAP_ENTRY = struct.Struct("<IQQI")  # size (20: the bytes after it), base_addr, length, type
MODULE_ENTRY = struct.Struct("<IIII")  # mod_start, mod_end (exclusive), string, reserved
LOADER_NAME = b"vmmio"
LOWER_MEMORY_MAX = 640 << 10  # mem_lower reports at most 640 KiB
MIB = 1 << 20
INFO_LOW = 0x1000
MAX_MODULES = 64


@dataclass(frozen=True)
class MultibootHeader:
    """A header with a valid checksum; the address fields are set only when flags bit 16 is."""

    offset: int
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0

    @property
    def has_addresses(self) -> bool:
        return bool(self.flags & HF_AOUT_KLUDGE)


def find_multiboot_header(data: bytes) -> MultibootHeader | None:
    """The first 4-aligned magic in the first 8192 bytes whose checksum holds, or None.

    Only the three mandatory fields are read here, so detection never fails; load_multiboot checks
    the rest. The scan is bounded by SEARCH_LIMIT whatever the file size.
    """
    end = min(len(data), SEARCH_LIMIT)
    pos = data.find(_MAGIC_BYTES, 0, end)
    while pos >= 0:
        if pos % HEADER_ALIGN == 0 and pos + _HEADER.size <= end:
            magic, flags, checksum = _HEADER.unpack_from(data, pos)
            if (magic + flags + checksum) & 0xFFFF_FFFF == 0:
                return MultibootHeader(pos, flags)
        pos = data.find(_MAGIC_BYTES, pos + 1, end)
    return None


def parse_multiboot_header(data: bytes) -> MultibootHeader:
    """The header with its flags checked and, for flag 16, its address fields read."""
    hdr = find_multiboot_header(data)
    if hdr is None:
        raise ImageError(
            f"no multiboot header (magic {MULTIBOOT_MAGIC:#x}, 4-aligned, valid checksum) "
            "in the first 8192 bytes"
        )
    unsupported = hdr.flags & REQUIRED_MASK & ~SUPPORTED_REQUIRED
    if unsupported:
        bit = (unsupported & -unsupported).bit_length() - 1
        what = _REQUIRED_NAMES.get(bit, "undefined")
        raise ImageError(
            f"multiboot header flags {hdr.flags:#x}: required bit {bit} ({what}) is not supported"
        )
    if not hdr.has_addresses:
        return hdr
    at = hdr.offset + _HEADER.size
    if at + _ADDRESSES.size > min(len(data), SEARCH_LIMIT):
        raise ImageError(
            f"multiboot header at {hdr.offset:#x}: flags bit 16 address fields truncated (file or 8 KiB)"
        )
    return MultibootHeader(hdr.offset, hdr.flags, *_ADDRESSES.unpack_from(data, at))


def _kludge_chunk(data: bytes, hdr: MultibootHeader) -> tuple[Chunk, int]:
    """The a.out-kludge image: file bytes from where load_addr falls, to load_end_addr, then .bss."""
    what = f"multiboot header at {hdr.offset:#x}"
    if hdr.load_addr > hdr.header_addr:
        raise ImageError(f"{what}: load_addr {hdr.load_addr:#x} > header_addr {hdr.header_addr:#x}")
    start = hdr.offset - (hdr.header_addr - hdr.load_addr)
    if start < 0:
        raise ImageError(
            f"{what}: header_addr - load_addr = {hdr.header_addr - hdr.load_addr:#x} "
            "is more than the header's file offset"
        )
    if hdr.load_end_addr == 0:
        size = len(data) - start
    elif hdr.load_end_addr < hdr.load_addr:
        raise ImageError(f"{what}: load_end_addr {hdr.load_end_addr:#x} < load_addr {hdr.load_addr:#x}")
    else:
        size = hdr.load_end_addr - hdr.load_addr
        if start + size > len(data):
            raise ImageError(
                f"{what}: load_end_addr {hdr.load_end_addr:#x} needs file bytes up to {start + size:#x}, "
                f"past the end of the file ({len(data):#x})"
            )
    end = hdr.load_addr + size
    if hdr.bss_end_addr and hdr.bss_end_addr < end:
        raise ImageError(f"{what}: bss_end_addr {hdr.bss_end_addr:#x} < load end {end:#x}")
    bss = hdr.bss_end_addr - end if hdr.bss_end_addr else 0
    if not hdr.load_addr <= hdr.entry_addr < end + bss:
        raise ImageError(
            f"{what}: entry_addr {hdr.entry_addr:#x} is outside the image {span(hdr.load_addr, end + bss)}"
        )
    return Chunk(
        hdr.load_addr, memoryview(data)[start : start + size], bss, "multiboot image"
    ), hdr.entry_addr


def _c_string(what: str, value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if b"\0" in raw:
        raise ImageError(f"{what} contains a NUL byte")
    return raw + b"\0"


def memory_info(layout: MemoryLayout) -> tuple[int, int]:
    """(mem_lower, mem_upper) in KiB: usable RAM from 0 (at most 640 KiB) and from 1 MiB to the first hole."""
    lower = min(layout.contiguous_from(0), LOWER_MEMORY_MAX) // 1024
    upper = (layout.contiguous_from(MIB) - MIB) // 1024
    return lower, min(upper, 0xFFFF_FFFF)


def build_info(
    base: int, layout: MemoryLayout, cmdline: bytes, modules: Sequence[tuple[int, int, bytes]]
) -> bytes:
    """The information structure for address `base`, followed by its memory map, module list and strings.

    cmdline and each module string are NUL-terminated; modules are (mod_start, mod_end, string).
    """
    mmap = layout.memory_map()
    mmap_at = align_up(INFO_SIZE, 8)
    mods_at = mmap_at + MMAP_ENTRY.size * len(mmap)
    strings_at = mods_at + MODULE_ENTRY.size * len(modules)
    strings = bytearray()

    def string(raw: bytes) -> int:
        strings.extend(raw)
        return base + strings_at + len(strings) - len(raw)

    blob = bytearray(strings_at)
    lower, upper = memory_info(layout)
    values = {
        "flags": MBI_MEMORY | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME,
        "mem_lower": lower,
        "mem_upper": upper,
        "cmdline": string(cmdline),
        "mods_count": len(modules),
        "mods_addr": base + mods_at,
        "mmap_length": MMAP_ENTRY.size * len(mmap),
        "mmap_addr": base + mmap_at,
        "boot_loader_name": string(LOADER_NAME + b"\0"),
    }
    for name, value in values.items():
        struct.pack_into("<I", blob, INFO_FIELDS[name], value)
    for n, (addr, size, kind) in enumerate(mmap):
        MMAP_ENTRY.pack_into(blob, mmap_at + n * MMAP_ENTRY.size, MMAP_ENTRY.size - 4, addr, size, kind)
    for n, (start, end, name_str) in enumerate(modules):
        MODULE_ENTRY.pack_into(blob, mods_at + n * MODULE_ENTRY.size, start, end, string(name_str), 0)
    return bytes(blob + strings)


def info_size(layout: MemoryLayout, cmdline: bytes, module_strings: Sequence[bytes]) -> int:
    """Bytes build_info produces for these inputs (its layout does not depend on the address)."""
    fixed = align_up(INFO_SIZE, 8) + MMAP_ENTRY.size * len(layout.memory_map())
    strings = len(cmdline) + len(LOADER_NAME) + 1 + sum(len(s) for s in module_strings)
    return fixed + MODULE_ENTRY.size * len(module_strings) + strings


def load_multiboot(
    data: bytes,
    layout: MemoryLayout,
    *,
    cmdline: str | bytes = "",
    modules: Sequence[tuple[bytes, str | bytes]] = (),
    info_addr: int | None = None,
) -> LoadPlan:
    """Plan a multiboot v1 kernel with its modules and information structure ("multiboot32" entry).

    modules are (contents, string) pairs; info_addr overrides where the information structure goes.
    """
    hdr = parse_multiboot_header(data)
    if hdr.has_addresses:
        kernel_chunk, entry = _kludge_chunk(data, hdr)
        kernel = [kernel_chunk]
    elif is_elf(data):
        image = parse_elf(data)
        kernel, entry = elf_chunks(image, data), image.entry_gpa
    else:
        raise ImageError(
            f"multiboot header at {hdr.offset:#x}: flags bit 16 is clear and the image is not ELF"
        )
    kernel = list(check_chunks(kernel, layout, LIMIT_4G))
    if len(modules) > MAX_MODULES:
        raise ImageError(f"{len(modules)} multiboot modules, more than {MAX_MODULES}")
    raw_cmdline = _c_string("multiboot command line", cmdline)
    strings = [_c_string(f"multiboot module {n} string", s) for n, (_, s) in enumerate(modules)]
    taken = [(c.gpa, c.size) for c in kernel]
    kernel_end = max(c.end for c in kernel)
    placed: list[tuple[int, int, bytes]] = []
    chunks = list(kernel)
    for n, (contents, _) in enumerate(modules):
        size = len(contents)
        addr = find_free(layout.free(taken), size, PAGE, lo=kernel_end, hi=LIMIT_4G)
        if addr is None:
            raise ImageError(
                f"multiboot module {n} ({size:#x} bytes) does not fit in free RAM "
                "after the kernel below 4 GiB"
            )
        taken.append((addr, align_up(size, PAGE) or PAGE))
        chunks.append(Chunk(addr, memoryview(bytes(contents)), 0, f"multiboot module {n}"))
        placed.append((addr, addr + size, strings[n]))
    size = info_size(layout, raw_cmdline, strings)
    if info_addr is None:
        info_addr = find_free(layout.free(taken), size, PAGE, lo=INFO_LOW, hi=MIB)
        if info_addr is None:
            raise ImageError(
                f"no free RAM below 1 MiB for the multiboot information ({size:#x} bytes); pass info_addr"
            )
    info = build_info(info_addr, layout, raw_cmdline, placed)
    chunks.append(Chunk(info_addr, memoryview(info), 0, "multiboot information"))
    boot_info = (("multiboot_info", info_addr), *((f"module {n}", m[0]) for n, m in enumerate(placed)))
    return LoadPlan(
        "multiboot",
        "multiboot32",
        entry,
        check_chunks(chunks, layout, LIMIT_4G),
        regs=(("rax", BOOTLOADER_MAGIC), ("rbx", info_addr)),
        boot_info=boot_info,
    )
