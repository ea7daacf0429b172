"""fw_cfg over I/O ports: the items kvm-unit-tests reads, streaming, the file directory, odd accesses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given

from devices.helpers import FUZZ, Op, ops, run_ops
from vmmio.devices.fw_cfg import (
    DATA,
    FW_CFG_FILE_DIR,
    FW_CFG_ID,
    FW_CFG_MAX_CPUS,
    FW_CFG_NB_CPUS,
    FW_CFG_RAM_SIZE,
    FW_CFG_SIGNATURE,
    SELECTOR,
    FwCfg,
)


def read_item(device: FwCfg, key: int, length: int) -> bytes:
    """As kvm-unit-tests does: a 16-bit selector write, then byte reads of the data port."""
    device.write(SELECTOR, 2, key)
    return bytes(device.read(DATA, 1) for _ in range(length))


@pytest.mark.parametrize(
    ("key", "content"),
    [
        (FW_CFG_SIGNATURE, b"QEMU"),
        (FW_CFG_ID, b"\x01\x00\x00\x00"),  # traditional interface, no DMA
        (FW_CFG_RAM_SIZE, struct.pack("<Q", 3 << 30)),
        (FW_CFG_NB_CPUS, b"\x02\x00"),
        (FW_CFG_MAX_CPUS, b"\x04\x00"),
        (FW_CFG_FILE_DIR, b"\x00\x00\x00\x00"),  # no files: a big-endian count of 0
        (0x0011, b""),  # kvm-unit-tests' FW_CFG_MAX_RAM: absent, reads 0 (no limit)
    ],
    ids=["signature", "id", "ram-size", "nb-cpus", "max-cpus", "file-dir", "max-ram"],
)
def test_standard_items(key: int, content: bytes) -> None:
    device = FwCfg(ram_size=3 << 30, cpus=2, max_cpus=4)
    assert read_item(device, key, len(content) + 2) == content + b"\x00\x00"  # past the end: 0


def test_selecting_again_restarts_the_item() -> None:
    device = FwCfg()
    assert read_item(device, FW_CFG_SIGNATURE, 2) == b"QE"
    assert read_item(device, FW_CFG_SIGNATURE, 4) == b"QEMU"


def test_added_items_and_the_file_directory() -> None:
    device = FwCfg()
    device.add(0x8003, b"\xaa\xbb")
    e820_key = device.add_file("etc/e820", bytes(20))
    boot_key = device.add_file("bootorder", b"/pci@i0cf8/\x00")
    assert read_item(device, 0x8003, 2) == b"\xaa\xbb"
    directory = read_item(device, FW_CFG_FILE_DIR, 4 + 2 * 64)
    (count,) = struct.unpack(">I", directory[:4])
    entries = [struct.unpack(">IHH56s", directory[4 + 64 * i : 4 + 64 * (i + 1)]) for i in range(count)]
    assert [(size, key, name.rstrip(b"\x00")) for size, key, _, name in entries] == [
        (20, e820_key, b"etc/e820"),
        (12, boot_key, b"bootorder"),
    ]
    assert (e820_key, boot_key) == (0x20, 0x21)


def test_file_names_must_fit_the_directory() -> None:
    with pytest.raises(ValueError):
        FwCfg().add_file("x" * 56, b"")


def test_wide_data_reads_stream_bytes_lowest_first() -> None:
    device = FwCfg()
    device.write(SELECTOR, 2, FW_CFG_SIGNATURE)
    assert device.read(DATA, 4) == int.from_bytes(b"QEMU", "little")
    assert device.read(DATA, 2) == 0


@pytest.mark.parametrize(
    ("offset", "size"), [(SELECTOR, 1), (DATA, 1), (DATA, 2)], ids=["byte-at-selector", "data", "wide-data"]
)
def test_only_a_wide_write_to_the_selector_selects(offset: int, size: int) -> None:
    device = FwCfg()
    device.write(SELECTOR, 2, FW_CFG_SIGNATURE)
    device.write(offset, size, FW_CFG_NB_CPUS)
    assert device.read(DATA, 1) == ord("Q")


def test_the_write_channel_bit_selects_the_same_item() -> None:
    assert read_item(FwCfg(), 0x4000 | FW_CFG_SIGNATURE, 4) == b"QEMU"


@FUZZ
@given(program=ops(1))
def test_hostile_accesses_never_raise(program: list[Op]) -> None:
    run_ops((FwCfg(ram_size=1 << 30),), program)
