"""Symbols from an ELF image's `.symtab`, so statistics can say `wait_thre+0x4` instead of an address.

Parsing is bounded by the file, as `vmmio.images.elf` is for loading: every table must lie inside the
data, at most MAX_SECTIONS section headers and MAX_SYMBOLS symbols are read, names are cut at
MAX_NAME bytes. Anything malformed yields no symbols rather than an error: names are a convenience.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

__all__ = ["Symbol", "SymbolTable"]

MAX_SECTIONS = 4096
MAX_SYMBOLS = 1 << 20
MAX_NAME = 256
MAX_DISTANCE = 1 << 20  # an address further than this past the nearest symbol gets no name

SHT_SYMTAB = 2
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
STB_GLOBAL = 1

# Per ELF class: (e_shoff, e_shentsize, e_shnum offsets and format), section header, symbol entry.
_CLASSES = {
    1: (struct.Struct("<32xI10xHH"), struct.Struct("<IIIIIIIIII"), struct.Struct("<IIIBBH")),
    2: (struct.Struct("<40xQ10xHH"), struct.Struct("<IIQQQQIIQQ"), struct.Struct("<IBBHQQ")),
}


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    value: int
    size: int
    rank: int  # higher wins when two symbols share an address: sized functions over bare labels


class SymbolTable:
    """Address -> `name+offset`, from a symbol list sorted by address."""

    def __init__(self, symbols: list[Symbol]) -> None:
        best: dict[int, Symbol] = {}
        for sym in symbols:
            old = best.get(sym.value)
            if old is None or sym.rank > old.rank:
                best[sym.value] = sym
        self.symbols = sorted(best.values(), key=lambda s: s.value)
        self._values = [s.value for s in self.symbols]

    def __len__(self) -> int:
        return len(self.symbols)

    def lookup(self, addr: int) -> str | None:
        """`name` or `name+0x..` for the symbol at or before `addr`; None when none is near."""
        i = bisect.bisect_right(self._values, addr) - 1
        if i < 0:
            return None
        sym = self.symbols[i]
        off = addr - sym.value
        if (sym.size and off >= sym.size) or off >= MAX_DISTANCE:
            return None
        return sym.name if not off else f"{sym.name}+{off:#x}"

    @classmethod
    def from_elf(cls, data: bytes) -> SymbolTable:
        """The FUNC, OBJECT and untyped symbols of `.symtab` (empty for anything else)."""
        try:
            return cls(list(_read_symbols(data)))
        except (struct.error, ValueError, IndexError):
            return cls([])


def _read_symbols(data: bytes) -> list[Symbol]:
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[5] != 1:  # little-endian ELF only
        return []
    layouts = _CLASSES.get(data[4])
    if layouts is None:
        return []
    ehdr, shdr, sym_fmt = layouts
    shoff, shentsize, shnum = ehdr.unpack_from(data)
    if not shoff or shentsize < shdr.size or shnum > MAX_SECTIONS or shoff + shnum * shentsize > len(data):
        return []
    sections = [shdr.unpack_from(data, shoff + n * shentsize) for n in range(shnum)]
    out: list[Symbol] = []
    for sh in sections:
        # ELF32 and ELF64 section headers share the field order (only the widths differ).
        _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize = sh
        if sh_type != SHT_SYMTAB or link >= shnum or entsize < sym_fmt.size or offset + size > len(data):
            continue
        strtab = sections[link]
        str_off, str_size = strtab[4], strtab[5]
        if str_off + str_size > len(data):
            continue
        names = data[str_off : str_off + str_size]
        count = min(size // entsize, MAX_SYMBOLS)
        for n in range(1, count):  # entry 0 is the null symbol
            fields = sym_fmt.unpack_from(data, offset + n * entsize)
            if data[4] == 1:
                st_name, value, st_size, info, _other, shndx = fields
            else:
                st_name, info, _other, shndx, value, st_size = fields
            kind, bind = info & 0xF, info >> 4
            if kind not in (STT_NOTYPE, STT_OBJECT, STT_FUNC) or shndx == SHN_UNDEF or shndx >= SHN_LORESERVE:
                continue
            end = names.find(b"\0", st_name, st_name + MAX_NAME)
            name = names[st_name : end if end >= 0 else st_name + MAX_NAME].decode("utf-8", "replace")
            if not name or name.startswith("."):
                continue
            rank = (kind == STT_FUNC) * 4 + (st_size > 0) * 2 + (bind == STB_GLOBAL)
            out.append(Symbol(name, value, st_size, rank))
    return out
