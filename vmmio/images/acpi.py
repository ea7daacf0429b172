"""The ACPI tables a PC's firmware leaves in its BIOS area, as far as a guest needs them to find its CPUs.

An RSDP (ACPI 1.0 form, found by the 16-byte-aligned scan of 0xE0000-0xFFFFF that Linux and
kvm-unit-tests do), an RSDT and a MADT naming one local APIC per CPU with the PCAT_COMPAT flag (a
dual 8259 is present; no I/O APIC entry, so legacy interrupts stay on the 8259 through LINT0). Linux
without MP-table support (Debian's kernels) enables its local APIC only when a MADT says it is there.
No FADT or DSDT: there is no ACPI hardware and no AML to interpret, and Linux carries on without them
(it reports that it cannot load the namespace and runs with the boot tables alone).
"""

from __future__ import annotations

import struct

RSDP_SIGNATURE = b"RSD PTR "
OEM_ID = b"VMMIO "
OEM_TABLE_ID = b"VMMIOPC "
CREATOR_ID = b"VMIO"
SDT_HEADER = struct.Struct("<4sIBB6s8sI4sI")  # signature, length, revision, checksum, OEM ids, creator
RSDP = struct.Struct("<8sB6sBI")  # signature, checksum, OEM id, revision 0, RSDT address
MADT_PCAT_COMPAT = 1 << 0
MADT_LAPIC = struct.Struct("<BBBBI")  # type 0, length 8, ACPI processor UID, APIC ID, flags
LAPIC_ENABLED = 1 << 0
ALIGN = 16


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes `data` sum to zero modulo 256 (its own slot holding 0)."""
    return -sum(data) & 0xFF


def _sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    table = bytearray(
        SDT_HEADER.pack(
            signature, SDT_HEADER.size + len(body), revision, 0, OEM_ID, OEM_TABLE_ID, 1, CREATOR_ID, 1
        )
        + body
    )
    table[9] = checksum(table)
    return bytes(table)


def madt(lapic_base: int, cpus: int) -> bytes:
    """The MADT ("APIC"): the local APIC's address, PCAT_COMPAT, one enabled local APIC per CPU."""
    if not 1 <= cpus <= 255:
        raise ValueError(f"cpus must be 1..255, not {cpus}")
    entries = b"".join(MADT_LAPIC.pack(0, MADT_LAPIC.size, n, n, LAPIC_ENABLED) for n in range(cpus))
    return _sdt(b"APIC", 1, struct.pack("<II", lapic_base, MADT_PCAT_COMPAT) + entries)


def build_tables(base: int, lapic_base: int, cpus: int = 1) -> bytes:
    """RSDP at `base` (16-byte aligned, below 4 GiB), then the RSDT and the MADT it points to."""
    if base % ALIGN or not 0 <= base < 1 << 32:
        raise ValueError(f"ACPI tables need a 16-byte aligned base below 4 GiB, not {base:#x}")
    rsdt_at = base + RSDP.size + (-RSDP.size % ALIGN)
    body = madt(lapic_base, cpus)
    rsdt_size = SDT_HEADER.size + 4
    madt_at = rsdt_at + rsdt_size + (-rsdt_size % ALIGN)
    rsdt = _sdt(b"RSDT", 1, struct.pack("<I", madt_at))
    rsdp = bytearray(RSDP.pack(RSDP_SIGNATURE, 0, OEM_ID, 0, rsdt_at))
    rsdp[8] = checksum(rsdp)
    out = bytearray(madt_at - base + len(body))
    out[: len(rsdp)] = rsdp
    out[rsdt_at - base : rsdt_at - base + len(rsdt)] = rsdt
    out[madt_at - base :] = body
    return bytes(out)


__all__ = ["build_tables", "checksum", "madt"]
