"""The kernel/userspace boundary: what `vcpu.run(entry)` takes and returns, and its binary encoding.

The kernel keeps every piece of instruction-emulation state; userspace only ever sees plain requests
(`MmioExit`, `InoutExit`) and answers them with the entry of its next `run` (`FulfillMmio`,
`FulfillInout`). Values are small immutable records validated on construction, so an invalid request
or answer fails where it is built, not deep inside the emulator. The binary encoding (fixed 48-byte,
little-endian records, see docs/abi.md) lets a device model live in another process or language.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Final, Generic, Literal, Protocol, TypeAlias, TypeVar

from vmmio.x86.insn import MAX_INSN_LEN

__all__ = [
    "ABI_VERSION",
    "ABI_VERSIONS",
    "ENTRY_MAGIC",
    "EXIT_MAGIC",
    "HEADER_SIZE",
    "IO_SIZES",
    "MAX_BATCH",
    "MAX_INSN_LEN",
    "MMIO_SIZES",
    "PAGE_SIZE",
    "RECORD_SIZE",
    "AbiError",
    "Buffer",
    "Capability",
    "Default",
    "Device",
    "Discard",
    "ElementDevice",
    "EntryError",
    "EntryFlags",
    "EntryKind",
    "ExitKind",
    "FulfillInout",
    "FulfillInoutBatch",
    "FulfillMmio",
    "FulfillMmioBatch",
    "HltExit",
    "InoutBatchExit",
    "InoutExit",
    "InstEmulExit",
    "InstEmulReason",
    "MmioBatchExit",
    "MmioExit",
    "Request",
    "ShutdownExit",
    "ShutdownReason",
    "SuspendedExit",
    "VmEntry",
    "VmExit",
    "batch_fulfillment",
    "fulfillment_data",
    "inout_request",
    "mmio_request",
    "pack_entry",
    "pack_exit",
    "reverse_elements",
    "split_access",
    "unpack_entry",
    "unpack_exit",
]

ABI_VERSION: Final = 3  # 2: ShutdownExit carries its reason; 3: batched REP requests
ABI_VERSIONS: Final = (2, 3)  # what pack_* can write and unpack_* reads
EXIT_MAGIC: Final = b"VMEX"
ENTRY_MAGIC: Final = b"VMEN"
HEADER_SIZE: Final = 16
PAYLOAD_SIZE: Final = 32
RECORD_SIZE: Final = HEADER_SIZE + PAYLOAD_SIZE

PAGE_SIZE: Final = 4096
MMIO_SIZES: Final = frozenset({1, 2, 4, 8})
IO_SIZES: Final = frozenset({1, 2, 4})
MAX_BATCH: Final = PAGE_SIZE  # elements in one batched request (a page of bytes at most)


class AbiError(ValueError):
    """A value, or an encoded record, that the boundary does not accept."""


class EntryError(ValueError):
    """userspace's entry does not fit the vCPU's state; nothing was changed and it may retry."""


class Device(Protocol):
    """The one device protocol, for in-kernel and userspace models alike.

    `offset` is relative to where the device is mapped (a GPA or a port); `size` is 1, 2, 4 or 8
    (ports: 1, 2, 4); a read returns a value that fits `size` bytes (wider values are truncated).
    """

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class ElementDevice(Device, Protocol):
    """A device that can also take a run of accesses at once: what a batched REP request asks for.

    Optional (userspace issues one read or write per element to other devices). Element i is at
    `offset + i * step`: `step` is `size`, `-size` (RFLAGS.DF) or 0 (a port); `data` holds the elements
    in that order, `count * size` bytes, as `read_elements` returns them.
    """

    def read_elements(self, offset: int, size: int, count: int, step: int) -> bytes: ...

    def write_elements(self, offset: int, size: int, data: bytes, step: int) -> None: ...


_ELEMENT_FORMATS: Final[dict[int, Literal["B", "H", "I", "Q"]]] = {1: "B", 2: "H", 4: "I", 8: "Q"}


def reverse_elements(data: bytes, size: int) -> bytes:
    """`data` with its `size`-byte elements in the opposite order: between the access order of a
    batched run with RFLAGS.DF set and address order. The bytes of each element stay as they are."""
    return bytes(memoryview(data).cast(_ELEMENT_FORMATS[size])[::-1].tobytes())


def split_access(gpa: int, n: int) -> list[tuple[int, int, int]]:
    """The requests a device sees for `n` bytes at `gpa` within one page: (byte offset, gpa, size).

    A span of 1, 2, 4 or 8 bytes stays whole even if misaligned, as the CPU issues it; any other span
    (a page-crossing piece, a 16-byte vector access) becomes naturally aligned power-of-two pieces of
    at most 8 bytes in address order. The kernel and the KVM reference present accesses by this rule.
    """
    if n in (1, 2, 4, 8):
        return [(0, gpa, n)]
    pieces = []
    start, end = 0, gpa + n
    while gpa < end:
        size = 8
        while size > end - gpa or gpa & (size - 1):
            size >>= 1
        pieces.append((start, gpa, size))
        start += size
        gpa += size
    return pieces


class ExitKind(IntEnum):
    """Kind code of an exit record (0 is never valid, so a zeroed buffer is not a record)."""

    MMIO = 1
    INOUT = 2
    INST_EMUL = 3
    HLT = 4
    SHUTDOWN = 5
    SUSPENDED = 6
    MMIO_BATCH = 7  # ABI version 3
    INOUT_BATCH = 8  # ABI version 3


class EntryKind(IntEnum):
    """Kind code of an entry record (0 is never valid)."""

    DEFAULT = 1
    FULFILL_MMIO = 2
    FULFILL_INOUT = 3
    DISCARD = 4
    FULFILL_MMIO_BATCH = 5  # ABI version 3
    FULFILL_INOUT_BATCH = 6  # ABI version 3


class Capability(IntFlag):
    """What a vCPU does beyond the one-element boundary once userspace enables it (`Vcpu.enable`)."""

    REP_BATCH = 1 << 0  # REP string instructions between RAM and one device: one request per run


class EntryFlags(IntFlag):
    """Header flag bits of an entry record; every other bit is reserved and must be 0."""

    EXIT_CONSISTENT = 1 << 0


class InstEmulReason(IntEnum):
    """Why the kernel handed an instruction back instead of emulating it.

    Faults the CPU itself would raise (#UD, #GP, #PF, ...) are injected into the guest, never reported
    here: these are the cases where the emulator, not the guest, is the limit.
    """

    UNDECODABLE = 1  # bytes fetched, but the decoder does not know this (architecturally valid) form
    NOT_EMULATED = 2  # decoded, but no emulation semantics for this instruction/operand form
    FETCH_FAILED = 3  # CS:RIP is not readable guest RAM (e.g. code in MMIO); `insn` holds what was read
    GPA_MISMATCH = 4  # no decoded memory operand translates to the faulting GPA (code/tables changed)
    UNSUPPORTED_MODE = 5  # CPU mode or size combination the emulator does not implement (e.g. VM86)
    TRANSLATION_FAILED = 6  # a page walk needed a paging-structure entry that is not in guest RAM


class ShutdownReason(IntEnum):
    """Why the vCPU stopped for good."""

    TRIPLE_FAULT = 1  # the guest faulted while delivering #DF: what a CPU calls shutdown
    UNSUPPORTED_DELIVERY = 2  # an event the backend cannot deliver or model (e.g. a task gate): its limit


_U64_LIMIT = 1 << 64

# --- field checks -----------------------------------------------------------------------------------


def _uint(owner: str, name: str, value: object, bits: int) -> int:
    # bool is rejected: a bool in an int field is nearly always two positional arguments swapped.
    if not isinstance(value, int) or isinstance(value, bool):
        raise AbiError(f"{owner}.{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise AbiError(f"{owner}.{name} = {value:#x} is outside the unsigned {bits}-bit range")
    return value


def _flag(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise AbiError(f"{owner}.{name} must be a bool, not {type(value).__name__}")


def _size(owner: str, value: object, allowed: frozenset[int]) -> int:
    size = _uint(owner, "size", value, 8)
    if size not in allowed:
        raise AbiError(f"{owner}.size = {size} is not one of {', '.join(map(str, sorted(allowed)))}")
    return size


def _data(owner: str, value: object, size: int) -> None:
    data = _uint(owner, "data", value, 64)
    if data >> (8 * size):
        raise AbiError(f"{owner}.data = {data:#x} does not fit in {size} byte(s)")


def _check_mmio(owner: str, gpa: object, size: object, is_write: object, data: object) -> None:
    # Fast path for the valid case (every exit the kernel builds); the checks below explain a failure.
    if (
        type(gpa) is int
        and type(size) is int
        and type(data) is int
        and type(is_write) is bool
        and size in MMIO_SIZES
        and 0 <= gpa < _U64_LIMIT
        and (gpa & (PAGE_SIZE - 1)) + size <= PAGE_SIZE
        and 0 <= data < 1 << (8 * size)
    ):
        return
    addr = _uint(owner, "gpa", gpa, 64)
    nbytes = _size(owner, size, MMIO_SIZES)
    _flag(owner, "is_write", is_write)
    if (addr & (PAGE_SIZE - 1)) + nbytes > PAGE_SIZE:
        raise AbiError(
            f"{owner}: [{addr:#x}, {addr + nbytes:#x}) crosses a 4 KiB page boundary "
            "(the kernel splits such accesses into one request per page)"
        )
    _data(owner, data, nbytes)


def _check_inout(owner: str, port: object, size: object, is_in: object, data: object) -> None:
    if (
        type(port) is int
        and type(size) is int
        and type(data) is int
        and type(is_in) is bool
        and size in IO_SIZES
        and 0 <= port <= 0xFFFF
        and 0 <= data < 1 << (8 * size)
    ):
        return
    _uint(owner, "port", port, 16)
    nbytes = _size(owner, size, IO_SIZES)
    _flag(owner, "is_in", is_in)
    _data(owner, data, nbytes)


def _repr(value: object, names: tuple[str, ...]) -> str:
    """`MmioExit(gpa=0xd0000000, size=4, is_write=True, data=0x41)`: addresses and data in hex."""
    parts = []
    for name in names:
        v = getattr(value, name)
        if isinstance(v, bool) or not isinstance(v, int) or name == "size":
            parts.append(f"{name}={v!r}")
        elif isinstance(v, IntEnum):
            parts.append(f"{name}={v.name}")
        else:
            parts.append(f"{name}={v:#x}")
    return f"{type(value).__name__}({', '.join(parts)})"


# --- exits ------------------------------------------------------------------------------------------


def _single_answer(what: str, names: tuple[str, str], store: bool, written: int, data: int | None) -> int:
    """The data of a one-element fulfillment: a store (MMIO write, OUT) echoes what was written (other
    data is a caller bug), a load (MMIO read, IN) brings the value read. `_batch_answer` for batches."""
    if store:
        if data is not None and data != written:
            raise AbiError(
                f"{what}.fulfill: {names[0]} fulfillment echoes the written data {written:#x}, not {data!r}"
            )
        return written
    if data is None:
        raise AbiError(f"{what}.fulfill: {names[1]} needs the value read")
    return data


@dataclass(frozen=True, slots=True)
class MmioExit:
    """The guest accessed `size` bytes at `gpa`, which no RAM or in-kernel device claims.

    For a write `data` is the value written (little-endian, low `size` bytes); a read carries 0.
    """

    KIND: ClassVar[ExitKind] = ExitKind.MMIO
    gpa: int
    size: int
    is_write: bool
    data: int

    def __repr__(self) -> str:
        return _repr(self, ("gpa", "size", "is_write", "data"))

    def __post_init__(self) -> None:
        _check_mmio("MmioExit", self.gpa, self.size, self.is_write, self.data)
        if not self.is_write and self.data != 0:
            raise AbiError(f"MmioExit: a read carries no data (data must be 0, got {self.data:#x})")

    def fulfill(self, data: int | None = None, *, exit_consistent: bool = False) -> FulfillMmio:
        """Build the answer the kernel expects: the value read, or (write) the written data echoed.

        For a write pass nothing (device write handlers return None); passing other data than was
        written is a caller bug and raises. Only what the caller adds is checked: the request's own
        fields are valid already.
        """
        data = _single_answer("MmioExit", ("a write", "a read"), self.is_write, self.data, data)
        if type(data) is not int or not 0 <= data < 1 << (8 * self.size) or exit_consistent is not False:
            return FulfillMmio(self.gpa, self.size, self.is_write, data, exit_consistent)  # checks it all
        return _fulfill_mmio(self.gpa, self.size, self.is_write, data)

    def matches(self, entry: VmEntry) -> bool:
        """The one definition of "this entry fulfills this request", shared by kernel and tests."""
        return (
            isinstance(entry, FulfillMmio)
            and entry.gpa == self.gpa
            and entry.size == self.size
            and entry.is_write == self.is_write
            and (not self.is_write or entry.data == self.data)
        )


@dataclass(frozen=True, slots=True)
class InoutExit:
    """The guest executed IN/OUT (or one INS/OUTS iteration) on `port`; `data` is 0 for IN."""

    KIND: ClassVar[ExitKind] = ExitKind.INOUT
    port: int
    size: int
    is_in: bool
    data: int

    def __repr__(self) -> str:
        return _repr(self, ("port", "size", "is_in", "data"))

    def __post_init__(self) -> None:
        _check_inout("InoutExit", self.port, self.size, self.is_in, self.data)
        if self.is_in and self.data != 0:
            raise AbiError(f"InoutExit: an IN carries no data (data must be 0, got {self.data:#x})")

    def fulfill(self, data: int | None = None, *, exit_consistent: bool = False) -> FulfillInout:
        """Build the answer the kernel expects: the value read for IN, the OUT data echoed for OUT."""
        data = _single_answer("InoutExit", ("an OUT", "an IN"), not self.is_in, self.data, data)
        if type(data) is not int or not 0 <= data < 1 << (8 * self.size) or exit_consistent is not False:
            return FulfillInout(self.port, self.size, self.is_in, data, exit_consistent)  # checks it all
        return _fulfill_inout(self.port, self.size, self.is_in, data)

    def matches(self, entry: VmEntry) -> bool:
        """The one definition of "this entry fulfills this request", shared by kernel and tests."""
        return (
            isinstance(entry, FulfillInout)
            and entry.port == self.port
            and entry.size == self.size
            and entry.is_in == self.is_in
            and (self.is_in or entry.data == self.data)
        )


def fulfillment_data(pending: MmioExit | InoutExit, entry: VmEntry) -> int:
    """The data `entry` brings for `pending`; AbiError naming both when it does not fulfill it.

    One rule for every vCPU implementation (`matches`), so kernels reject exactly the same entries.
    """
    if not pending.matches(entry):
        raise AbiError(f"{entry} does not fulfill the pending {pending}")
    assert isinstance(entry, FulfillMmio | FulfillInout)
    return entry.data


@dataclass(frozen=True, slots=True)
class InstEmulExit:
    """The kernel could not emulate the instruction at `rip`; nothing of it has been performed.

    `insn` holds the bytes fetched (up to 15; fewer, possibly none, on FETCH_FAILED). Nothing is left
    pending: RIP still points at the instruction, and `Default` would execute it again.
    """

    KIND: ClassVar[ExitKind] = ExitKind.INST_EMUL
    rip: int
    insn: bytes
    reason: InstEmulReason

    def __repr__(self) -> str:
        return _repr(self, ("rip", "insn", "reason"))

    def __post_init__(self) -> None:
        _uint("InstEmulExit", "rip", self.rip, 64)
        if not isinstance(self.insn, bytes):
            raise AbiError(f"InstEmulExit.insn must be bytes, not {type(self.insn).__name__}")
        if len(self.insn) > MAX_INSN_LEN:
            raise AbiError(f"InstEmulExit.insn has {len(self.insn)} bytes; at most {MAX_INSN_LEN}")
        if not isinstance(self.reason, InstEmulReason):
            raise AbiError(f"InstEmulExit.reason must be an InstEmulReason, not {self.reason!r}")


@dataclass(frozen=True, slots=True)
class HltExit:
    """The guest executed HLT; RIP is past it. Userspace waits for an event, then runs `Default`."""

    KIND: ClassVar[ExitKind] = ExitKind.HLT


@dataclass(frozen=True, slots=True)
class ShutdownExit:
    """The vCPU entered shutdown; it runs no further until reset. `reason` says why."""

    KIND: ClassVar[ExitKind] = ExitKind.SHUTDOWN
    reason: ShutdownReason = ShutdownReason.TRIPLE_FAULT

    def __repr__(self) -> str:
        return _repr(self, ("reason",))

    def __post_init__(self) -> None:
        if not isinstance(self.reason, ShutdownReason):
            raise AbiError(f"ShutdownExit.reason must be a ShutdownReason, not {self.reason!r}")


@dataclass(frozen=True, slots=True)
class SuspendedExit:
    """Nothing to service: e.g. the state is now consistent as an entry asked. Call `run` again."""

    KIND: ClassVar[ExitKind] = ExitKind.SUSPENDED


# --- entries ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Default:
    """Nothing to answer: run the guest. Rejected while a request is pending."""

    KIND: ClassVar[EntryKind] = EntryKind.DEFAULT
    exit_consistent: bool = False

    def __post_init__(self) -> None:
        _flag("Default", "exit_consistent", self.exit_consistent)


@dataclass(frozen=True, slots=True)
class FulfillMmio:
    """Answer to the pending `MmioExit`: same gpa/size/direction; `data` is the value read, or the
    written data echoed for a write."""

    KIND: ClassVar[EntryKind] = EntryKind.FULFILL_MMIO
    gpa: int
    size: int
    is_write: bool
    data: int
    exit_consistent: bool = False

    def __repr__(self) -> str:
        return _repr(self, ("gpa", "size", "is_write", "data", "exit_consistent"))

    def __post_init__(self) -> None:
        _check_mmio("FulfillMmio", self.gpa, self.size, self.is_write, self.data)
        _flag("FulfillMmio", "exit_consistent", self.exit_consistent)


@dataclass(frozen=True, slots=True)
class FulfillInout:
    """Answer to the pending `InoutExit`: same port/size/direction; `data` is the IN value, or the
    OUT data echoed."""

    KIND: ClassVar[EntryKind] = EntryKind.FULFILL_INOUT
    port: int
    size: int
    is_in: bool
    data: int
    exit_consistent: bool = False

    def __repr__(self) -> str:
        return _repr(self, ("port", "size", "is_in", "data", "exit_consistent"))

    def __post_init__(self) -> None:
        _check_inout("FulfillInout", self.port, self.size, self.is_in, self.data)
        _flag("FulfillInout", "exit_consistent", self.exit_consistent)


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the pending request's instruction without completing it (illumos VEC_DISCARD_INSTR).

    RIP stays at the instruction; rejected when no request is pending.
    """

    KIND: ClassVar[EntryKind] = EntryKind.DISCARD
    exit_consistent: bool = False

    def __post_init__(self) -> None:
        _flag("Discard", "exit_consistent", self.exit_consistent)


# --- batched REP requests (Capability.REP_BATCH, ABI version 3) ------------------------------------------
#
# A REP MOVS/STOS/LODS/INS/OUTS between RAM and one device, on a vCPU that enabled REP_BATCH, presents a
# run of elements as one request: `count` elements of `size` bytes, the first at `gpa` and the next ones
# above it, or below it when `df` (RFLAGS.DF) is set, all within one page; `data` holds the elements in
# the order the CPU accesses them. Userspace may complete fewer elements than asked (a device that ends
# before the run does, a FIFO that is full): the kernel completes exactly that many iterations.


def _check_count(owner: str, count: object, size: int) -> int:
    n = _uint(owner, "count", count, 32)
    if not n >= 1 or n * size > PAGE_SIZE:
        raise AbiError(
            f"{owner}.count = {n} is not 1..{PAGE_SIZE // size} (elements of {size} bytes in a page)"
        )
    return n


def _check_data(owner: str, data: object, length: int, what: str) -> None:
    if type(data) is not bytes:
        raise AbiError(f"{owner}.data must be bytes, not {type(data).__name__}")
    if len(data) != length:
        raise AbiError(f"{owner}.data is {len(data)} bytes; {what} carries {length}")


def _batch_answer(
    what: str,
    names: tuple[str, str],
    ex: MmioBatchExit | InoutBatchExit,
    data: bytes | None,
    count: int | None,
) -> tuple[int, bytes]:
    """(elements completed, data) of a batch's fulfillment: a store (MMIO write, OUT) answers with a
    count (default all), a load (MMIO read, IN) with the elements read, whose number is the count."""
    store = ex.is_write if isinstance(ex, MmioBatchExit) else not ex.is_in
    if store:
        if data is not None:
            raise AbiError(f"{what}.fulfill: {names[0]} fulfillment carries no data, only a count")
        return (ex.count if count is None else count), b""
    if data is None:
        raise AbiError(f"{what}.fulfill: {names[1]} needs the elements read")
    out = bytes(data)
    if count is not None and count * ex.size != len(out):
        raise AbiError(f"{what}.fulfill: count {count} does not match {len(out)} bytes of data")
    return len(out) // ex.size, out


def _check_mmio_batch(
    owner: str, gpa: object, size: object, count: object, is_write: object, df: object
) -> None:
    addr = _uint(owner, "gpa", gpa, 64)
    nbytes = _size(owner, size, MMIO_SIZES)
    n = _check_count(owner, count, nbytes)
    _flag(owner, "is_write", is_write)
    _flag(owner, "df", df)
    low = addr - (n - 1) * nbytes if df else addr  # the lowest element; the run ends n * size above it
    if low < 0 or low >> 12 != (low + n * nbytes - 1) >> 12:
        raise AbiError(
            f"{owner}: {n} elements of {nbytes} bytes from {addr:#x} ({'down' if df else 'up'}wards) "
            "leave their 4 KiB page"
        )


def _check_inout_batch(owner: str, port: object, size: object, count: object, is_in: object) -> int:
    _uint(owner, "port", port, 16)
    nbytes = _size(owner, size, IO_SIZES)
    _flag(owner, "is_in", is_in)
    return _check_count(owner, count, nbytes) * nbytes


def _repr_data(data: bytes) -> str:
    """Batch data in a repr: short runs in hex, long ones abridged."""
    if not data:
        return "b''"
    return data.hex() if len(data) <= 16 else f"{data[:8].hex()}...<{len(data)} bytes>"


@dataclass(frozen=True, slots=True)
class MmioBatchExit:
    """`count` accesses of `size` bytes from `gpa`, upwards (or downwards with `df`) within one page.

    For a write `data` holds the `count * size` bytes written, element by element in access order; a
    read carries b"" and is answered with the elements read.
    """

    KIND: ClassVar[ExitKind] = ExitKind.MMIO_BATCH
    gpa: int
    size: int
    count: int
    is_write: bool
    df: bool
    data: bytes

    def __repr__(self) -> str:
        return (
            f"MmioBatchExit(gpa={self.gpa:#x}, size={self.size}, count={self.count}, "
            f"is_write={self.is_write}, df={self.df}, data={_repr_data(self.data)})"
        )

    def __post_init__(self) -> None:
        _check_mmio_batch("MmioBatchExit", self.gpa, self.size, self.count, self.is_write, self.df)
        _check_data(
            "MmioBatchExit", self.data, self.count * self.size if self.is_write else 0, "this request"
        )

    def element_gpa(self, i: int) -> int:
        """Where element `i` (0: the first accessed) is."""
        return self.gpa - i * self.size if self.df else self.gpa + i * self.size

    def fulfill(
        self, data: bytes | None = None, *, count: int | None = None, exit_consistent: bool = False
    ) -> FulfillMmioBatch:
        """The answer: for a read the elements read (`data`, in access order; fewer than asked completes
        only those), for a write how many were written (`count`, default all)."""
        done, out = _batch_answer("MmioBatchExit", ("a write", "a read"), self, data, count)
        return FulfillMmioBatch(self.gpa, self.size, done, self.is_write, self.df, out, exit_consistent)

    def matches(self, entry: VmEntry) -> bool:
        """The matching rule for batches: same run, and between one and `count` elements completed."""
        return (
            isinstance(entry, FulfillMmioBatch)
            and entry.gpa == self.gpa
            and entry.size == self.size
            and entry.is_write == self.is_write
            and entry.df == self.df
            and 1 <= entry.count <= self.count
        )


@dataclass(frozen=True, slots=True)
class InoutBatchExit:
    """`count` IN or OUT accesses of `size` bytes to `port` (a REP INS/OUTS); `data` holds the OUT
    elements in order, b"" for IN."""

    KIND: ClassVar[ExitKind] = ExitKind.INOUT_BATCH
    port: int
    size: int
    count: int
    is_in: bool
    data: bytes

    def __repr__(self) -> str:
        return (
            f"InoutBatchExit(port={self.port:#x}, size={self.size}, count={self.count}, "
            f"is_in={self.is_in}, data={_repr_data(self.data)})"
        )

    def __post_init__(self) -> None:
        length = _check_inout_batch("InoutBatchExit", self.port, self.size, self.count, self.is_in)
        _check_data("InoutBatchExit", self.data, 0 if self.is_in else length, "this request")

    def fulfill(
        self, data: bytes | None = None, *, count: int | None = None, exit_consistent: bool = False
    ) -> FulfillInoutBatch:
        """The answer: for IN the elements read (`data`), for OUT how many were written (`count`)."""
        done, out = _batch_answer("InoutBatchExit", ("an OUT", "an IN"), self, data, count)
        return FulfillInoutBatch(self.port, self.size, done, self.is_in, out, exit_consistent)

    def matches(self, entry: VmEntry) -> bool:
        """The matching rule for batches: same port, size and direction, 1..`count` elements completed."""
        return (
            isinstance(entry, FulfillInoutBatch)
            and entry.port == self.port
            and entry.size == self.size
            and entry.is_in == self.is_in
            and 1 <= entry.count <= self.count
        )


@dataclass(frozen=True, slots=True)
class FulfillMmioBatch:
    """Answer to a pending `MmioBatchExit`: `count` elements completed (from the first); for a read,
    `data` holds them in access order; a write carries b""."""

    KIND: ClassVar[EntryKind] = EntryKind.FULFILL_MMIO_BATCH
    gpa: int
    size: int
    count: int
    is_write: bool
    df: bool
    data: bytes
    exit_consistent: bool = False

    def __repr__(self) -> str:
        return (
            f"FulfillMmioBatch(gpa={self.gpa:#x}, size={self.size}, count={self.count}, "
            f"is_write={self.is_write}, df={self.df}, data={_repr_data(self.data)}, "
            f"exit_consistent={self.exit_consistent})"
        )

    def __post_init__(self) -> None:
        _check_mmio_batch("FulfillMmioBatch", self.gpa, self.size, self.count, self.is_write, self.df)
        length = 0 if self.is_write else self.count * self.size
        _check_data("FulfillMmioBatch", self.data, length, "this fulfillment")
        _flag("FulfillMmioBatch", "exit_consistent", self.exit_consistent)


@dataclass(frozen=True, slots=True)
class FulfillInoutBatch:
    """Answer to a pending `InoutBatchExit`: `count` elements completed; for IN `data` holds them."""

    KIND: ClassVar[EntryKind] = EntryKind.FULFILL_INOUT_BATCH
    port: int
    size: int
    count: int
    is_in: bool
    data: bytes
    exit_consistent: bool = False

    def __repr__(self) -> str:
        return (
            f"FulfillInoutBatch(port={self.port:#x}, size={self.size}, count={self.count}, "
            f"is_in={self.is_in}, data={_repr_data(self.data)}, exit_consistent={self.exit_consistent})"
        )

    def __post_init__(self) -> None:
        length = _check_inout_batch("FulfillInoutBatch", self.port, self.size, self.count, self.is_in)
        _check_data("FulfillInoutBatch", self.data, length if self.is_in else 0, "this fulfillment")
        _flag("FulfillInoutBatch", "exit_consistent", self.exit_consistent)


Request: TypeAlias = MmioExit | InoutExit | MmioBatchExit | InoutBatchExit


def batch_fulfillment(pending: MmioBatchExit | InoutBatchExit, entry: VmEntry) -> tuple[int, bytes]:
    """(elements completed, the elements read) that `entry` brings for the batch `pending`; AbiError
    naming both when it does not fulfill it. The batch counterpart of `fulfillment_data`."""
    if not pending.matches(entry):
        raise AbiError(f"{entry} does not fulfill the pending {pending}")
    assert isinstance(entry, FulfillMmioBatch | FulfillInoutBatch)
    return entry.count, entry.data


# --- requests the kernel builds -----------------------------------------------------------------------
#
# An exit the kernel derives from its own state (a GPA it translated, a size from its split rule) needs
# no validation: these build the same frozen values without it, setting the slots directly (a fifth of
# the constructor's cost). The fulfillment helpers use the same path once they have checked what the
# caller added. Anything built from outside input goes through the constructors.

_new = object.__new__


def _setters(cls: type, names: str) -> tuple[Callable[[object, object], None], ...]:
    return tuple(cls.__dict__[name].__set__ for name in names.split())


_MMIO_SET = _setters(MmioExit, "gpa size is_write data")
_INOUT_SET = _setters(InoutExit, "port size is_in data")
_FMMIO_SET = _setters(FulfillMmio, "gpa size is_write data exit_consistent")
_FINOUT_SET = _setters(FulfillInout, "port size is_in data exit_consistent")


def mmio_request(gpa: int, size: int, is_write: bool, data: int) -> MmioExit:
    """`MmioExit(gpa, size, is_write, data)` for the kernel, which guarantees the fields are valid."""
    ex = _new(MmioExit)
    a, b, c, d = _MMIO_SET
    a(ex, gpa)
    b(ex, size)
    c(ex, is_write)
    d(ex, data)
    return ex


def inout_request(port: int, size: int, is_in: bool, data: int) -> InoutExit:
    """`InoutExit(port, size, is_in, data)` for the kernel, which guarantees the fields are valid."""
    ex = _new(InoutExit)
    a, b, c, d = _INOUT_SET
    a(ex, port)
    b(ex, size)
    c(ex, is_in)
    d(ex, data)
    return ex


def _fulfill_mmio(gpa: int, size: int, is_write: bool, data: int) -> FulfillMmio:
    entry = _new(FulfillMmio)
    a, b, c, d, e = _FMMIO_SET
    a(entry, gpa)
    b(entry, size)
    c(entry, is_write)
    d(entry, data)
    e(entry, False)
    return entry


def _fulfill_inout(port: int, size: int, is_in: bool, data: int) -> FulfillInout:
    entry = _new(FulfillInout)
    a, b, c, d, e = _FINOUT_SET
    a(entry, port)
    b(entry, size)
    c(entry, is_in)
    d(entry, data)
    e(entry, False)
    return entry


VmExit: TypeAlias = (
    MmioExit
    | InoutExit
    | InstEmulExit
    | HltExit
    | ShutdownExit
    | SuspendedExit
    | MmioBatchExit
    | InoutBatchExit
)
VmEntry: TypeAlias = Default | FulfillMmio | FulfillInout | Discard | FulfillMmioBatch | FulfillInoutBatch
Buffer: TypeAlias = bytes | bytearray | memoryview


# --- binary encoding --------------------------------------------------------------------------------
#
# Record = 16-byte header + 32-byte payload, little-endian, no implicit padding ("<").
# Header: magic[4], version u16, kind u16, flags u32, reserved u32.
# Each kind is one table row: its class, its payload layout, and the two functions between them.

_HEADER_FMT = "4sHHII"
_HEADER = struct.Struct("<" + _HEADER_FMT)
_ZERO = bytes(PAYLOAD_SIZE)
_REASONS: Final = {r.value: r for r in InstEmulReason}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Codec(Generic[T]):
    cls: type[T]
    kind: int
    layout: struct.Struct  # the whole record, header included
    encode: Callable[[T], tuple[Any, ...]]  # value -> payload fields
    decode: Callable[[tuple[Any, ...], bool], T]  # (payload fields [, data], exit_consistent) -> value
    since: int = 2  # the first ABI version with this kind
    # Batch records: the length of the data after the record, from the payload fields (0 when they are
    # invalid: decoding then says why), and the value's data. None: a plain 48-byte record.
    data_length: Callable[[tuple[Any, ...]], int] | None = None
    data: Callable[[T], bytes] | None = None


def _codec(cls: type[T], payload_fmt: str, encode: Any, decode: Any, **batch: Any) -> _Codec[T]:
    layout = struct.Struct("<" + _HEADER_FMT + payload_fmt)
    assert layout.size == RECORD_SIZE, (cls, layout.size)
    kind: int = getattr(cls, "KIND")  # noqa: B009 -- ClassVar on a generic type
    return _Codec(cls, kind, layout, encode, decode, **batch)


def _reserved(raw: bytes, where: str) -> None:
    if any(raw):
        raise AbiError(f"reserved bytes set in {where}: {raw.hex()}")


def _bool(byte: int, name: str) -> bool:
    if byte > 1:
        raise AbiError(f"{name} byte is {byte:#x}; only 0 or 1 are defined (bits 1-7 reserved)")
    return byte == 1


# MMIO payload (exits and fulfillments alike): gpa u64, data u64, size u8, is_write u8, reserved[14].
_MMIO_FMT = "QQBB14s"


def _enc_mmio(v: MmioExit | FulfillMmio) -> tuple[Any, ...]:
    return (v.gpa, v.data, v.size, v.is_write, _ZERO[:14])


def _dec_mmio_exit(f: tuple[Any, ...], _: bool) -> MmioExit:
    _reserved(f[4], "MMIO payload")
    return MmioExit(f[0], f[2], _bool(f[3], "is_write"), f[1])


def _dec_mmio_entry(f: tuple[Any, ...], exit_consistent: bool) -> FulfillMmio:
    _reserved(f[4], "MMIO payload")
    return FulfillMmio(f[0], f[2], _bool(f[3], "is_write"), f[1], exit_consistent)


# INOUT payload: port u16, size u8, is_in u8, data u32, reserved[24].
_INOUT_FMT = "HBBI24s"


def _enc_inout(v: InoutExit | FulfillInout) -> tuple[Any, ...]:
    return (v.port, v.size, v.is_in, v.data, _ZERO[:24])


def _dec_inout_exit(f: tuple[Any, ...], _: bool) -> InoutExit:
    _reserved(f[4], "INOUT payload")
    return InoutExit(f[0], f[1], _bool(f[2], "is_in"), f[3])


def _dec_inout_entry(f: tuple[Any, ...], exit_consistent: bool) -> FulfillInout:
    _reserved(f[4], "INOUT payload")
    return FulfillInout(f[0], f[1], _bool(f[2], "is_in"), f[3], exit_consistent)


# INST_EMUL payload: rip u64, reason u16, insn_len u8, reserved[5], insn[15] (zero past insn_len),
# reserved[1].
_INST_FMT = "QHB5s15s1s"


def _enc_inst(v: InstEmulExit) -> tuple[Any, ...]:
    return (v.rip, v.reason, len(v.insn), _ZERO[:5], v.insn.ljust(MAX_INSN_LEN, b"\0"), _ZERO[:1])


def _dec_inst(f: tuple[Any, ...], _: bool) -> InstEmulExit:
    rip, reason, n, rsvd0, insn, rsvd1 = f
    _reserved(rsvd0 + rsvd1, "INST_EMUL payload")
    if n > MAX_INSN_LEN:
        raise AbiError(f"INST_EMUL insn_len is {n}; at most {MAX_INSN_LEN}")
    _reserved(insn[n:], f"INST_EMUL insn bytes past insn_len={n}")
    if reason not in _REASONS:
        raise AbiError(f"unknown InstEmulReason {reason}")
    return InstEmulExit(rip, insn[:n], _REASONS[reason])


# SHUTDOWN payload: reason u16, reserved[30].
_SHUTDOWN_FMT = "H30s"
_SHUTDOWN_REASONS: Final = {r.value: r for r in ShutdownReason}


def _enc_shutdown(v: ShutdownExit) -> tuple[Any, ...]:
    return (v.reason, _ZERO[:30])


def _dec_shutdown(f: tuple[Any, ...], _: bool) -> ShutdownExit:
    _reserved(f[1], "SHUTDOWN payload")
    if f[0] not in _SHUTDOWN_REASONS:
        raise AbiError(f"unknown ShutdownReason {f[0]}")
    return ShutdownExit(_SHUTDOWN_REASONS[f[0]])


# MMIO_BATCH payload (exits and fulfillments, version 3): gpa u64, count u32, size u8, is_write u8, df u8,
# reserved[17]; then the data: count * size bytes in a write exit or a read fulfillment, else none.
_MMIO_BATCH_FMT = "QIBBB17s"


def _enc_mmio_batch(v: MmioBatchExit | FulfillMmioBatch) -> tuple[Any, ...]:
    return (v.gpa, v.count, v.size, v.is_write, v.df, _ZERO[:17])


def _batch_length(count: int, size: int, sizes: frozenset[int]) -> int:
    return count * size if size in sizes and 1 <= count <= MAX_BATCH else 0


def _mmio_batch_data(carried_when_write: bool) -> Callable[[tuple[Any, ...]], int]:
    def length(f: tuple[Any, ...]) -> int:
        return _batch_length(f[1], f[2], MMIO_SIZES) if f[3] == carried_when_write else 0

    return length


def _dec_mmio_batch_exit(f: tuple[Any, ...], _: bool) -> MmioBatchExit:
    gpa, count, size, is_write, df, rsvd, data = f
    _reserved(rsvd, "MMIO_BATCH payload")
    return MmioBatchExit(gpa, size, count, _bool(is_write, "is_write"), _bool(df, "df"), data)


def _dec_mmio_batch_entry(f: tuple[Any, ...], exit_consistent: bool) -> FulfillMmioBatch:
    gpa, count, size, is_write, df, rsvd, data = f
    _reserved(rsvd, "MMIO_BATCH payload")
    return FulfillMmioBatch(
        gpa, size, count, _bool(is_write, "is_write"), _bool(df, "df"), data, exit_consistent
    )


# INOUT_BATCH payload (version 3): port u16, size u8, is_in u8, count u32, reserved[24]; then the data:
# count * size bytes in an OUT exit or an IN fulfillment, else none.
_INOUT_BATCH_FMT = "HBBI24s"


def _enc_inout_batch(v: InoutBatchExit | FulfillInoutBatch) -> tuple[Any, ...]:
    return (v.port, v.size, v.is_in, v.count, _ZERO[:24])


def _inout_batch_data(carried_when_in: bool) -> Callable[[tuple[Any, ...]], int]:
    def length(f: tuple[Any, ...]) -> int:
        return _batch_length(f[3], f[1], IO_SIZES) if f[2] == carried_when_in else 0

    return length


def _dec_inout_batch_exit(f: tuple[Any, ...], _: bool) -> InoutBatchExit:
    port, size, is_in, count, rsvd, data = f
    _reserved(rsvd, "INOUT_BATCH payload")
    return InoutBatchExit(port, size, count, _bool(is_in, "is_in"), data)


def _dec_inout_batch_entry(f: tuple[Any, ...], exit_consistent: bool) -> FulfillInoutBatch:
    port, size, is_in, count, rsvd, data = f
    _reserved(rsvd, "INOUT_BATCH payload")
    return FulfillInoutBatch(port, size, count, _bool(is_in, "is_in"), data, exit_consistent)


def _batch_data(v: MmioBatchExit | InoutBatchExit | FulfillMmioBatch | FulfillInoutBatch) -> bytes:
    return v.data


# Kinds without fields: the whole payload is reserved.
_EMPTY_FMT = f"{PAYLOAD_SIZE}s"


def _enc_empty(_: object) -> tuple[Any, ...]:
    return (_ZERO,)


def _dec_empty_entry(cls: Callable[[bool], T]) -> Callable[[tuple[Any, ...], bool], T]:
    def dec(f: tuple[Any, ...], exit_consistent: bool) -> T:
        _reserved(f[0], f"{getattr(cls, '__name__', '?')} payload")
        return cls(exit_consistent)

    return dec


def _dec_empty_exit(cls: Callable[[], T]) -> Callable[[tuple[Any, ...], bool], T]:
    def dec(f: tuple[Any, ...], _: bool) -> T:
        _reserved(f[0], f"{getattr(cls, '__name__', '?')} payload")
        return cls()

    return dec


_EXIT_CODECS: Final[tuple[_Codec[Any], ...]] = (
    _codec(MmioExit, _MMIO_FMT, _enc_mmio, _dec_mmio_exit),
    _codec(InoutExit, _INOUT_FMT, _enc_inout, _dec_inout_exit),
    _codec(InstEmulExit, _INST_FMT, _enc_inst, _dec_inst),
    _codec(HltExit, _EMPTY_FMT, _enc_empty, _dec_empty_exit(HltExit)),
    _codec(ShutdownExit, _SHUTDOWN_FMT, _enc_shutdown, _dec_shutdown),
    _codec(SuspendedExit, _EMPTY_FMT, _enc_empty, _dec_empty_exit(SuspendedExit)),
    _codec(
        MmioBatchExit,
        _MMIO_BATCH_FMT,
        _enc_mmio_batch,
        _dec_mmio_batch_exit,
        since=3,
        data_length=_mmio_batch_data(carried_when_write=True),
        data=_batch_data,
    ),
    _codec(
        InoutBatchExit,
        _INOUT_BATCH_FMT,
        _enc_inout_batch,
        _dec_inout_batch_exit,
        since=3,
        data_length=_inout_batch_data(carried_when_in=False),
        data=_batch_data,
    ),
)
_ENTRY_CODECS: Final[tuple[_Codec[Any], ...]] = (
    _codec(Default, _EMPTY_FMT, _enc_empty, _dec_empty_entry(Default)),
    _codec(FulfillMmio, _MMIO_FMT, _enc_mmio, _dec_mmio_entry),
    _codec(FulfillInout, _INOUT_FMT, _enc_inout, _dec_inout_entry),
    _codec(Discard, _EMPTY_FMT, _enc_empty, _dec_empty_entry(Discard)),
    _codec(
        FulfillMmioBatch,
        _MMIO_BATCH_FMT,
        _enc_mmio_batch,
        _dec_mmio_batch_entry,
        since=3,
        data_length=_mmio_batch_data(carried_when_write=False),
        data=_batch_data,
    ),
    _codec(
        FulfillInoutBatch,
        _INOUT_BATCH_FMT,
        _enc_inout_batch,
        _dec_inout_batch_entry,
        since=3,
        data_length=_inout_batch_data(carried_when_in=True),
        data=_batch_data,
    ),
)

# Lookup tables built once from the rows above: by type for packing, by kind code for unpacking.
_EXIT_BY_TYPE: Final = {c.cls: c for c in _EXIT_CODECS}
_EXIT_BY_KIND: Final = {c.kind: c for c in _EXIT_CODECS}
_ENTRY_BY_TYPE: Final = {c.cls: c for c in _ENTRY_CODECS}
_ENTRY_BY_KIND: Final = {c.kind: c for c in _ENTRY_CODECS}
assert set(_EXIT_BY_KIND) == set(ExitKind) and set(_ENTRY_BY_KIND) == set(EntryKind)


def _pack(codec: _Codec[Any], magic: bytes, flags: int, value: object, version: int) -> bytes:
    if version not in ABI_VERSIONS:
        raise AbiError(f"ABI version {version} is not one of {ABI_VERSIONS}")
    if version < codec.since:
        raise AbiError(f"{codec.cls.__name__} needs ABI version {codec.since}; the peer reads {version}")
    record = codec.layout.pack(magic, version, codec.kind, flags, 0, *codec.encode(value))
    return record if codec.data is None else record + codec.data(value)


def _unpack(
    data: object,
    magic: bytes,
    what: str,
    by_kind: dict[int, _Codec[Any]],
    flag_mask: int,
    versions: tuple[int, ...],
) -> Any:
    if type(data) is bytes:
        raw = data
    elif isinstance(data, bytes | bytearray | memoryview):  # a subclass's own len() is not trusted
        try:
            raw = bytes(data)
        except (ValueError, TypeError) as e:  # e.g. a released memoryview
            raise AbiError(f"{what} record: unreadable buffer ({e})") from None
    else:
        raise AbiError(f"{what} record must be bytes-like, not {type(data).__name__}")
    if len(raw) < RECORD_SIZE:
        raise AbiError(f"{what} record is {len(raw)} bytes; expected {RECORD_SIZE}")
    got_magic, version, kind, flags, reserved = _HEADER.unpack_from(raw)
    if got_magic != magic:
        raise AbiError(f"{what} record has magic {got_magic!r}; expected {magic!r}")
    if version not in versions or version not in ABI_VERSIONS:
        raise AbiError(f"{what} record has ABI version {version}; this reader takes {versions}")
    codec = by_kind.get(kind)
    if codec is None or version < codec.since:
        raise AbiError(f"{what} record has unknown kind {kind} (ABI version {version})")
    if flags & ~flag_mask:
        raise AbiError(f"{what} record sets reserved flag bits {flags & ~flag_mask:#x}")
    if reserved:
        raise AbiError(f"{what} record sets the reserved header word ({reserved:#x})")
    fields = codec.layout.unpack_from(raw)[len(_HEADER_FMT) - 1 :]
    length = RECORD_SIZE if codec.data_length is None else RECORD_SIZE + codec.data_length(fields)
    if len(raw) != length:
        raise AbiError(f"{what} record is {len(raw)} bytes; expected {length}")
    if codec.data_length is not None:
        fields += (raw[RECORD_SIZE:],)
    return codec.decode(fields, bool(flags & EntryFlags.EXIT_CONSISTENT))


def pack_exit(exit: VmExit, version: int = ABI_VERSION) -> bytes:
    """Encode an exit as one RECORD_SIZE-byte record (a batch: followed by its data) in `version`, the
    one the reader speaks: AbiError for a kind that version does not have."""
    codec = _EXIT_BY_TYPE.get(type(exit))
    if codec is None:
        raise TypeError(f"pack_exit needs a VmExit, not {type(exit).__name__}")
    return _pack(codec, EXIT_MAGIC, 0, exit, version)


def unpack_exit(data: Buffer, versions: tuple[int, ...] = ABI_VERSIONS) -> VmExit:
    """Decode one exit record written in one of `versions`; any malformed or invalid input raises
    AbiError and nothing else."""
    result: VmExit = _unpack(data, EXIT_MAGIC, "exit", _EXIT_BY_KIND, 0, versions)
    return result


def pack_entry(entry: VmEntry, version: int = ABI_VERSION) -> bytes:
    """Encode an entry as one RECORD_SIZE-byte record (a batch: followed by its data) in `version`."""
    codec = _ENTRY_BY_TYPE.get(type(entry))
    if codec is None:
        raise TypeError(f"pack_entry needs a VmEntry, not {type(entry).__name__}")
    flags = EntryFlags.EXIT_CONSISTENT if entry.exit_consistent else 0
    return _pack(codec, ENTRY_MAGIC, flags, entry, version)


def unpack_entry(data: Buffer, versions: tuple[int, ...] = ABI_VERSIONS) -> VmEntry:
    """Decode one entry record written in one of `versions`; any malformed or invalid input raises
    AbiError and nothing else."""
    flags = int(EntryFlags.EXIT_CONSISTENT)
    result: VmEntry = _unpack(data, ENTRY_MAGIC, "entry", _ENTRY_BY_KIND, flags, versions)
    return result
