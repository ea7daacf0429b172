"""The PC's ACPI tables: found the way guests look for them, every checksum right, the MADT complete."""

from __future__ import annotations

import struct

import pytest

from vmmio.images.acpi import build_tables, madt
from vmmio.pc import ACPI_BASE, BIOS_HOLE, LAPIC_BASE, PcMachine, pc_layout


def _scan(mem: bytes, lo: int) -> int:
    """The RSDP search of Linux's acpi_find_root_pointer: 16-byte steps, signature and checksum."""
    for off in range(0, len(mem) - 20, 16):
        if mem[off : off + 8] == b"RSD PTR " and sum(mem[off : off + 20]) % 256 == 0:
            return lo + off
    raise AssertionError("no RSDP")


def _table(mem: bytes, lo: int, addr: int) -> tuple[bytes, bytes]:
    sig, length = struct.unpack_from("<4sI", mem, addr - lo)
    body = mem[addr - lo : addr - lo + length]
    assert sum(body) % 256 == 0, f"{sig!r} checksum"
    return sig, body


def test_a_pc_guest_finds_the_madt_by_the_bios_area_scan() -> None:
    machine = PcMachine(pc_layout(16 << 20), cpus=2)
    lo, hi = 0xE_0000, 0x10_0000
    mem = machine.vm.memory.read(lo, hi - lo)
    rsdp = _scan(mem, lo)
    assert rsdp == ACPI_BASE
    (rsdt_at,) = struct.unpack_from("<I", mem, rsdp - lo + 16)
    sig, rsdt = _table(mem, lo, rsdt_at)
    assert sig == b"RSDT" and len(rsdt) == 40
    (madt_at,) = struct.unpack_from("<I", rsdt, 36)
    sig, body = _table(mem, lo, madt_at)
    assert sig == b"APIC"
    assert struct.unpack_from("<II", body, 36) == (LAPIC_BASE, 1)  # address, PCAT_COMPAT
    entries = [struct.unpack_from("<BBBBI", body, off) for off in range(44, len(body), 8)]
    assert entries == [(0, 8, 0, 0, 1), (0, 8, 1, 1, 1)]  # one enabled local APIC per CPU


def test_the_bios_hole_is_reserved_in_the_memory_map() -> None:
    layout = PcMachine(pc_layout(16 << 20)).memory_layout()
    base, size = BIOS_HOLE
    assert (base, size, 2) in layout.memory_map()
    assert all(not (b < base + size and base < b + s) for b, s in layout.usable)


def test_tables_refuse_what_they_cannot_describe() -> None:
    with pytest.raises(ValueError):
        build_tables(ACPI_BASE + 8, LAPIC_BASE)
    with pytest.raises(ValueError):
        madt(LAPIC_BASE, 0)
