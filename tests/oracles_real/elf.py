"""Just enough ELF and bzImage parsing to find executable code: section headers read with `struct`, so the
corpus needs no ELF library, and a kernel `vmlinuz` unpacked to its `vmlinux` ELF with the standard
library's decompressors (what the kernel's scripts/extract-vmlinux does with external tools).
"""

from __future__ import annotations

import bz2
import lzma
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["CodeRange", "elf_code_ranges", "extract_vmlinux", "kernel_setup_range"]

SHF_EXECINSTR = 0x4
SHT_NOBITS = 8
EM_386 = 3
EM_X86_64 = 62
_SHDR64 = struct.Struct("<IIQQQQIIQQ")
_SHDR32 = struct.Struct("<IIIIIIIIII")


@dataclass(frozen=True)
class CodeRange:
    """One run of machine code, with what objdump needs to disassemble the same bytes."""

    file: str  # the file objdump reads (the extracted vmlinux for a kernel image)
    origin: str  # where the bytes come from, for messages
    section: str
    mode: int  # 16, 32 or 64
    address: int  # virtual address of data[0] (objdump and iced use it for RIP-relative targets)
    file_offset: int  # offset of data[0] in `file`
    data: bytes
    raw: bool = False  # not an ELF section: objdump needs `-b binary`

    def where(self, offset: int) -> str:
        """`file [section] +0xoff (addr 0x...)` for failure messages."""
        return (
            f"{self.origin} [{self.section}] file offset {self.file_offset + offset:#x} "
            f"(address {self.address + offset:#x}, {self.mode}-bit)"
        )


def elf_code_ranges(path: str | Path, origin: str | None = None) -> list[CodeRange]:
    """The SHF_EXECINSTR sections of an x86 ELF file (32 or 64-bit); [] for anything else."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[5] != 1:
                return []
            elf_class = head[4]
            machine = struct.unpack_from("<H", head, 0x12)[0]
            if elf_class == 2 and machine == EM_X86_64:
                shoff = struct.unpack_from("<Q", head, 0x28)[0]
                shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
                fmt, mode = _SHDR64, 64
            elif elf_class == 1 and machine == EM_386:
                shoff = struct.unpack_from("<I", head, 0x20)[0]
                shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x2E)
                fmt, mode = _SHDR32, 32
            else:
                return []
            if shoff == 0 or shentsize < fmt.size:
                return []
            f.seek(shoff)
            first = f.read(shentsize)
            if len(first) < fmt.size:
                return []
            if shnum == 0:  # extended numbering: the count lives in section 0's sh_size
                shnum = fmt.unpack_from(first)[5]
            if shstrndx == 0xFFFF:
                shstrndx = fmt.unpack_from(first)[6]
            if not 0 < shnum < 1 << 16:
                return []
            table = first + f.read(shentsize * (shnum - 1))
            headers = [fmt.unpack_from(table, i * shentsize) for i in range(len(table) // shentsize)]
            if shstrndx >= len(headers):
                return []
            names = _read(f, headers[shstrndx][4], headers[shstrndx][5])
            out = []
            for h in headers:
                name_off, sh_type, flags, addr, offset, size = h[:6]
                if not flags & SHF_EXECINSTR or sh_type == SHT_NOBITS or size == 0:
                    continue
                end = names.find(b"\0", name_off)
                name = names[name_off:end].decode("ascii", "replace")
                data = _read(f, offset, size)
                if len(data) == size:
                    out.append(CodeRange(path, origin or path, name, mode, addr, offset, data))
            return out
    except (OSError, struct.error):
        return []


def _read(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _payload(image: bytes) -> bytes | None:
    """The compressed kernel inside a bzImage (boot protocol >= 2.08 gives its offset and length)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    version = struct.unpack_from("<H", image, 0x206)[0]
    setup_sects = image[0x1F1] or 4
    pm_start = (setup_sects + 1) * 512
    if version >= 0x208:
        offset, length = struct.unpack_from("<II", image, 0x248)
        return image[pm_start + offset : pm_start + offset + length]
    return None


def _decompress(blob: bytes) -> bytes | None:
    """Decompress by magic number; zstd and lz4 kernels (no stdlib decoder in 3.11) give None."""
    try:
        if blob.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob)
        if blob.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(wbits=31).decompress(blob)  # gzip framing; stops at the stream end
        if blob.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(blob)
        if blob.startswith(b"\x5d\x00\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(blob)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
        return None
    return None


def cache_dir() -> Path:
    """Where extracted kernels are kept between runs ($VMMIO_CORPUS_CACHE or the temp directory)."""
    return Path(os.environ.get("VMMIO_CORPUS_CACHE") or Path(tempfile.gettempdir()) / "vmmio-real-code")


def extract_vmlinux(vmlinuz: str | Path) -> Path | None:
    """The vmlinux ELF inside a bzImage, written once to the cache directory (objdump needs a file)."""
    src = Path(vmlinuz)
    try:
        st = src.stat()
    except OSError:
        return None
    target = cache_dir() / f"vmlinux-{src.name}-{st.st_size}-{int(st.st_mtime)}"
    if target.exists():
        return target
    try:
        image = src.read_bytes()
    except OSError:
        return None
    payload = _payload(image)
    elf = _decompress(payload) if payload else None
    if not elf or not elf.startswith(b"\x7fELF"):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".vmlinux-")
    with os.fdopen(fd, "wb") as f:
        f.write(elf)
    os.replace(tmp, target)  # atomic: a concurrent run sees the whole file or none
    return target


def kernel_setup_range(vmlinuz: str | Path) -> CodeRange | None:
    """The bzImage's real-mode setup code (16-bit, gcc -m16 output with data mixed in), swept raw.

    The setup is loaded at offset 0 of its segment with the boot sector, so its offsets in the file are
    its IP values. It is a linear sweep over code and data alike: the decoders must agree on whatever
    instruction the bytes form.
    """
    try:
        image = Path(vmlinuz).read_bytes()
    except OSError:
        return None
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    end = ((image[0x1F1] or 4) + 1) * 512
    return CodeRange(str(vmlinuz), str(vmlinuz), "setup", 16, 0x200, 0x200, image[0x200:end], raw=True)
