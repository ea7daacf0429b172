"""Synthetic guest images for the loader tests, built from the specs' field layouts written out here.

The offsets below are typed in from the specifications (ELF gABI, Multiboot 0.6.96, boot.rst), not
taken from vmmio.images, so a wrong offset in the package cannot make its own tests agree with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from vmmio.images import MemoryLayout

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "cache"

MB_MAGIC = 0x1BADB002
MIB = 1 << 20

# vmmio's machine contract: 32 MiB of RAM, GDT at 0x800, page tables at 0x1000..0x7000.
MACHINE_IN_USE = ((0x800, 0x20), (0x1000, 0x6000))
LAYOUT = MemoryLayout.simple(32 * MIB, in_use=MACHINE_IN_USE)


@dataclass
class Seg:
    """One program header; fields left None take the natural value for `data` at its place in the file."""

    paddr: int
    data: bytes = b""
    memsz: int | None = None
    vaddr: int | None = None
    p_type: int = 1
    flags: int = 5
    offset: int | None = None
    filesz: int | None = None


@dataclass
class Elf:
    """An x86 ELF executable; header fields can be overridden to make it malformed."""

    bits: int
    segs: list[Seg]
    entry: int
    header: dict[str, int] = field(default_factory=dict)
    ident: dict[int, int] = field(default_factory=dict)

    def build(self) -> bytes:
        is64 = self.bits == 64
        ehsize, phentsize = (64, 56) if is64 else (52, 32)
        phoff = ehsize
        data_at = (phoff + phentsize * len(self.segs) + 15) & ~15
        body = bytearray()
        phdrs = bytearray()
        for s in self.segs:
            off = data_at + len(body) if s.offset is None else s.offset
            body += s.data
            filesz = len(s.data) if s.filesz is None else s.filesz
            memsz = filesz if s.memsz is None else s.memsz
            vaddr = s.paddr if s.vaddr is None else s.vaddr
            if is64:
                fields = (s.p_type, s.flags, off, vaddr, s.paddr, filesz, memsz, 0x1000)
                phdrs += struct.pack("<IIQQQQQQ", *fields)
            else:
                phdrs += struct.pack("<8I", s.p_type, off, vaddr, s.paddr, filesz, memsz, s.flags, 0x1000)
        h = {
            "e_type": 2,
            "e_machine": 62 if is64 else 3,
            "e_version": 1,
            "e_entry": self.entry,
            "e_phoff": phoff,
            "e_shoff": 0,
            "e_flags": 0,
            "e_ehsize": ehsize,
            "e_phentsize": phentsize,
            "e_phnum": len(self.segs),
            "e_shentsize": 0,
            "e_shnum": 0,
            "e_shstrndx": 0,
        } | self.header
        ident = bytearray(b"\x7fELF" + bytes([2 if is64 else 1, 1, 1]) + bytes(9))
        for k, v in self.ident.items():
            ident[k] = v
        fmt = "<16sHHIQQQIHHHHHH" if is64 else "<16sHHIIIIIHHHHHH"
        ehdr = struct.pack(fmt, bytes(ident), *h.values())
        out = bytearray(ehdr + phdrs)
        out += bytes(data_at - len(out))
        return bytes(out + body)


CODE = bytes(range(256)) * 16  # 4 KiB of recognisable bytes


def elf64(**kw: int) -> bytes:
    """Two segments (text, data + .bss) at 2 MiB, entry 0x10 into the text."""
    return Elf(64, [Seg(0x200000, CODE), Seg(0x202000, CODE[:0x800], memsz=0x3000)], 0x200010, kw).build()


def elf32(**kw: int) -> bytes:
    return Elf(32, [Seg(0x200000, CODE), Seg(0x202000, CODE[:0x800], memsz=0x3000)], 0x200010, kw).build()


def mb_header(flags: int, *addresses: int, checksum: int | None = None) -> bytes:
    """magic, flags, checksum (magic + flags + checksum = 0 mod 2**32), then the address fields given."""
    cs = (-(MB_MAGIC + flags)) & 0xFFFF_FFFF if checksum is None else checksum
    return struct.pack("<III", MB_MAGIC, flags, cs) + struct.pack(f"<{len(addresses)}I", *addresses)


def mb_aout(
    *,
    flags: int = 0x10003,
    load_addr: int = 0x100000,
    pad: int = 0x40,
    code: bytes = CODE,
    bss: int = 0x2000,
    entry_off: int = 0x60,
    **fields: int,
) -> bytes:
    """An a.out-kludge kernel: `pad` bytes, the 32-byte header, `code`; loaded from file offset 0."""
    size = pad + 32 + len(code)
    addr = {
        "header_addr": load_addr + pad,
        "load_addr": load_addr,
        "load_end_addr": load_addr + size,
        "bss_end_addr": load_addr + size + bss,
        "entry_addr": load_addr + entry_off,
    } | fields
    return bytes(pad) + mb_header(flags, *addr.values()) + code


def mb_elf(flags: int = 0x3, bits: int = 32, paddr: int = 0x100000) -> bytes:
    """An ELF kernel whose text starts with a multiboot header (as kvm-unit-tests' images do)."""
    text = mb_header(flags) + CODE
    segs = [Seg(paddr, text), Seg(paddr + 0x2000, CODE[:0x100], memsz=0x5000)]
    return Elf(bits, segs, paddr + 12).build()


# boot.rst setup header rows used by the tests: name -> (offset, struct format).
SETUP = {
    "setup_sects": (0x1F1, "B"), "syssize": (0x1F4, "I"), "vid_mode": (0x1FA, "H"), "boot_flag": (0x1FE, "H"),
    "jump": (0x200, "H"), "header": (0x202, "4s"), "version": (0x206, "H"), "type_of_loader": (0x210, "B"),
    "loadflags": (0x211, "B"), "code32_start": (0x214, "I"), "ramdisk_image": (0x218, "I"),
    "ramdisk_size": (0x21C, "I"), "heap_end_ptr": (0x224, "H"), "cmd_line_ptr": (0x228, "I"),
    "initrd_addr_max": (0x22C, "I"), "kernel_alignment": (0x230, "I"), "relocatable_kernel": (0x234, "B"),
    "min_alignment": (0x235, "B"), "xloadflags": (0x236, "H"), "cmdline_size": (0x238, "I"),
    "payload_offset": (0x248, "I"), "payload_length": (0x24C, "I"), "pref_address": (0x258, "Q"),
    "init_size": (0x260, "I"),
}  # fmt: skip

PAYLOAD = bytes((i * 7) & 0xFF for i in range(0x3000))


def bzimage(
    *, setup_sects: int = 4, payload: bytes = PAYLOAD, tail: bytes = b"", **fields: int | bytes
) -> bytes:
    """A bzImage: boot sector + setup sectors with the header, then the protected-mode `payload`."""
    values: dict[str, int | bytes] = {
        "setup_sects": setup_sects,
        "boot_flag": 0xAA55,
        "jump": 0xEB | (0x6A << 8),  # header ends at 0x202 + 0x6A = 0x26C, as in 2.15 kernels
        "header": b"HdrS",
        "version": 0x020F,
        "loadflags": 0x01,
        "code32_start": 0x100000,
        "initrd_addr_max": 0x7FFFFFFF,
        "kernel_alignment": 0x200000,
        "relocatable_kernel": 1,
        "min_alignment": 21,
        "xloadflags": 0x03,
        "cmdline_size": 0x7FF,
        "syssize": (len(payload) + 15) // 16,
        "pref_address": 0x1000000,
        "init_size": 0x20000,
        "payload_offset": 0x100,
        "payload_length": 0x200,
    }
    values.update(fields)
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    for name, value in values.items():
        off, fmt = SETUP[name]
        struct.pack_into("<" + fmt, setup, off, value)
    return bytes(setup) + payload + tail


def real_image(pattern: str) -> Path | None:
    """The first file in build/cache/ matching `pattern`, if the cache has one."""
    found = sorted(CACHE.glob(pattern)) if CACHE.is_dir() else []
    return found[0] if found else None


class Ram:
    """A flat guest RAM to apply plans into, read back by address."""

    def __init__(self, size: int) -> None:
        self.mem = bytearray(size)

    def write(self, gpa: int, data: bytes) -> None:
        assert gpa + len(data) <= len(self.mem)
        self.mem[gpa : gpa + len(data)] = data

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.mem[gpa : gpa + size])

    def u32(self, gpa: int) -> int:
        return int(struct.unpack_from("<I", self.mem, gpa)[0])

    def cstr(self, gpa: int) -> bytes:
        return bytes(self.mem[gpa : self.mem.index(0, gpa)])
