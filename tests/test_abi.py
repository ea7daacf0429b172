"""The boundary records: validation, the pinned binary layout, and pack/unpack symmetry.

The exact-bytes tests are the executable copy of docs/abi.md: a change that breaks one of them breaks
every out-of-process device model, so it needs a version bump and a doc update, not a test edit.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vmmio.abi import (
    ABI_VERSION,
    ABI_VERSIONS,
    ENTRY_MAGIC,
    EXIT_MAGIC,
    HEADER_SIZE,
    MAX_INSN_LEN,
    PAGE_SIZE,
    RECORD_SIZE,
    AbiError,
    Default,
    Discard,
    EntryFlags,
    EntryKind,
    ExitKind,
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

U64_MAX = 2**64 - 1
LAST_PAGE = 2**64 - PAGE_SIZE

EXIT_TYPES: list[type] = [
    MmioExit,
    InoutExit,
    InstEmulExit,
    HltExit,
    ShutdownExit,
    SuspendedExit,
    MmioBatchExit,
    InoutBatchExit,
]
ENTRY_TYPES: list[type] = [Default, FulfillMmio, FulfillInout, Discard, FulfillMmioBatch, FulfillInoutBatch]
BATCHES = (MmioBatchExit, InoutBatchExit, FulfillMmioBatch, FulfillInoutBatch)  # ABI version 3 only


def _hex(*parts: str) -> bytes:
    """Hand-written record: hex fields separated by spaces or '|', checked to be one whole record."""
    raw = bytes.fromhex("".join(parts).replace("|", "").replace(" ", ""))
    assert len(raw) == RECORD_SIZE, len(raw)
    return raw


def z(n: int) -> str:
    return "00" * n


def _any(value: object) -> Any:
    """A wrongly typed argument, on purpose: the runtime checks are what is under test."""
    return value


# --- round trips ------------------------------------------------------------------------------------

EXIT_ROWS: list[VmExit] = [
    MmioExit(0, 1, False, 0),
    MmioExit(0xFEE0_0000, 4, True, 0xFFFF_FFFF),
    MmioExit(0xFFF, 1, True, 0xFF),  # last byte of a page
    MmioExit(0xFF8, 8, False, 0),  # last qword of a page
    MmioExit(0x1FFE, 2, True, 0xBEEF),
    MmioExit(U64_MAX, 1, False, 0),  # top of the address space
    MmioExit(U64_MAX - 7, 8, True, U64_MAX),
    InoutExit(0, 1, True, 0),
    InoutExit(0x3F8, 1, False, 0x41),
    InoutExit(0xCFC, 4, False, 0xFFFF_FFFF),
    InoutExit(0xFFFF, 2, True, 0),
    InoutExit(0xFFFF, 4, False, 0x8000_0001),
    InstEmulExit(0, b"", InstEmulReason.FETCH_FAILED),
    InstEmulExit(0xFFF0, b"\x0f\x0b", InstEmulReason.NOT_EMULATED),
    InstEmulExit(U64_MAX, bytes(range(15)), InstEmulReason.UNDECODABLE),
    InstEmulExit(0x1000, b"\x00\x00", InstEmulReason.GPA_MISMATCH),  # trailing zeros are real bytes
    InstEmulExit(0x7C00, b"\xf3\xa4", InstEmulReason.UNSUPPORTED_MODE),
    InstEmulExit(0x40_0000, b"\x8b\x00", InstEmulReason.TRANSLATION_FAILED),
    HltExit(),
    ShutdownExit(),
    SuspendedExit(),
    MmioBatchExit(0x1000, 1, 4096, True, False, bytes(range(256)) * 16),  # a whole page
    MmioBatchExit(0x1FFF, 1, 4096, False, True, b""),  # downwards from the last byte
    MmioBatchExit(0xFEE0_0FF8, 8, 2, True, True, bytes(range(16))),
    MmioBatchExit(LAST_PAGE, 4, 1, False, False, b""),
    InoutBatchExit(0x1F0, 2, 256, True, b""),
    InoutBatchExit(0xFFFF, 4, 3, False, bytes(range(12))),
    InoutBatchExit(0, 1, 4096, False, bytes(4096)),
]

ENTRY_ROWS: list[VmEntry] = [
    Default(),
    Default(exit_consistent=True),
    FulfillMmio(0, 1, False, 0),
    FulfillMmio(0xFEE0_0030, 4, False, 0x0005_0014, exit_consistent=True),
    FulfillMmio(0xFF8, 8, True, U64_MAX),
    FulfillMmio(U64_MAX, 1, False, 0xFF),
    FulfillInout(0x60, 1, True, 0xFA),
    FulfillInout(0xFFFF, 4, False, 0xFFFF_FFFF, exit_consistent=True),
    FulfillInout(0, 2, True, 0),
    Discard(),
    Discard(exit_consistent=True),
    FulfillMmioBatch(0x1000, 1, 4096, True, False, b""),
    FulfillMmioBatch(0x1FFF, 1, 7, False, True, bytes(7), exit_consistent=True),
    FulfillMmioBatch(0xFF8, 8, 1, False, False, b"\xff" * 8),
    FulfillInoutBatch(0x1F0, 2, 2, True, b"\x01\x02\x03\x04"),
    FulfillInoutBatch(0x3F8, 1, 4096, False, b"", exit_consistent=True),
]


@pytest.mark.parametrize("value", EXIT_ROWS, ids=repr)
def test_exit_round_trip(value: VmExit) -> None:
    raw = pack_exit(value)
    assert len(raw) == RECORD_SIZE + (len(value.data) if isinstance(value, BATCHES) else 0)
    assert unpack_exit(raw) == value
    assert type(unpack_exit(raw)) is type(value)
    assert unpack_exit(bytearray(raw)) == value
    assert unpack_exit(memoryview(raw)) == value


@pytest.mark.parametrize("value", ENTRY_ROWS, ids=repr)
def test_entry_round_trip(value: VmEntry) -> None:
    raw = pack_entry(value)
    assert len(raw) == RECORD_SIZE + (len(value.data) if isinstance(value, BATCHES) else 0)
    assert unpack_entry(raw) == value
    assert type(unpack_entry(raw)) is type(value)


def test_every_kind_is_covered_by_the_round_trip_rows() -> None:
    assert {type(e) for e in EXIT_ROWS} == set(EXIT_TYPES)
    assert {type(e) for e in ENTRY_ROWS} == set(ENTRY_TYPES)
    assert {t.KIND for t in EXIT_TYPES} == set(ExitKind)  # type: ignore[attr-defined]
    assert {t.KIND for t in ENTRY_TYPES} == set(EntryKind)  # type: ignore[attr-defined]
    assert set(InstEmulReason) <= {e.reason for e in EXIT_ROWS if isinstance(e, InstEmulExit)}


# --- the pinned layout (docs/abi.md) ----------------------------------------------------------------

EXIT_HDR = "564d4558 | 0300"  # b"VMEX", version 3
ENTRY_HDR = "564d454e | 0300"  # b"VMEN", version 3

EXIT_BYTES: list[tuple[VmExit, bytes]] = [
    (
        MmioExit(0xFEBF_F004, 4, True, 0xDEAD_BEEF),
        _hex(
            EXIT_HDR,
            "0100 | 00000000 | 00000000",  # kind MMIO, flags, reserved
            "04f0bffe00000000 | efbeadde00000000 | 04 | 01",  # gpa, data, size, is_write
            z(14),
        ),
    ),
    (
        MmioExit(0x1234_5678_9ABC_DFF8, 8, False, 0),
        _hex(EXIT_HDR, "0100 | 00000000 | 00000000", "f8dfbc9a78563412 | 0000000000000000 | 08 | 00", z(14)),
    ),
    (
        InoutExit(0x3F8, 1, False, 0x41),
        _hex(EXIT_HDR, "0200 | 00000000 | 00000000", "f803 | 01 | 00 | 41000000", z(24)),
    ),
    (
        InoutExit(0xCFC, 4, True, 0),
        _hex(EXIT_HDR, "0200 | 00000000 | 00000000", "fc0c | 04 | 01 | 00000000", z(24)),
    ),
    (
        InstEmulExit(0xFFFF_FFFF_8000_1000, b"\x0f\x0b", InstEmulReason.NOT_EMULATED),
        _hex(
            EXIT_HDR,
            "0300 | 00000000 | 00000000",
            "00100080ffffffff | 0200 | 02",  # rip, reason, insn_len
            z(5),
            "0f0b" + z(13),  # insn[15], zero past insn_len
            z(1),
        ),
    ),
    (HltExit(), _hex(EXIT_HDR, "0400 | 00000000 | 00000000", z(32))),
    (ShutdownExit(), _hex(EXIT_HDR, "0500 | 00000000 | 00000000", "0100", z(30))),  # reason TRIPLE_FAULT
    (
        ShutdownExit(ShutdownReason.UNSUPPORTED_DELIVERY),
        _hex(EXIT_HDR, "0500 | 00000000 | 00000000", "0200", z(30)),
    ),
    (SuspendedExit(), _hex(EXIT_HDR, "0600 | 00000000 | 00000000", z(32))),
    (
        MmioBatchExit(0xFEBF_F010, 4, 3, True, True, bytes.fromhex("0a000000 0b000000 0c000000")),
        _hex(
            EXIT_HDR,
            "0700 | 00000000 | 00000000",  # kind MMIO_BATCH
            "10f0bffe00000000 | 03000000 | 04 | 01 | 01",  # gpa, count, size, is_write, df
            z(17),
        )
        + bytes.fromhex("0a000000 0b000000 0c000000"),  # the data, in access order
    ),
    (
        MmioBatchExit(0x2000, 2, 0x800, False, False, b""),
        _hex(EXIT_HDR, "0700 | 00000000 | 00000000", "0020000000000000 | 00080000 | 02 | 00 | 00", z(17)),
    ),
    (
        InoutBatchExit(0x1F0, 2, 2, False, bytes.fromhex("3412 7856")),
        _hex(EXIT_HDR, "0800 | 00000000 | 00000000", "f001 | 02 | 00 | 02000000", z(24))
        + bytes.fromhex("34127856"),
    ),
    (
        InoutBatchExit(0x60, 1, 16, True, b""),
        _hex(EXIT_HDR, "0800 | 00000000 | 00000000", "6000 | 01 | 01 | 10000000", z(24)),
    ),
]

ENTRY_BYTES: list[tuple[VmEntry, bytes]] = [
    (Default(), _hex(ENTRY_HDR, "0100 | 00000000 | 00000000", z(32))),
    (Default(exit_consistent=True), _hex(ENTRY_HDR, "0100 | 01000000 | 00000000", z(32))),
    (
        FulfillMmio(0xFEBF_F004, 4, False, 0x0102_0304, exit_consistent=True),
        _hex(
            ENTRY_HDR,
            "0200 | 01000000 | 00000000",
            "04f0bffe00000000 | 0403020100000000 | 04 | 00",
            z(14),
        ),
    ),
    (
        FulfillInout(0x71, 1, True, 0x7F),
        _hex(ENTRY_HDR, "0300 | 00000000 | 00000000", "7100 | 01 | 01 | 7f000000", z(24)),
    ),
    (Discard(), _hex(ENTRY_HDR, "0400 | 00000000 | 00000000", z(32))),
    (
        FulfillMmioBatch(0x2000, 2, 2, False, False, bytes.fromhex("3412 7856"), exit_consistent=True),
        _hex(ENTRY_HDR, "0500 | 01000000 | 00000000", "0020000000000000 | 02000000 | 02 | 00 | 00", z(17))
        + bytes.fromhex("34127856"),
    ),
    (
        FulfillMmioBatch(0xFEBF_F010, 4, 1, True, True, b""),  # one element of three written
        _hex(ENTRY_HDR, "0500 | 00000000 | 00000000", "10f0bffe00000000 | 01000000 | 04 | 01 | 01", z(17)),
    ),
    (
        FulfillInoutBatch(0x60, 1, 3, True, b"abc"),
        _hex(ENTRY_HDR, "0600 | 00000000 | 00000000", "6000 | 01 | 01 | 03000000", z(24)) + b"abc",
    ),
    (
        FulfillInoutBatch(0x1F0, 2, 2, False, b""),
        _hex(ENTRY_HDR, "0600 | 00000000 | 00000000", "f001 | 02 | 00 | 02000000", z(24)),
    ),
]


@pytest.mark.parametrize(("value", "raw"), EXIT_BYTES, ids=[repr(v) for v, _ in EXIT_BYTES])
def test_exit_exact_bytes(value: VmExit, raw: bytes) -> None:
    assert pack_exit(value) == raw
    assert unpack_exit(raw) == value


@pytest.mark.parametrize(("value", "raw"), ENTRY_BYTES, ids=[repr(v) for v, _ in ENTRY_BYTES])
def test_entry_exact_bytes(value: VmEntry, raw: bytes) -> None:
    assert pack_entry(value) == raw
    assert unpack_entry(raw) == value


def _version_2(raw: bytes) -> bytes:
    return raw[:4] + b"\x02\x00" + raw[6:]


@pytest.mark.parametrize(("value", "raw"), [*EXIT_BYTES, *ENTRY_BYTES], ids=repr)
def test_version_2_is_version_3_without_the_batches(value: VmExit | VmEntry, raw: bytes) -> None:
    """A peer that reads version 2 gets the same records, the version field aside; batches need 3."""
    pack: Callable[..., bytes] = pack_exit if raw[:4] == EXIT_MAGIC else pack_entry
    unpack: Callable[..., object] = unpack_exit if raw[:4] == EXIT_MAGIC else unpack_entry
    if isinstance(value, BATCHES):
        with pytest.raises(AbiError, match="needs ABI version 3; the peer reads 2"):
            pack(value, 2)
        with pytest.raises(AbiError, match=r"unknown kind [5-8] \(ABI version 2\)"):
            unpack(_version_2(raw))
        return
    assert pack(value, 2) == _version_2(raw)
    assert unpack(_version_2(raw)) == value
    assert unpack(_version_2(raw), (2,)) == value
    with pytest.raises(AbiError, match="ABI version 3; this reader takes \\(2,\\)"):
        unpack(raw, (2,))


def test_pack_refuses_unknown_versions() -> None:
    for version in (0, 1, 4):
        with pytest.raises(AbiError, match=f"ABI version {version} is not one of"):
            pack_exit(HltExit(), version)


def test_layout_constants() -> None:
    assert (HEADER_SIZE, RECORD_SIZE, ABI_VERSION, ABI_VERSIONS, MAX_INSN_LEN) == (16, 48, 3, (2, 3), 15)
    assert (EXIT_MAGIC, ENTRY_MAGIC) == (b"VMEX", b"VMEN")
    assert [int(k) for k in ExitKind] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [int(k) for k in EntryKind] == [1, 2, 3, 4, 5, 6]
    assert [int(r) for r in InstEmulReason] == [1, 2, 3, 4, 5, 6]
    assert int(EntryFlags.EXIT_CONSISTENT) == 1


# --- validation on construction ---------------------------------------------------------------------

Build = Callable[[], object]

INVALID_VALUES: list[tuple[str, Build, str]] = [
    # MMIO requests and fulfillments share the rules
    ("mmio-size-0", lambda: MmioExit(0, 0, False, 0), "size = 0 is not one of 1, 2, 4, 8"),
    ("mmio-size-3", lambda: MmioExit(0, 3, False, 0), "size = 3"),
    ("mmio-size-16", lambda: FulfillMmio(0, 16, False, 0), "size = 16"),
    ("mmio-size-float", lambda: MmioExit(0, _any(4.0), False, 0), "size must be an int"),
    ("mmio-gpa-neg", lambda: MmioExit(-1, 1, False, 0), "gpa = -0x1 is outside"),
    ("mmio-gpa-2^64", lambda: MmioExit(2**64, 1, False, 0), "gpa = 0x10000000000000000"),
    ("mmio-gpa-bool", lambda: MmioExit(True, 1, False, 0), "gpa must be an int, not bool"),
    ("mmio-cross-2", lambda: MmioExit(0xFFF, 2, False, 0), "crosses a 4 KiB page boundary"),
    ("mmio-cross-8", lambda: FulfillMmio(0x1FFC, 8, True, 0), "[0x1ffc, 0x2004) crosses"),
    ("mmio-cross-top", lambda: MmioExit(U64_MAX - 3, 8, False, 0), "crosses a 4 KiB page"),
    ("mmio-data-wide-1", lambda: MmioExit(0, 1, True, 0x100), "data = 0x100 does not fit in 1 byte"),
    ("mmio-data-wide-4", lambda: FulfillMmio(0, 4, False, 2**32), "does not fit in 4 byte"),
    ("mmio-data-neg", lambda: FulfillMmio(0, 8, False, -1), "data = -0x1 is outside"),
    ("mmio-data-2^64", lambda: FulfillMmio(0, 8, False, 2**64), "outside the unsigned 64-bit"),
    ("mmio-read-data", lambda: MmioExit(0, 4, False, 1), "a read carries no data"),
    ("mmio-write-int", lambda: MmioExit(0, 4, _any(1), 0), "is_write must be a bool"),
    ("mmio-data-str", lambda: MmioExit(0, 4, True, _any("1")), "data must be an int, not str"),
    ("mmio-consistent-int", lambda: FulfillMmio(0, 1, False, 0, _any(1)), "exit_consistent must be a bool"),
    # port I/O
    ("io-port-neg", lambda: InoutExit(-1, 1, True, 0), "port = -0x1 is outside"),
    ("io-port-65536", lambda: InoutExit(0x10000, 1, True, 0), "outside the unsigned 16-bit"),
    ("io-size-8", lambda: InoutExit(0, 8, True, 0), "size = 8 is not one of 1, 2, 4"),
    ("io-size-3", lambda: FulfillInout(0, 3, True, 0), "size = 3"),
    ("io-data-wide", lambda: FulfillInout(0, 2, True, 0x10000), "does not fit in 2 byte"),
    ("io-in-data", lambda: InoutExit(0x60, 1, True, 5), "an IN carries no data"),
    ("io-is-in-int", lambda: FulfillInout(0, 1, _any(0), 0), "is_in must be a bool"),
    # instruction emulation
    ("inst-16-bytes", lambda: InstEmulExit(0, bytes(16), InstEmulReason.UNDECODABLE), "16 bytes; at most 15"),
    ("inst-rip-neg", lambda: InstEmulExit(-1, b"", InstEmulReason.UNDECODABLE), "rip = -0x1"),
    ("inst-rip-2^64", lambda: InstEmulExit(2**64, b"", InstEmulReason.UNDECODABLE), "rip"),
    (
        "inst-bytearray",
        lambda: InstEmulExit(0, _any(bytearray(1)), InstEmulReason.UNDECODABLE),
        "insn must be bytes",
    ),
    ("inst-reason-int", lambda: InstEmulExit(0, b"", _any(1)), "reason must be an InstEmulReason"),
    # entries without payload
    ("default-int", lambda: Default(_any(1)), "Default.exit_consistent must be a bool"),
    ("discard-none", lambda: Discard(_any(None)), "Discard.exit_consistent must be a bool"),
    # batched runs
    ("batch-count-0", lambda: MmioBatchExit(0, 1, 0, False, False, b""), "count = 0 is not 1..4096"),
    ("batch-count-page", lambda: MmioBatchExit(0, 8, 513, False, False, b""), "count = 513 is not 1..512"),
    ("batch-count-neg", lambda: InoutBatchExit(0, 1, -1, True, b""), "count = -0x1 is outside"),
    ("batch-cross-up", lambda: MmioBatchExit(0xFFC, 4, 2, False, False, b""), "leave their 4 KiB page"),
    ("batch-cross-down", lambda: MmioBatchExit(0x1004, 4, 3, False, True, b""), "(downwards) leave"),
    ("batch-below-zero", lambda: MmioBatchExit(2, 2, 3, False, True, b""), "leave their 4 KiB page"),
    ("batch-size-3", lambda: MmioBatchExit(0, 3, 1, False, False, b""), "size = 3"),
    ("batch-io-size-8", lambda: InoutBatchExit(0, 8, 1, True, b""), "size = 8 is not one of 1, 2, 4"),
    ("batch-write-short", lambda: MmioBatchExit(0, 2, 2, True, False, b"abc"), "data is 3 bytes"),
    ("batch-read-data", lambda: MmioBatchExit(0, 1, 1, False, False, b"a"), "data is 1 bytes"),
    ("batch-in-data", lambda: InoutBatchExit(0, 1, 1, True, b"a"), "data is 1 bytes"),
    ("batch-data-type", lambda: InoutBatchExit(0, 1, 1, False, _any(bytearray(1))), "data must be bytes"),
    ("batch-df-int", lambda: MmioBatchExit(0, 1, 1, False, _any(1), b""), "df must be a bool"),
    ("batch-fulfil-read-short", lambda: FulfillMmioBatch(0, 4, 2, False, False, bytes(4)), "data is 4 bytes"),
    ("batch-fulfil-write-data", lambda: FulfillInoutBatch(0, 1, 1, False, b"a"), "data is 1 bytes"),
    ("batch-consistent", lambda: FulfillInoutBatch(0, 1, 1, False, b"", _any(0)), "exit_consistent"),
]


@pytest.mark.parametrize(
    ("build", "message"), [r[1:] for r in INVALID_VALUES], ids=[r[0] for r in INVALID_VALUES]
)
def test_invalid_values_raise_abi_error(build: Build, message: str) -> None:
    with pytest.raises(AbiError) as info:
        build()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [*EXIT_ROWS[:3], *ENTRY_ROWS[:3]], ids=repr)
def test_records_are_frozen_and_slotted(value: Any) -> None:
    assert not hasattr(value, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, dataclasses.fields(value)[0].name, 1)
    assert hash(value) == hash(dataclasses.replace(value))


def test_replace_revalidates() -> None:
    with pytest.raises(AbiError, match="crosses"):
        dataclasses.replace(MmioExit(0xFF8, 8, False, 0), gpa=0xFF9)


# --- fulfillment helpers and the matching rule ------------------------------------------------------


def test_mmio_fulfill() -> None:
    read = MmioExit(0xFEE0_0020, 4, False, 0)
    assert read.fulfill(0x1400_0000) == FulfillMmio(0xFEE0_0020, 4, False, 0x1400_0000)
    assert read.fulfill(7, exit_consistent=True) == FulfillMmio(0xFEE0_0020, 4, False, 7, True)
    write = MmioExit(0xFEE0_00B0, 4, True, 0x1234)
    assert write.fulfill() == FulfillMmio(0xFEE0_00B0, 4, True, 0x1234)  # written data echoed
    assert write.fulfill(0x1234) == write.fulfill()
    for req in (read, write):
        assert req.matches(req.fulfill(0 if not req.is_write else None))


def test_inout_fulfill() -> None:
    port_in = InoutExit(0x3FD, 1, True, 0)
    assert port_in.fulfill(0x60) == FulfillInout(0x3FD, 1, True, 0x60)
    port_out = InoutExit(0x3F8, 1, False, 0x41)
    assert port_out.fulfill(exit_consistent=True) == FulfillInout(0x3F8, 1, False, 0x41, True)
    assert port_in.matches(port_in.fulfill(0xFF))
    assert port_out.matches(port_out.fulfill())


FULFIL_ERRORS: list[tuple[str, Build, str]] = [
    ("mmio-read-no-data", lambda: MmioExit(0, 4, False, 0).fulfill(), "a read needs the value read"),
    ("mmio-read-too-wide", lambda: MmioExit(0, 1, False, 0).fulfill(0x100), "does not fit in 1 byte"),
    ("mmio-write-other-data", lambda: MmioExit(0, 4, True, 5).fulfill(6), "echoes the written data 0x5"),
    ("io-in-no-data", lambda: InoutExit(0x60, 1, True, 0).fulfill(), "an IN needs the value read"),
    ("io-in-too-wide", lambda: InoutExit(0x60, 2, True, 0).fulfill(2**16), "does not fit in 2 byte"),
    ("io-out-other-data", lambda: InoutExit(0x80, 1, False, 1).fulfill(2), "echoes the written data 0x1"),
]


@pytest.mark.parametrize(
    ("build", "message"), [r[1:] for r in FULFIL_ERRORS], ids=[r[0] for r in FULFIL_ERRORS]
)
def test_fulfill_errors(build: Build, message: str) -> None:
    with pytest.raises(AbiError) as info:
        build()
    assert message in str(info.value)


def test_batch_fulfill_and_matching() -> None:
    write = MmioBatchExit(0x1000, 2, 3, True, False, bytes(6))
    assert write.fulfill() == FulfillMmioBatch(0x1000, 2, 3, True, False, b"")
    assert write.fulfill(count=1, exit_consistent=True) == FulfillMmioBatch(
        0x1000, 2, 1, True, False, b"", True
    )
    read = MmioBatchExit(0x1FFE, 2, 3, False, True, b"")
    assert read.fulfill(b"abcd") == FulfillMmioBatch(0x1FFE, 2, 2, False, True, b"abcd")  # two of three
    assert [read.element_gpa(i) for i in range(3)] == [0x1FFE, 0x1FFC, 0x1FFA]
    for req, answer in ((write, write.fulfill(count=2)), (read, read.fulfill(bytes(6)))):
        assert req.matches(answer)
    port_in = InoutBatchExit(0x60, 1, 4, True, b"")
    assert port_in.fulfill(b"xy") == FulfillInoutBatch(0x60, 1, 2, True, b"xy")
    port_out = InoutBatchExit(0x80, 4, 2, False, bytes(8))
    assert port_out.matches(port_out.fulfill(count=1))
    # The rule: same run, between one and `count` elements.
    assert not write.matches(FulfillMmioBatch(0x1000, 2, 4, True, False, b""))  # more than asked
    assert not write.matches(FulfillMmioBatch(0x1002, 2, 1, True, False, b""))
    assert not write.matches(FulfillMmioBatch(0x1000, 2, 1, True, True, b""))  # the other direction
    assert not write.matches(FulfillMmio(0x1000, 2, True, 0))
    assert not read.matches(FulfillMmioBatch(0x1FFE, 2, 1, True, True, b""))
    assert not port_in.matches(FulfillInoutBatch(0x61, 1, 1, True, b"a"))
    assert not port_in.matches(FulfillInout(0x60, 1, True, 0))
    assert not port_out.matches(Default())


BATCH_FULFIL_ERRORS: list[tuple[str, Build, str]] = [
    ("write-with-data", lambda: MmioBatchExit(0, 1, 1, True, False, b"a").fulfill(b"a"), "carries no data"),
    ("read-no-data", lambda: MmioBatchExit(0, 1, 1, False, False, b"").fulfill(), "needs the elements"),
    ("read-count-other", lambda: MmioBatchExit(0, 1, 2, False, False, b"").fulfill(b"a", count=2), "count 2"),
    ("read-none", lambda: MmioBatchExit(0, 1, 2, False, False, b"").fulfill(b""), "count = 0"),
    ("read-ragged", lambda: MmioBatchExit(0, 2, 2, False, False, b"").fulfill(b"abc"), "data is 3 bytes"),
    ("in-no-data", lambda: InoutBatchExit(0, 1, 1, True, b"").fulfill(), "an IN needs the elements"),
    ("out-with-data", lambda: InoutBatchExit(0, 1, 1, False, b"a").fulfill(b"a"), "carries no data"),
    ("out-count-0", lambda: InoutBatchExit(0, 1, 1, False, b"a").fulfill(count=0), "count = 0"),
]


@pytest.mark.parametrize(
    ("build", "message"), [r[1:] for r in BATCH_FULFIL_ERRORS], ids=[r[0] for r in BATCH_FULFIL_ERRORS]
)
def test_batch_fulfill_errors(build: Build, message: str) -> None:
    with pytest.raises(AbiError) as info:
        build()
    assert message in str(info.value)


MMIO_REQ = MmioExit(0x1000, 4, True, 0xAB)
IO_REQ = InoutExit(0x70, 1, False, 0x8F)
MISMATCHES: list[tuple[str, VmExit, VmEntry]] = [
    ("mmio-gpa", MMIO_REQ, FulfillMmio(0x1004, 4, True, 0xAB)),
    ("mmio-size", MMIO_REQ, FulfillMmio(0x1000, 2, True, 0xAB)),
    ("mmio-direction", MMIO_REQ, FulfillMmio(0x1000, 4, False, 0xAB)),
    ("mmio-write-data", MMIO_REQ, FulfillMmio(0x1000, 4, True, 0xAC)),
    ("mmio-wrong-kind", MMIO_REQ, FulfillInout(0x1000 & 0xFFFF, 4, False, 0xAB)),
    ("mmio-default", MMIO_REQ, Default()),
    ("mmio-discard", MMIO_REQ, Discard()),
    ("io-port", IO_REQ, FulfillInout(0x71, 1, False, 0x8F)),
    ("io-size", IO_REQ, FulfillInout(0x70, 2, False, 0x8F)),
    ("io-direction", IO_REQ, FulfillInout(0x70, 1, True, 0x8F)),
    ("io-out-data", IO_REQ, FulfillInout(0x70, 1, False, 0x0F)),
    ("io-wrong-kind", IO_REQ, FulfillMmio(0x70, 1, False, 0x8F)),
    ("io-default", IO_REQ, Default()),
]


@pytest.mark.parametrize(("request_", "entry"), [r[1:] for r in MISMATCHES], ids=[r[0] for r in MISMATCHES])
def test_mismatched_fulfillment_does_not_match(request_: MmioExit | InoutExit, entry: VmEntry) -> None:
    assert not request_.matches(entry)


def test_read_fulfillment_matches_whatever_value_was_read() -> None:
    req = MmioExit(0x2000, 8, False, 0)
    assert req.matches(FulfillMmio(0x2000, 8, False, U64_MAX))
    assert req.matches(FulfillMmio(0x2000, 8, False, 0, exit_consistent=True))


# --- decoding rejects malformed records -------------------------------------------------------------


def _patch(raw: bytes, offset: int, new: bytes) -> bytes:
    return raw[:offset] + new + raw[offset + len(new) :]


MMIO_RAW = pack_exit(MmioExit(0x1000, 4, True, 0xAB))
IO_RAW = pack_exit(InoutExit(0x70, 1, False, 0x8F))
INST_RAW = pack_exit(InstEmulExit(0x1000, b"\x8b\x00", InstEmulReason.NOT_EMULATED))
HLT_RAW = pack_exit(HltExit())
DEFAULT_RAW = pack_entry(Default())
FMMIO_RAW = pack_entry(FulfillMmio(0x1000, 4, False, 0xAB))
FIO_RAW = pack_entry(FulfillInout(0x70, 1, True, 0x8F))
DISCARD_RAW = pack_entry(Discard())
MBATCH_RAW = pack_exit(MmioBatchExit(0x1000, 4, 2, False, False, b""))  # a read: no data
MBATCH_W_RAW = pack_exit(MmioBatchExit(0x1000, 4, 2, True, False, bytes(8)))
FMBATCH_RAW = pack_entry(FulfillMmioBatch(0x1000, 4, 2, False, False, bytes(8)))
IBATCH_RAW = pack_exit(InoutBatchExit(0x60, 1, 2, True, b""))
FIBATCH_RAW = pack_entry(FulfillInoutBatch(0x60, 1, 2, True, b"ab"))

Unpack = Callable[[bytes], object]
BAD_RECORDS: list[tuple[str, Unpack, object, str]] = [
    ("empty", unpack_exit, b"", "is 0 bytes; expected 48"),
    ("short", unpack_exit, MMIO_RAW[:-1], "is 47 bytes"),
    ("long", unpack_entry, DEFAULT_RAW + b"\0", "is 49 bytes"),
    ("two-records", unpack_exit, MMIO_RAW + MMIO_RAW, "is 96 bytes"),
    ("str", unpack_exit, "VMEX" * 12, "must be bytes-like, not str"),
    ("none", unpack_entry, None, "must be bytes-like, not NoneType"),
    ("int", unpack_entry, 48, "must be bytes-like, not int"),
    ("zeroed", unpack_exit, bytes(48), "magic b'\\x00\\x00\\x00\\x00'"),
    ("entry-as-exit", unpack_exit, DEFAULT_RAW, "magic b'VMEN'; expected b'VMEX'"),
    ("exit-as-entry", unpack_entry, MMIO_RAW, "magic b'VMEX'; expected b'VMEN'"),
    ("magic-case", unpack_exit, _patch(MMIO_RAW, 0, b"vmex"), "magic b'vmex'"),
    ("version-0", unpack_exit, _patch(MMIO_RAW, 4, b"\0\0"), "ABI version 0; this reader takes (2, 3)"),
    ("version-1", unpack_entry, _patch(DEFAULT_RAW, 4, b"\1\0"), "ABI version 1"),
    ("version-4", unpack_entry, _patch(DEFAULT_RAW, 4, b"\4\0"), "ABI version 4"),
    ("version-big-endian", unpack_exit, _patch(HLT_RAW, 4, b"\0\1"), "ABI version 256"),
    ("exit-kind-0", unpack_exit, _patch(HLT_RAW, 6, b"\0\0"), "unknown kind 0"),
    ("exit-kind-9", unpack_exit, _patch(HLT_RAW, 6, b"\x09\0"), "unknown kind 9"),
    ("exit-kind-ffff", unpack_exit, _patch(HLT_RAW, 6, b"\xff\xff"), "unknown kind 65535"),
    ("entry-kind-0", unpack_entry, _patch(DEFAULT_RAW, 6, b"\0\0"), "unknown kind 0"),
    ("entry-kind-7", unpack_entry, _patch(DEFAULT_RAW, 6, b"\7\0"), "unknown kind 7"),
    ("exit-flag-0", unpack_exit, _patch(MMIO_RAW, 8, b"\1"), "reserved flag bits 0x1"),
    ("exit-flag-31", unpack_exit, _patch(HLT_RAW, 11, b"\x80"), "reserved flag bits 0x80000000"),
    ("entry-flag-1", unpack_entry, _patch(DEFAULT_RAW, 8, b"\2"), "reserved flag bits 0x2"),
    ("entry-flag-31", unpack_entry, _patch(FMMIO_RAW, 8, b"\1\0\0\x80"), "reserved flag bits 0x80000000"),
    ("header-reserved", unpack_exit, _patch(MMIO_RAW, 12, b"\0\0\0\1"), "reserved header word (0x1000000)"),
    ("entry-header-reserved", unpack_entry, _patch(DISCARD_RAW, 15, b"\1"), "reserved header word"),
    # MMIO payload
    ("mmio-reserved-first", unpack_exit, _patch(MMIO_RAW, 34, b"\1"), "reserved bytes set in MMIO payload"),
    ("mmio-reserved-last", unpack_entry, _patch(FMMIO_RAW, 47, b"\1"), "reserved bytes set in MMIO payload"),
    ("mmio-is-write-2", unpack_exit, _patch(MMIO_RAW, 33, b"\2"), "is_write byte is 0x2"),
    ("mmio-is-write-ff", unpack_entry, _patch(FMMIO_RAW, 33, b"\xff"), "is_write byte is 0xff"),
    ("mmio-size-3", unpack_exit, _patch(MMIO_RAW, 32, b"\3"), "MmioExit.size = 3"),
    ("mmio-size-0", unpack_entry, _patch(FMMIO_RAW, 32, b"\0"), "FulfillMmio.size = 0"),
    ("mmio-cross-page", unpack_exit, _patch(MMIO_RAW, 16, b"\xfe\x0f"), "crosses a 4 KiB page"),
    ("mmio-data-wide", unpack_exit, _patch(MMIO_RAW, 28, b"\1"), "does not fit in 4 byte"),
    ("mmio-read-with-data", unpack_exit, _patch(MMIO_RAW, 33, b"\0"), "a read carries no data"),
    # INOUT payload
    ("io-reserved", unpack_exit, _patch(IO_RAW, 24, b"\1"), "reserved bytes set in INOUT payload"),
    ("io-reserved-last", unpack_entry, _patch(FIO_RAW, 47, b"\x80"), "reserved bytes set in INOUT payload"),
    ("io-is-in-2", unpack_exit, _patch(IO_RAW, 19, b"\2"), "is_in byte is 0x2"),
    ("io-size-8", unpack_entry, _patch(FIO_RAW, 18, b"\x08"), "FulfillInout.size = 8"),
    ("io-data-wide", unpack_exit, _patch(IO_RAW, 21, b"\1"), "does not fit in 1 byte"),
    ("io-in-with-data", unpack_exit, _patch(IO_RAW, 19, b"\1"), "an IN carries no data"),
    # INST_EMUL payload
    ("inst-len-16", unpack_exit, _patch(INST_RAW, 26, b"\x10"), "insn_len is 16; at most 15"),
    ("inst-len-ff", unpack_exit, _patch(INST_RAW, 26, b"\xff"), "insn_len is 255"),
    ("inst-pad-after-len", unpack_exit, _patch(INST_RAW, 34, b"\x90"), "insn bytes past insn_len=2"),
    ("inst-reserved-mid", unpack_exit, _patch(INST_RAW, 27, b"\1"), "reserved bytes set in INST_EMUL"),
    ("inst-reserved-last", unpack_exit, _patch(INST_RAW, 47, b"\1"), "reserved bytes set in INST_EMUL"),
    ("inst-reason-0", unpack_exit, _patch(INST_RAW, 24, b"\0\0"), "unknown InstEmulReason 0"),
    ("inst-reason-7", unpack_exit, _patch(INST_RAW, 24, b"\7\0"), "unknown InstEmulReason 7"),
    # batched runs (version 3): the data follows the record, its length from the fields
    ("batch-in-v2", unpack_exit, _patch(MBATCH_RAW, 4, b"\2\0"), "unknown kind 7 (ABI version 2)"),
    ("batch-data-short", unpack_exit, MBATCH_W_RAW[:-1], "is 55 bytes; expected 56"),
    ("batch-data-long", unpack_entry, FMBATCH_RAW + b"\0", "is 57 bytes; expected 56"),
    ("batch-read-with-data", unpack_exit, MBATCH_RAW + bytes(8), "is 56 bytes; expected 48"),
    ("batch-count-0", unpack_exit, _patch(MBATCH_RAW, 24, b"\0"), "count = 0 is not 1..1024"),
    ("batch-count-big", unpack_exit, _patch(MBATCH_RAW, 24, b"\x01\x04"), "count = 1025 is not 1..1024"),
    ("batch-cross", unpack_exit, _patch(MBATCH_RAW, 16, b"\xfc\x1f"), "leave their 4 KiB page"),
    ("batch-size-3", unpack_exit, _patch(MBATCH_RAW, 28, b"\3"), "MmioBatchExit.size = 3"),
    ("batch-is-write-2", unpack_exit, _patch(MBATCH_RAW, 29, b"\2"), "is_write byte is 0x2"),
    ("batch-df-2", unpack_entry, _patch(FMBATCH_RAW, 30, b"\2"), "df byte is 0x2"),
    ("batch-reserved", unpack_exit, _patch(MBATCH_RAW, 31, b"\1"), "reserved bytes set in MMIO_BATCH"),
    ("batch-reserved-last", unpack_entry, _patch(FMBATCH_RAW, 47, b"\1"), "reserved bytes set in MMIO_BATCH"),
    ("io-batch-reserved", unpack_exit, _patch(IBATCH_RAW, 24, b"\1"), "reserved bytes set in INOUT_BATCH"),
    ("io-batch-is-in-2", unpack_exit, _patch(IBATCH_RAW, 19, b"\2"), "is_in byte is 0x2"),
    ("io-batch-size-8", unpack_exit, _patch(IBATCH_RAW, 18, b"\x08"), "InoutBatchExit.size = 8"),
    ("io-batch-count-0", unpack_exit, _patch(IBATCH_RAW, 20, b"\0"), "count = 0 is not 1..4096"),
    ("io-batch-data-short", unpack_entry, FIBATCH_RAW[:-1], "is 49 bytes; expected 50"),
    # payload-less kinds: every payload byte is reserved
    ("hlt-payload", unpack_exit, _patch(HLT_RAW, 16, b"\1"), "reserved bytes set in HltExit payload"),
    ("shutdown-payload", unpack_exit, _patch(pack_exit(ShutdownExit()), 47, b"\1"), "SHUTDOWN payload"),
    (
        "shutdown-reason-0",
        unpack_exit,
        _patch(pack_exit(ShutdownExit()), 16, b"\0"),
        "unknown ShutdownReason 0",
    ),
    (
        "shutdown-reason-3",
        unpack_exit,
        _patch(pack_exit(ShutdownExit()), 16, b"\3"),
        "unknown ShutdownReason 3",
    ),
    (
        "suspended-payload",
        unpack_exit,
        _patch(pack_exit(SuspendedExit()), 30, b"\1"),
        "SuspendedExit payload",
    ),
    (
        "default-payload",
        unpack_entry,
        _patch(DEFAULT_RAW, 40, b"\1"),
        "reserved bytes set in Default payload",
    ),
    (
        "discard-payload",
        unpack_entry,
        _patch(DISCARD_RAW, 16, b"\xff"),
        "reserved bytes set in Discard payload",
    ),
]


@pytest.mark.parametrize(
    ("unpack", "data", "message"), [r[1:] for r in BAD_RECORDS], ids=[r[0] for r in BAD_RECORDS]
)
def test_unpack_rejects(unpack: Unpack, data: bytes, message: str) -> None:
    with pytest.raises(AbiError) as info:
        unpack(data)
    assert message in str(info.value)


def test_unpack_rejects_released_buffer() -> None:
    view = memoryview(bytearray(MMIO_RAW))
    view.release()
    with pytest.raises(AbiError, match="unreadable buffer"):
        unpack_exit(view)


def test_pack_rejects_the_wrong_family() -> None:
    with pytest.raises(TypeError, match="needs a VmExit, not Default"):
        pack_exit(Default())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a VmEntry, not MmioExit"):
        pack_entry(MmioExit(0, 1, False, 0))  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------------


@st.composite
def mmio_fields(draw: st.DrawFn) -> tuple[int, int, bool, int]:
    size = draw(st.sampled_from([1, 2, 4, 8]))
    page = draw(st.integers(0, LAST_PAGE // PAGE_SIZE) | st.sampled_from([0, LAST_PAGE // PAGE_SIZE]))
    offset = draw(st.integers(0, PAGE_SIZE - size) | st.just(PAGE_SIZE - size))
    data = draw(st.integers(0, 2 ** (8 * size) - 1) | st.just(2 ** (8 * size) - 1))
    return page * PAGE_SIZE + offset, size, draw(st.booleans()), data


@st.composite
def inout_fields(draw: st.DrawFn) -> tuple[int, int, bool, int]:
    size = draw(st.sampled_from([1, 2, 4]))
    data = draw(st.integers(0, 2 ** (8 * size) - 1))
    return draw(st.integers(0, 0xFFFF)), size, draw(st.booleans()), data


@st.composite
def mmio_exits(draw: st.DrawFn) -> MmioExit:
    gpa, size, is_write, data = draw(mmio_fields())
    return MmioExit(gpa, size, is_write, data if is_write else 0)


@st.composite
def inout_exits(draw: st.DrawFn) -> InoutExit:
    port, size, is_in, data = draw(inout_fields())
    return InoutExit(port, size, is_in, 0 if is_in else data)


@st.composite
def mmio_runs(draw: st.DrawFn) -> tuple[int, int, int, bool, bool]:
    """gpa, size, count, is_write, df of a batched MMIO run within one page."""
    size = draw(st.sampled_from([1, 2, 4, 8]))
    count = draw(st.integers(1, PAGE_SIZE // size) | st.sampled_from([1, PAGE_SIZE // size]))
    page = draw(st.integers(0, LAST_PAGE // PAGE_SIZE))
    low = page * PAGE_SIZE + draw(st.integers(0, PAGE_SIZE - count * size))
    df = draw(st.booleans())
    return (low + (count - 1) * size if df else low), size, count, draw(st.booleans()), df


@st.composite
def batches(draw: st.DrawFn, exit: bool) -> VmExit | VmEntry:
    if draw(st.booleans()):
        gpa, size, count, is_write, df = draw(mmio_runs())
        data = draw(st.binary(min_size=count * size, max_size=count * size)) if is_write == exit else b""
        if exit:
            return MmioBatchExit(gpa, size, count, is_write, df, data)
        return FulfillMmioBatch(gpa, size, count, is_write, df, data, draw(st.booleans()))
    size = draw(st.sampled_from([1, 2, 4]))
    count, is_in, port = (
        draw(st.integers(1, PAGE_SIZE // size)),
        draw(st.booleans()),
        draw(st.integers(0, 0xFFFF)),
    )
    data = draw(st.binary(min_size=count * size, max_size=count * size)) if is_in != exit else b""
    if exit:
        return InoutBatchExit(port, size, count, is_in, data)
    return FulfillInoutBatch(port, size, count, is_in, data, draw(st.booleans()))


inst_exits = st.builds(
    InstEmulExit,
    st.integers(0, U64_MAX),
    st.binary(max_size=MAX_INSN_LEN),
    st.sampled_from(InstEmulReason),
)
exits: st.SearchStrategy[VmExit] = st.one_of(
    mmio_exits(),
    inout_exits(),
    inst_exits,
    st.sampled_from(
        [HltExit(), ShutdownExit(), ShutdownExit(ShutdownReason.UNSUPPORTED_DELIVERY), SuspendedExit()]
    ),
    batches(exit=True),
)
entries: st.SearchStrategy[VmEntry] = st.one_of(
    st.builds(Default, st.booleans()),
    st.builds(Discard, st.booleans()),
    st.tuples(mmio_fields(), st.booleans()).map(lambda t: FulfillMmio(*t[0], exit_consistent=t[1])),
    st.tuples(inout_fields(), st.booleans()).map(lambda t: FulfillInout(*t[0], exit_consistent=t[1])),
    batches(exit=False),
)


@given(exits)
def test_property_exit_round_trip(value: VmExit) -> None:
    assert unpack_exit(pack_exit(value)) == value


@given(entries)
def test_property_entry_round_trip(value: VmEntry) -> None:
    assert unpack_entry(pack_entry(value)) == value


@given(mmio_exits())
def test_property_fulfill_matches(req: MmioExit) -> None:
    answer = req.fulfill(None if req.is_write else 2 ** (8 * req.size) - 1)
    assert req.matches(answer)
    assert unpack_entry(pack_entry(answer)) == answer


@st.composite
def _sparse_payloads(draw: st.DrawFn) -> bytes:
    """Mostly-zero payloads: random bytes only where fields live, so decoding often succeeds."""
    raw = bytearray(32)
    for i in draw(st.lists(st.integers(0, 31), max_size=6)):
        raw[i] = draw(st.integers(0, 255) | st.sampled_from([0, 1, 2, 4, 8, 15]))
    return bytes(raw)


@st.composite
def header_guided_records(draw: st.DrawFn) -> bytes:
    """Records whose header is mostly right, so the fuzzing reaches the payload checks."""
    magic = draw(st.sampled_from([EXIT_MAGIC, ENTRY_MAGIC]) | st.binary(min_size=4, max_size=4))
    version = draw(st.sampled_from([ABI_VERSION] * 4 + [0, 1, 2, 4, 0xFFFF]))
    kind = draw(st.integers(0, 9))
    flags = draw(st.sampled_from([0, 0, 1]) | st.integers(0, 2**32 - 1))
    reserved = draw(st.sampled_from([0] * 4) | st.integers(0, 2**32 - 1))
    payload = draw(st.binary(min_size=32, max_size=32) | st.just(bytes(32)) | _sparse_payloads())
    return struct.pack("<4sHHII", magic, version, kind, flags, reserved) + payload


def _version(record: bytes) -> int:
    version: int = struct.unpack_from("<H", record, 4)[0]
    return version


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(exits.map(pack_exit) | entries.map(pack_entry)))
    for _ in range(draw(st.integers(1, 3))):
        raw[draw(st.integers(0, RECORD_SIZE - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


any_bytes = st.one_of(
    st.binary(max_size=2 * RECORD_SIZE),
    st.binary(min_size=RECORD_SIZE, max_size=RECORD_SIZE),
    header_guided_records(),
    mutated_records(),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(any_bytes)
@example(pack_exit(HltExit()))
@example(pack_entry(Default(exit_consistent=True)))
def test_property_unpack_exit_only_raises_abi_error(data: bytes) -> None:
    try:
        value = unpack_exit(data)
    except AbiError:
        return
    assert pack_exit(value, _version(data)) == data  # a record that decodes is canonical, in its version


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(any_bytes)
@example(pack_entry(Discard()))
def test_property_unpack_entry_only_raises_abi_error(data: bytes) -> None:
    try:
        value = unpack_entry(data)
    except AbiError:
        return
    assert pack_entry(value, _version(data)) == data


def test_batch_fulfillments_from_the_exit() -> None:
    """A store is answered with a count, a load with the elements: their number is the count."""
    write = MmioBatchExit(0x1000, 2, 4, True, False, bytes(8))
    assert write.fulfill().count == 4 and write.fulfill(count=3).count == 3
    read = InoutBatchExit(0x60, 1, 4, True, b"")
    answer = read.fulfill(b"abc")
    assert (answer.count, answer.data) == (3, b"abc") and read.matches(answer)
    for bad in (
        lambda: write.fulfill(b"\0\0"),  # a write carries no data
        lambda: MmioBatchExit(0x1000, 2, 4, False, False, b"").fulfill(),  # a read needs data
        lambda: read.fulfill(b"abcd", count=3),  # count and data disagree
        lambda: InoutBatchExit(0x60, 1, 4, False, b"wxyz").fulfill(b"x"),  # an OUT carries no data
    ):
        with pytest.raises(AbiError):
            bad()
