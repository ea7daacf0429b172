"""A disassembler over vmmio's decoder: byte streams to listed instructions, for `vmmio decode`.

Every instruction of a stream is decoded in turn at its address (branch targets are absolute, as in
objdump). Bytes that do not decode are listed where they are, as objdump lists ``(bad)``, and decoding
resumes after the bytes the decoder consumed, so one bad byte never hides the rest of the stream.
Input is hex text on the command line (`parse_hex`) or raw bytes from a file, read in chunks
(`chunks`), so a large file is never held whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vmmio.vmm.semantics import lookup
from vmmio.x86.decode import decode
from vmmio.x86.format import format_insn
from vmmio.x86.insn import MAX_INSN_LEN, DecodeStatus, Insn, MemOperand
from vmmio.x86.regs import GPR_NAMES, NO_REG, RIP_REG, SEG_NAMES, vector_name

__all__ = ["Decoded", "chunks", "disassemble", "parse_hex"]

CHUNK = 1 << 16
_PORT_IO = frozenset({"in", "out"})
# A memory operand that is only an address: these never access it, so never exit.
_ADDRESS_ONLY = frozenset({"lea", "nop", "bndmk", "bndcl", "bndcu", "bndcn"})
_ADDRESS_MASK = {16: 0xFFFF, 32: 0xFFFF_FFFF, 64: (1 << 64) - 1}


def parse_hex(words: Iterable[str]) -> bytes:
    """One byte string from hex words: ``8b 43 08``, ``0x8b4308``, ``8b:43:08`` and ``"8b 43" 08`` alike.

    A ``0x`` prefix marks the word as hex; the bytes are in the order written, not a number's.
    """
    digits: list[str] = []
    for word in words:
        for part in word.replace(":", " ").replace(",", " ").split():
            body = part[2:] if part[:2].lower() == "0x" else part
            if len(body) % 2 or not body:
                raise ValueError(f"{part!r} is not a whole number of hex bytes")
            digits.append(body)
    return bytes.fromhex("".join(digits))


def chunks(stream: Any, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
    """Raw bytes of a binary file object from `offset`, at most `limit` of them, in CHUNK pieces."""
    if offset:
        try:
            stream.seek(offset)
        except (OSError, ValueError):  # a pipe: read and drop
            left = offset
            while left:
                dropped = stream.read(min(left, CHUNK))
                if not dropped:
                    return
                left -= len(dropped)
    remaining = -1 if limit is None else limit  # -1: no limit
    while remaining:
        data: bytes = stream.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
        if not data:
            return
        if remaining > 0:
            remaining -= len(data)
        yield data


@dataclass(frozen=True, slots=True)
class Decoded:
    """One listed position: an instruction, or bytes that do not decode (`error` set, `insn` None)."""

    address: int
    raw: bytes
    insn: Insn | None
    text: str  # Intel syntax, or "(bad)"
    error: str = ""  # "truncated", "too_long", "bad_lock", "undefined"
    detail: str = ""

    @property
    def exits(self) -> bool:
        """Whether the instruction can reach a device at all: a memory operand, a string or port form."""
        insn = self.insn
        if insn is None:
            return False
        if insn.mnemonic in _ADDRESS_ONLY or insn.mnemonic.startswith("prefetch"):
            return False
        form = lookup(insn)
        return insn.mem is not None or insn.mnemonic in _PORT_IO or (form is not None and form.string)

    @property
    def emulated(self) -> bool:
        """Whether vmmio's kernel emulates this instruction when it faults on MMIO or a port (False for
        instructions that never exit: register-only forms)."""
        return self.exits and self.insn is not None and lookup(self.insn) is not None

    def to_json(self) -> dict[str, Any]:
        """The --json row: register names, addresses and immediates as hex strings."""
        row: dict[str, Any] = {"addr": hex(self.address), "bytes": self.raw.hex(), "length": len(self.raw)}
        insn = self.insn
        if insn is None:
            row.update(error=self.error, detail=self.detail)
            return row
        row.update(
            text=self.text,
            mnemonic=insn.mnemonic,
            emulated=self.emulated,
            mode=insn.mode,
            opsize=insn.opsize,
            addr_size=insn.addr_size,
            memory=None if insn.mem is None else memory_json(insn.mem),
            imm=hex(insn.imm & ((1 << (8 * insn.imm_size)) - 1)) if insn.imm_size else None,
            prefixes=prefix_names(insn),
        )
        return row


def memory_json(mem: MemOperand) -> dict[str, Any]:
    """A memory operand with register names (None where absent) and the displacement in hex."""
    names = GPR_NAMES[mem.addr_size]
    if mem.base == RIP_REG:
        base: str | None = "rip" if mem.addr_size == 8 else "eip"
    else:
        base = None if mem.base == NO_REG else names[mem.base]
    if mem.index == NO_REG:
        index = None
    else:
        index = vector_name(mem.index) if mem.vsib else names[mem.index]
    disp = hex(mem.disp) if mem.disp >= 0 else f"-{-mem.disp:#x}"
    return {"seg": SEG_NAMES[mem.seg], "base": base, "index": index, "scale": mem.scale, "disp": disp}


_REP_NAMES = {0xF3: "rep", 0xF2: "repne"}


def prefix_names(insn: Insn) -> list[str]:
    """The prefixes decoded, by name, whether or not the text shows them."""
    out = []
    if insn.lock:
        out.append("lock")
    if insn.rep:
        out.append(_REP_NAMES[insn.rep])
    if insn.seg_override >= 0:
        out.append(SEG_NAMES[insn.seg_override])
    if insn.opsize_prefix:
        out.append("data16" if insn.mode != 16 else "data32")
    if insn.rex:
        out.append(f"rex.{insn.rex:#04x}")
    return out


def _one(code: bytes, address: int, mode: int, final: bool) -> Decoded | None:
    """The listing entry at the start of `code`; None when more bytes are needed to tell (not `final`)."""
    result = decode(code, mode)
    if isinstance(result, Insn):
        return Decoded(address, code[: result.length], result, format_insn(result, address))
    if result.status is DecodeStatus.TRUNCATED:
        if not final and len(code) < MAX_INSN_LEN:
            return None
        return Decoded(address, code, None, "(bad)", "truncated", result.detail)
    n = max(1, min(result.length, len(code)))
    return Decoded(address, code[:n], None, "(bad)", result.status.name.lower(), result.detail)


def disassemble(
    data: Iterable[bytes], mode: int = 64, address: int = 0, count: int | None = None
) -> Iterator[Decoded]:
    """Every instruction (or undecodable run of bytes) in the byte pieces of `data`, in order."""
    mask = _ADDRESS_MASK[mode]
    buf = b""
    pos = 0  # where the next instruction starts in buf
    listed = 0
    pieces = iter(data)
    exhausted = False
    while count is None or listed < count:
        if not exhausted and len(buf) - pos < MAX_INSN_LEN:
            buf = buf[pos:]
            pos = 0
            while not exhausted and len(buf) < MAX_INSN_LEN:
                piece = next(pieces, None)
                if piece is None:
                    exhausted = True
                else:
                    buf += piece
        if pos >= len(buf):
            return
        item = _one(buf[pos : pos + MAX_INSN_LEN], address & mask, mode, exhausted)
        if item is None:  # cannot happen: fewer than 15 bytes are left only once the input is exhausted
            raise AssertionError("the decoder asked for more bytes than the input has")
        yield item
        listed += 1
        pos += len(item.raw)
        address += len(item.raw)
