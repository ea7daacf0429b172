"""QEMU's firmware configuration device, I/O port interface: what a test kernel asks its VMM.

Port 0x510 selects an item (a 16-bit write); each byte read from port 0x511 returns the item's next
byte, and 0 past its end or for an item that does not exist. kvm-unit-tests reads FW_CFG_NB_CPUS (u16),
FW_CFG_RAM_SIZE (u64) and FW_CFG_MAX_RAM (0x11, which QEMU does not have: 0 means no limit) this way.

Only the traditional interface: FW_CFG_ID says so (bit 0 without the DMA bit), so there is no DMA
address register at 0x514, and data writes are ignored (QEMU dropped them in 2.4). Choices for accesses
QEMU rejects: a data read wider than a byte returns that many item bytes, first in the lowest byte; a
selector write must be at least 16 bits wide (a byte write to port 0x510 is a data write, as in QEMU);
a read of port 0x510 returns 0.
"""

from __future__ import annotations

import struct

from vmmio.devices.lanes import MAX_LANES

FW_CFG_PORT = 0x510
FW_CFG_SPAN = 2
SELECTOR = 0  # offset of the 16-bit selector
DATA = 1  # offset of the data byte

FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020
FW_CFG_WRITE_CHANNEL = 0x4000  # ignored in a selector: no item is writable
FW_CFG_ARCH_LOCAL = 0x8000  # x86's own items (ACPI tables, e820, ...) live above this

SIGNATURE = b"QEMU"
ID_TRADITIONAL = 0x1
FILE_NAME_BYTES = 56


class FwCfg:
    """The item store and its two ports. Map the device at port 0x510."""

    def __init__(self, ram_size: int = 0, cpus: int = 1, max_cpus: int | None = None) -> None:
        self.items: dict[int, bytes] = {}
        self.files: list[tuple[str, int]] = []  # (name, key) in the order added
        self.key = FW_CFG_SIGNATURE
        self.position = 0
        self.add(FW_CFG_SIGNATURE, SIGNATURE)
        self.add(FW_CFG_ID, struct.pack("<I", ID_TRADITIONAL))
        self.add(FW_CFG_RAM_SIZE, struct.pack("<Q", ram_size))
        self.add(FW_CFG_NB_CPUS, struct.pack("<H", cpus))
        self.add(FW_CFG_MAX_CPUS, struct.pack("<H", cpus if max_cpus is None else max_cpus))
        self._write_directory()

    def add(self, key: int, data: bytes) -> None:
        """Set item `key` (replacing any item of that key)."""
        self.items[key & ~FW_CFG_WRITE_CHANNEL] = bytes(data)

    def add_file(self, name: str, data: bytes) -> int:
        """Add a named item, listed in FW_CFG_FILE_DIR; returns the key it got."""
        encoded = name.encode()
        if len(encoded) >= FILE_NAME_BYTES:
            raise ValueError(f"fw_cfg file name {name!r} is longer than {FILE_NAME_BYTES - 1} bytes")
        key = FW_CFG_FILE_FIRST + len(self.files)
        self.files.append((name, key))
        self.add(key, data)
        self._write_directory()
        return key

    def _write_directory(self) -> None:
        """The file directory: a big-endian count, then size, key and name per file (as QEMU lays it)."""
        entries = b"".join(
            struct.pack(">IHH56s", len(self.items[key]), key, 0, name.encode()) for name, key in self.files
        )
        self.items[FW_CFG_FILE_DIR] = struct.pack(">I", len(self.files)) + entries

    def select(self, key: int) -> None:
        self.key, self.position = key & ~FW_CFG_WRITE_CHANNEL, 0

    def read(self, offset: int, size: int) -> int:
        if offset != DATA:
            return 0
        count = min(max(size, 0), MAX_LANES)
        data = self.items.get(self.key, b"")[self.position : self.position + count]
        self.position += count
        return int.from_bytes(data, "little")

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == SELECTOR and size >= 2:
            self.select(value & 0xFFFF)
