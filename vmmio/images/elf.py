"""ELF32/ELF64 executables for x86, loaded by their PT_LOAD segments at their physical addresses.

Only little-endian ET_EXEC images for EM_386 (ELF32) or EM_X86_64 (ELF64) are accepted. ET_DYN is
rejected: a position-independent image needs a load address chosen and relocations applied, and guest
kernels here are linked for fixed addresses. Program headers other than PT_LOAD are ignored.

Every header field is checked before it is used, and the work is bounded by the file: the program
header table must lie inside the file, at most MAX_PHNUM entries are read, and a segment's zero-filled
tail is a count in the plan, never a buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmmio.images.errors import ImageError, span
from vmmio.images.layout import LIMIT_4G, MemoryLayout
from vmmio.images.plan import Chunk, LoadPlan, check_chunks

ELF_MAGIC = b"\x7fELF"
EI_CLASS, EI_DATA, EI_VERSION = 4, 5, 6
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD = 1
PN_XNUM = 0xFFFF  # e_phnum escape: the real count is in section header 0 (not supported)
MAX_PHNUM = 1024  # far above any kernel (a handful); caps the loop whatever the header says

_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}

# Per class: header layout, program-header layout, the machine it must be built for, its address limit.
_EHDR_FIELDS = (
    "e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff",
    "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx",
)  # fmt: skip


@dataclass(frozen=True)
class _Class:
    bits: int
    ehdr: struct.Struct
    phdr: struct.Struct
    phdr_fields: tuple[str, ...]
    machine: int
    machine_name: str
    limit: int


_CLASSES = {
    ELFCLASS32: _Class(
        32, struct.Struct("<16sHHIIIIIHHHHHH"), struct.Struct("<8I"),
        ("p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align"),
        EM_386, "EM_386", LIMIT_4G,
    ),
    ELFCLASS64: _Class(
        64, struct.Struct("<16sHHIQQQIHHHHHH"), struct.Struct("<IIQQQQQQ"),
        ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align"),
        EM_X86_64, "EM_X86_64", 1 << 64,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ElfSegment:
    """One PT_LOAD program header (index is its position in the table)."""

    index: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class ElfImage:
    """The validated parts of an ELF executable that loading needs."""

    bits: int  # 32 or 64
    machine: int
    entry: int  # e_entry, a virtual address
    entry_gpa: int  # e_entry translated through the PT_LOAD segment holding it
    segments: tuple[ElfSegment, ...]  # PT_LOAD with p_memsz > 0, in table order


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def parse_elf(data: bytes) -> ElfImage:
    """Validate an x86 ELF executable's headers; ImageError names the first field that is wrong."""
    if len(data) < 16 or not is_elf(data):
        raise ImageError(f"ELF e_ident truncated or without the \\x7fELF magic (file is {len(data)} bytes)")
    cls = _CLASSES.get(data[EI_CLASS])
    if cls is None:
        raise ImageError(f"ELF e_ident[EI_CLASS] {data[EI_CLASS]} is not 1 (ELF32) or 2 (ELF64)")
    if data[EI_DATA] != ELFDATA2LSB:
        raise ImageError(f"ELF e_ident[EI_DATA] {data[EI_DATA]} is not 1 (little-endian): x86 images are LE")
    if data[EI_VERSION] != EV_CURRENT:
        raise ImageError(f"ELF e_ident[EI_VERSION] {data[EI_VERSION]} is not 1 (EV_CURRENT)")
    if len(data) < cls.ehdr.size:
        raise ImageError(
            f"ELF{cls.bits} header truncated: file is {len(data)} bytes, the header {cls.ehdr.size}"
        )
    h = dict(zip(_EHDR_FIELDS, cls.ehdr.unpack_from(data, 0), strict=True))
    if h["e_type"] != ET_EXEC:
        name = _ET_NAMES.get(h["e_type"], "unknown")
        raise ImageError(
            f"ELF e_type {h['e_type']} ({name}) is not ET_EXEC (2): only fixed-address executables load"
        )
    if h["e_machine"] != cls.machine:
        raise ImageError(
            f"ELF e_machine {h['e_machine']} is not {cls.machine_name} ({cls.machine}) for ELF{cls.bits}"
        )
    if h["e_version"] != EV_CURRENT:
        raise ImageError(f"ELF e_version {h['e_version']} is not 1 (EV_CURRENT)")
    phoff, phentsize, phnum = h["e_phoff"], h["e_phentsize"], h["e_phnum"]
    if phentsize < cls.phdr.size:
        raise ImageError(
            f"ELF e_phentsize {phentsize} < {cls.phdr.size} (the ELF{cls.bits} program header size)"
        )
    if phnum == PN_XNUM:
        raise ImageError(f"ELF e_phnum {PN_XNUM:#x} (PN_XNUM, count in section header 0) is not supported")
    if phnum > MAX_PHNUM:
        raise ImageError(f"ELF e_phnum {phnum} > {MAX_PHNUM} program headers")
    if phoff + phnum * phentsize > len(data):
        raise ImageError(
            f"ELF program header table [{phoff:#x}, {phoff + phnum * phentsize:#x}) "
            f"(e_phoff + e_phnum * e_phentsize) is past the end of the file ({len(data):#x})"
        )
    segments = [_segment(data, cls, n, phoff + n * phentsize) for n in range(phnum)]
    loads = tuple(s for s in segments if s is not None)
    if not loads:
        raise ImageError("ELF has no PT_LOAD segment with p_memsz > 0: nothing to load")
    entry = h["e_entry"]
    holder = next((s for s in loads if s.vaddr <= entry < s.vaddr + s.memsz), None)
    if holder is None:
        raise ImageError(f"ELF e_entry {entry:#x} is not inside any PT_LOAD segment")
    return ElfImage(cls.bits, cls.machine, entry, entry - holder.vaddr + holder.paddr, loads)


def _segment(data: bytes, cls: _Class, n: int, off: int) -> ElfSegment | None:
    """Program header n if it is a PT_LOAD with something to load, checked against the file."""
    p = dict(zip(cls.phdr_fields, cls.phdr.unpack_from(data, off), strict=True))
    if p["p_type"] != PT_LOAD or (p["p_memsz"] == 0 and p["p_filesz"] == 0):
        return None
    what = f"ELF program header {n}"
    if p["p_filesz"] > p["p_memsz"]:
        raise ImageError(f"{what}: p_filesz {p['p_filesz']:#x} > p_memsz {p['p_memsz']:#x}")
    if p["p_offset"] + p["p_filesz"] > len(data):
        raise ImageError(
            f"{what}: file bytes {span(p['p_offset'], p['p_offset'] + p['p_filesz'])} "
            f"(p_offset, p_filesz) are past the end of the file ({len(data):#x})"
        )
    if p["p_paddr"] + p["p_memsz"] > cls.limit:
        where = span(p["p_paddr"], p["p_paddr"] + p["p_memsz"])
        raise ImageError(f"{what}: {where} (p_paddr, p_memsz) wraps ELF{cls.bits} addresses")
    return ElfSegment(n, p["p_offset"], p["p_vaddr"], p["p_paddr"], p["p_filesz"], p["p_memsz"], p["p_flags"])


def elf_chunks(image: ElfImage, data: bytes) -> list[Chunk]:
    """One chunk per PT_LOAD: its file bytes (a view, not a copy) and its zero-filled tail."""
    view = memoryview(data)
    return [
        Chunk(
            s.paddr, view[s.offset : s.offset + s.filesz], s.memsz - s.filesz, f"ELF program header {s.index}"
        )
        for s in image.segments
    ]


def load_elf(data: bytes, layout: MemoryLayout) -> LoadPlan:
    """Plan an ELF executable: ELF64 starts in "long64", ELF32 in "flat32", at e_entry's physical address."""
    image = parse_elf(data)
    limit = LIMIT_4G if image.bits == 32 else 1 << 64
    chunks = check_chunks(elf_chunks(image, data), layout, limit)
    if image.bits == 64:
        return LoadPlan("elf", "long64", image.entry_gpa, chunks, identity_map=max(c.end for c in chunks))
    return LoadPlan("elf", "flat32", image.entry_gpa, chunks)
