"""Userspace: image loading (flat, ELF64, ELF32), the address map, devices and the run loop."""

from __future__ import annotations

import struct

import pytest

from vmmio.abi import HltExit, InoutExit, MmioExit, SuspendedExit, VmEntry, VmExit
from vmmio.devices import AddressMap, MemoryDevice, Uart16550
from vmmio.images import ImageError
from vmmio.machine import TESTDEV_MMIO, Machine

# 64-bit: mov ebx, 0xD0000000; mov byte [rbx], 'A'; mov byte [rbx], '\n'; mov al, 3; out 0xf4, al; hlt
CODE64 = bytes.fromhex("bb000000d0c60341c6030ab003e6f4f4")
# 32-bit: mov ebx, 0xD0000000; mov byte [ebx], 'B'; add dword [ebx+0x10010], 5; mov al, 5; out 0xf4, al
CODE32 = bytes.fromhex("bb000000d0c6034283831000010005b005e6f4f4")
ENTRY = 0x20_0000


def elf(code: bytes, bits: int, paddr: int = ENTRY, bss: int = 0x100) -> bytes:
    """A minimal executable ELF with one PT_LOAD segment holding `code` (plus `bss` zeroed bytes)."""
    if bits == 64:
        ehdr = struct.pack(
            "<4sBBBBB7xHHIQQQIHHHHHH",
            b"\x7fELF",
            2,
            1,
            1,
            0,
            0,
            2,
            62,
            1,
            paddr,
            64,
            0,
            0,
            64,
            56,
            1,
            0,
            0,
            0,
        )
        off = 64 + 56
        phdr = struct.pack("<IIQQQQQQ", 1, 5, off, paddr, paddr, len(code), len(code) + bss, 0x1000)
    else:
        ehdr = struct.pack(
            "<4sBBBBB7xHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 0, 2, 3, 1, paddr, 52, 0, 0, 52, 32, 1, 0, 0, 0
        )
        off = 52 + 32
        phdr = struct.pack("<IIIIIIII", 1, off, paddr, paddr, len(code), len(code) + bss, 5, 0x1000)
    return ehdr + phdr + code


def run(image: bytes) -> tuple[int, str, bytes, Machine]:
    out = bytearray()
    m = Machine(uart_sink=out.extend)
    result = m.run(m.vcpu(m.load(image)))
    return result.status, result.reason, bytes(out), m


def test_flat_image_runs_in_64_bit_mode() -> None:
    assert run(CODE64)[:3] == (3, "exit", b"A\n")


def test_elf64_loads_at_its_physical_address_with_zeroed_bss() -> None:
    status, reason, out, m = run(elf(CODE64, 64))
    assert (status, reason, out) == (3, "exit", b"A\n")
    assert m.vm.memory.read(ENTRY, len(CODE64)) == CODE64
    assert m.vm.memory.read(ENTRY + len(CODE64), 0x100) == bytes(0x100)


def test_elf32_runs_in_32_bit_protected_mode() -> None:
    status, reason, out, m = run(elf(CODE32, 32))
    assert (status, reason, out) == (5, "exit", b"B")
    # add dword [ebx+0x10010], 5 on the test device: a read, then a write of the sum.
    assert m.testdev.trace == [(0x10, 4, False, 0), (0x10, 4, True, 5)]


@pytest.mark.parametrize(
    "image",
    [
        b"\x7fELF\x02\x02" + bytes(60),
        elf(CODE64, 64)[:64] + struct.pack("<IIQQQQQQ", 1, 5, 999, 0, 0, 9, 1, 0),
    ],
    ids=["big-endian", "filesz>memsz"],
)
def test_malformed_elf_is_a_clear_error(image: bytes) -> None:
    with pytest.raises(ImageError):
        Machine().load(image)


def test_a_named_file_that_is_no_image_is_refused() -> None:
    with pytest.raises(ImageError, match="unrecognized image format"):
        Machine().load(b"root:x:0:0:root:/root:/bin/bash\n", name="/etc/passwd")
    assert Machine().load(CODE64, name="guest.bin").format == "flat"


def test_loaders_keep_off_the_machines_own_ram() -> None:
    with pytest.raises(ImageError, match="in use by the VMM"):
        Machine().load(elf(CODE64, 64, paddr=0x1000))  # over the page tables


def test_unclaimed_mmio_reads_all_ones_and_ignores_writes() -> None:
    m = Machine()
    assert m.service(MmioExit(0xE000_0000, 4, False, 0)).data == 0xFFFF_FFFF
    assert m.service(MmioExit(0xE000_0000, 4, True, 7)).data == 7
    assert m.service(InoutExit(0x1234, 2, True, 0)).data == 0xFFFF


def test_address_map_is_half_open_and_rejects_overlaps() -> None:
    amap = AddressMap()
    a, b = MemoryDevice(), MemoryDevice()
    amap.add(0x1000, 0x1000, a)
    amap.add(0x2000, 0x1000, b)  # adjacent: fine
    assert amap.find(0x1FFF) == (a, 0xFFF)
    assert amap.find(0x2000) == (b, 0)
    assert amap.find(0x3000) is None
    assert amap.find(0xFFF) is None
    for base, size in [(0x1800, 0x100), (0x0800, 0x1000), (0x2FFF, 2)]:
        with pytest.raises(ValueError, match="overlaps"):
            amap.add(base, size, MemoryDevice())


def test_uart_transmits_and_reports_ready() -> None:
    out = bytearray()
    uart = Uart16550(out.extend)
    assert uart.read(5, 1) & 0x60 == 0x60  # THR empty, transmitter empty
    uart.write(3, 1, 0x80)  # DLAB: offsets 0 and 1 are the divisor
    uart.write(0, 1, 0x0C)
    uart.write(3, 1, 0x03)
    uart.write(0, 1, ord("x"))
    assert bytes(out) == b"x" and uart.divisor == 0x0C
    uart.rx.append(0x41)
    assert uart.read(5, 1) & 1 and uart.read(0, 1) == 0x41


class Script:
    """An ExitSource that replays exits, to test the run loop alone."""

    def __init__(self, exits: list[VmExit]) -> None:
        self.exits = exits
        self.entries: list[VmEntry | None] = []

    def run(self, entry: VmEntry | None = None) -> VmExit:
        self.entries.append(entry)
        return self.exits.pop(0)

    def request_stop(self) -> None:
        self.exits.insert(0, SuspendedExit())


def test_run_loop_answers_each_request_from_its_device() -> None:
    m = Machine()
    m.testdev.data[0:4] = b"\x11\x22\x33\x44"
    script = Script(
        [MmioExit(TESTDEV_MMIO, 4, False, 0), MmioExit(TESTDEV_MMIO + 8, 2, True, 0xBEEF), HltExit()]
    )
    result = m.run(script)
    assert (result.reason, result.exits) == ("hlt", 3)
    fulfills = script.entries[1:]
    assert [getattr(e, "data", None) for e in fulfills] == [0x44332211, 0xBEEF]
    assert m.testdev.data[8:10] == b"\xef\xbe"
