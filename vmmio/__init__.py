"""vmmio: x86 MMIO and port-I/O instruction emulation for virtual machine monitors.

The front door. Everything a VMM needs is importable from here:

    from vmmio import Machine, Vm, Vcpu, MmioExit, InoutExit, FulfillMmio, Default, ...

Names load on first use, so a device model that imports only `vmmio.abi` does not pay for the decoder
tables or the kernel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "vmmio.abi": (
        "AbiError",
        "Capability",
        "Default",
        "Device",
        "Discard",
        "ElementDevice",
        "EntryError",
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
        "ShutdownExit",
        "ShutdownReason",
        "SuspendedExit",
        "VmEntry",
        "VmExit",
        "pack_entry",
        "pack_exit",
        "unpack_entry",
        "unpack_exit",
    ),
    "vmmio.machine": ("Image", "Layout", "Machine", "Mapping", "RunResult"),
    "vmmio.vmm.vm": ("Vm",),
    "vmmio.vmm.vcpu": ("Vcpu", "VcpuBusy"),
    "vmmio.x86.state": (
        "Control",
        "CpuState",
        "Regs",
        "Segment",
        "flat_protected_control",
        "flat_segment",
        "long_mode_control",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from vmmio.abi import (
        AbiError,
        Capability,
        Default,
        Device,
        Discard,
        ElementDevice,
        EntryError,
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
    from vmmio.machine import Image, Layout, Machine, Mapping, RunResult
    from vmmio.vmm.vcpu import Vcpu, VcpuBusy
    from vmmio.vmm.vm import Vm
    from vmmio.x86.state import (
        Control,
        CpuState,
        Regs,
        Segment,
        flat_protected_control,
        flat_segment,
        long_mode_control,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vmmio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "AbiError",
    "Capability",
    "Control",
    "CpuState",
    "Default",
    "Device",
    "Discard",
    "ElementDevice",
    "EntryError",
    "FulfillInout",
    "FulfillInoutBatch",
    "FulfillMmio",
    "FulfillMmioBatch",
    "HltExit",
    "Image",
    "InoutBatchExit",
    "InoutExit",
    "InstEmulExit",
    "InstEmulReason",
    "Layout",
    "Machine",
    "Mapping",
    "MmioBatchExit",
    "MmioExit",
    "Regs",
    "RunResult",
    "Segment",
    "ShutdownExit",
    "ShutdownReason",
    "SuspendedExit",
    "Vcpu",
    "VcpuBusy",
    "Vm",
    "VmEntry",
    "VmExit",
    "flat_protected_control",
    "flat_segment",
    "long_mode_control",
    "pack_entry",
    "pack_exit",
    "unpack_entry",
    "unpack_exit",
]
