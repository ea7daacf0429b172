"""ABI records, packed from valid values of every kind and then damaged: decoding is total and canonical.

Invariant (docs/abi.md, "Decoding rules"): `unpack_exit` and `unpack_entry`, given any buffer, raise
AbiError and nothing else, or return a value of their direction that packs back, in the record's own
ABI version, to exactly the same bytes (48, and a batch's data after them), and never as both. An
undamaged record decodes, in every version that has its kind. Buffers come as bytes,
bytearray, memoryview (a slice of a larger buffer, a strided or re-cast view, a released one) and
bytes subclasses, one of which lies about its length.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import get_args

from fuzz.core import FIXED, Stats, Target, Violation, Weighted
from vmmio.abi import (
    ENTRY_MAGIC,
    EXIT_MAGIC,
    MAX_INSN_LEN,
    RECORD_SIZE,
    AbiError,
    Default,
    Discard,
    FulfillInout,
    FulfillInoutBatch,
    FulfillMmio,
    FulfillMmioBatch,
    HltExit,
    InoutBatchExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioBatchExit,
    MmioExit,
    ShutdownExit,
    ShutdownReason,
    SuspendedExit,
    VmEntry,
    VmExit,
    pack_entry,
    pack_exit,
    unpack_entry,
    unpack_exit,
)

Value = VmExit | VmEntry


class _Bytes(bytes):
    """A bytes subclass: its own methods must not be what the decoder trusts."""


class _LyingBytes(bytes):
    def __len__(self) -> int:
        return RECORD_SIZE


def _strided(raw: bytes) -> memoryview:
    spread = bytearray(2 * len(raw))
    spread[::2] = raw
    return memoryview(spread)[::2]


def _released(raw: bytes) -> memoryview:
    view = memoryview(bytearray(raw))
    view.release()
    return view


def _cast(raw: bytes) -> memoryview:
    view = memoryview(bytearray(raw))
    return view.cast("Q") if len(raw) % 8 == 0 else view.cast("B")


# How the record is handed over: name -> buffer builder (names are what cases and reproducers carry).
WRAPPERS: dict[str, Callable[[bytes], object]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "slice": lambda raw: memoryview(b"\xaa" * 7 + raw + b"\x55" * 9)[7 : 7 + len(raw)],
    "strided": _strided,
    "cast": _cast,
    "released": _released,
    "subclass": _Bytes,
    "lying": _LyingBytes,
}
_READABLE = tuple(w for w in WRAPPERS if w != "released")


@dataclass(frozen=True)
class Case:
    """A record, damaged or not, handed over as `wrapper`."""

    record: bytes
    wrapper: str = field(default="bytes", metadata=FIXED)


@dataclass(frozen=True)
class Packed:
    """A record exactly as pack_exit/pack_entry made it: it must decode (so it is not shrunk)."""

    record: bytes = field(metadata=FIXED)
    wrapper: str = field(default="bytes", metadata=FIXED)


def _u(rng: random.Random, bits: int) -> int:
    return rng.choice((0, 1, (1 << bits) - 1, 1 << (bits - 1), rng.getrandbits(bits)))


def _data(rng: random.Random, size: int) -> int:
    return _u(rng, 8 * size)


def _mmio(rng: random.Random) -> tuple[int, int, bool, int]:
    size = rng.choice((1, 2, 4, 8))
    gpa = _u(rng, 64) & ~0xFFF | rng.randrange(0x1000 - size + 1)
    is_write = rng.random() < 0.5
    return gpa, size, is_write, _data(rng, size)


def _inout(rng: random.Random) -> tuple[int, int, bool, int]:
    size = rng.choice((1, 2, 4))
    return _u(rng, 16), size, rng.random() < 0.5, _data(rng, size)


def _mmio_exit(rng: random.Random) -> Value:
    gpa, size, is_write, data = _mmio(rng)
    return MmioExit(gpa, size, is_write, data if is_write else 0)


def _inout_exit(rng: random.Random) -> Value:
    port, size, is_in, data = _inout(rng)
    return InoutExit(port, size, is_in, 0 if is_in else data)


def _batch(rng: random.Random, size: int) -> int:
    return rng.choice((1, 2, 3, 4096 // size, rng.randint(1, 4096 // size)))


def _mmio_run(rng: random.Random) -> tuple[int, int, int, bool, bool]:
    """gpa, size, count, is_write, df of a batched MMIO run within one page."""
    size = rng.choice((1, 2, 4, 8))
    count = _batch(rng, size)
    df = rng.random() < 0.5
    low = _u(rng, 64) & ~0xFFF | rng.randrange(0x1000 - count * size + 1)
    return (low + (count - 1) * size if df else low), size, count, rng.random() < 0.5, df


def _mmio_batch_exit(rng: random.Random) -> Value:
    gpa, size, count, is_write, df = _mmio_run(rng)
    return MmioBatchExit(gpa, size, count, is_write, df, rng.randbytes(count * size) if is_write else b"")


def _mmio_batch_entry(rng: random.Random) -> Value:
    gpa, size, count, is_write, df = _mmio_run(rng)
    data = b"" if is_write else rng.randbytes(count * size)
    return FulfillMmioBatch(gpa, size, count, is_write, df, data, rng.random() < 0.5)


def _inout_batch(rng: random.Random, exit: bool) -> Value:
    size = rng.choice((1, 2, 4))
    count, is_in = _batch(rng, size), rng.random() < 0.5
    carries = is_in != exit  # an OUT exit, an IN fulfillment
    data = rng.randbytes(count * size) if carries else b""
    if exit:
        return InoutBatchExit(_u(rng, 16), size, count, is_in, data)
    return FulfillInoutBatch(_u(rng, 16), size, count, is_in, data, rng.random() < 0.5)


def _inst_emul(rng: random.Random) -> Value:
    insn = rng.randbytes(rng.randint(0, MAX_INSN_LEN))
    return InstEmulExit(_u(rng, 64), insn, rng.choice(list(InstEmulReason)))


VALUES: Weighted[Callable[[random.Random], Value]] = Weighted(
    (
        (3, _mmio_exit),
        (2, _inout_exit),
        (2, _inst_emul),
        (1, lambda rng: HltExit()),
        (1, lambda rng: ShutdownExit(rng.choice(list(ShutdownReason)))),
        (1, lambda rng: SuspendedExit()),
        (1, lambda rng: Default(rng.random() < 0.5)),
        (3, lambda rng: FulfillMmio(*_mmio(rng), rng.random() < 0.5)),
        (2, lambda rng: FulfillInout(*_inout(rng), rng.random() < 0.5)),
        (1, lambda rng: Discard(rng.random() < 0.5)),
        (2, _mmio_batch_exit),
        (2, _mmio_batch_entry),
        (1, lambda rng: _inout_batch(rng, True)),
        (1, lambda rng: _inout_batch(rng, False)),
    )
)

# Field offsets and widths of the header and every payload layout (docs/abi.md), for targeted stores.
FIELDS = ((0, 4), (4, 2), (6, 2), (8, 4), (12, 4), (16, 8), (16, 2), (18, 1), (19, 1), (20, 4), (24, 8),
          (24, 2), (24, 4), (26, 1), (27, 1), (28, 1), (29, 1), (30, 1), (31, 1), (32, 1), (33, 1),
          (34, 1), (40, 8), (46, 2), (47, 1))  # fmt: skip
INTERESTING = (0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0xFFFF_FFFF, 1 << 63)


def _flip(rng: random.Random, buf: bytearray) -> bytearray:
    i = rng.randrange(len(buf) * 8) if buf else 0
    if buf:
        buf[i // 8] ^= 1 << (i % 8)
    return buf


def _store(rng: random.Random, buf: bytearray) -> bytearray:
    if buf:
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    return buf


def _field(rng: random.Random, buf: bytearray) -> bytearray:
    off, width = rng.choice(FIELDS)
    value = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.getrandbits(8 * width)
    if off + width <= len(buf):
        struct.pack_into(
            {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], buf, off, value & ((1 << (8 * width)) - 1)
        )
    return buf


def _magic(rng: random.Random, buf: bytearray) -> bytearray:
    buf[0:4] = rng.choice((EXIT_MAGIC, ENTRY_MAGIC, b"VMEx", b"\0\0\0\0", rng.randbytes(4)))
    return buf


def _header_word(
    off: int, width: int, values: tuple[int, ...]
) -> Callable[[random.Random, bytearray], bytearray]:
    fmt = {2: "<H", 4: "<I"}[width]

    def mutate(rng: random.Random, buf: bytearray) -> bytearray:
        if len(buf) >= off + width:
            struct.pack_into(
                fmt, buf, off, rng.choice(values) if rng.random() < 0.8 else rng.getrandbits(8 * width)
            )
        return buf

    return mutate


MUTATIONS: Weighted[Callable[[random.Random, bytearray], bytearray]] = Weighted(
    (
        (6, _flip),
        (4, _store),
        (6, _field),
        (1, lambda rng, buf: buf[: rng.randrange(len(buf))] if buf else buf),
        (1, lambda rng, buf: buf + rng.randbytes(rng.randint(1, 16))),
        (2, _magic),
        (2, _header_word(4, 2, (0, 1, 2, 3, 4, 0xFFFF))),  # version
        (3, _header_word(6, 2, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFFFF))),  # kind
        (2, _header_word(8, 4, (0, 1, 2, 3, 0x8000_0000))),  # flags
        (1, lambda rng, buf: buf[:16] + rng.randbytes(32)),  # a random payload
    )
)


def generate(rng: random.Random) -> Case | Packed:
    value = VALUES(rng)(rng)
    batch = isinstance(value, MmioBatchExit | InoutBatchExit | FulfillMmioBatch | FulfillInoutBatch)
    packed = _pack(value, 3 if batch or rng.random() < 0.5 else 2)
    wrapper = rng.choice(_READABLE) if rng.random() < 0.3 else "bytes"
    if rng.random() < 0.1:
        return Packed(packed, wrapper)
    buf = bytearray(packed)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        buf = MUTATIONS(rng)(rng, buf)
    if rng.random() < 0.03:
        wrapper = "released"
    return Case(bytes(buf), wrapper)


def _pack(value: Value, version: int) -> bytes:
    if isinstance(value, VmEntry):
        return pack_entry(value, version)
    return pack_exit(value, version)


def _unpack_exit(buf: object) -> Value:
    return unpack_exit(buf)  # type: ignore[arg-type]  # any object: totality is the point


def _unpack_entry(buf: object) -> Value:
    return unpack_entry(buf)  # type: ignore[arg-type]


_EXITS: tuple[type, ...] = get_args(VmExit)  # every exit and entry type the ABI defines
_ENTRIES: tuple[type, ...] = get_args(VmEntry)
DIRECTIONS: tuple[tuple[str, Callable[[object], Value], tuple[type, ...]], ...] = (
    ("exit", _unpack_exit, _EXITS),
    ("entry", _unpack_entry, _ENTRIES),
)


def check(case: Case | Packed, stats: Stats) -> int:
    decoded = 0
    for name, unpack, kinds in DIRECTIONS:
        buf = WRAPPERS[case.wrapper](case.record)
        start = perf_counter()
        try:
            value = unpack(buf)
        except AbiError:
            stats.time(perf_counter() - start)
            continue
        stats.time(perf_counter() - start)
        decoded += 1
        if case.wrapper == "released":
            raise Violation("released-buffer", f"unpack_{name} read a released memoryview: {value}")
        if type(value) not in kinds:
            raise Violation("wrong-direction", f"unpack_{name} returned {type(value).__name__}")
        again = _pack(value, struct.unpack_from("<H", case.record, 4)[0])  # it decoded: a known version
        if again != case.record:
            raise Violation(
                "not-canonical",
                f"unpack_{name} gave {value}, which packs to {again.hex()}, not {case.record.hex()}",
            )
    if decoded > 1:
        raise Violation("both-directions", "the record decodes as an exit and as an entry")
    if isinstance(case, Packed) and decoded != 1:
        raise Violation("roundtrip", f"a packed record does not decode: {case.record.hex()}")
    stats.notes["decoded" if decoded else "rejected"] += 1
    return 1


TARGET = Target("abi", "record", 100_000, 10_000, generate, check, __name__)
