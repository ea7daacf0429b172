"""Userspace device models. A device is `read(offset, size)` and `write(offset, size, value)`."""

from vmmio.devices.base import AddressMap, Device
from vmmio.devices.clock import Clock, HostClock, Timer, VirtualClock
from vmmio.devices.debug_exit import DebugExit, GuestExit
from vmmio.devices.fw_cfg import FwCfg
from vmmio.devices.i8042 import I8042, Port92, ResetRequested
from vmmio.devices.irq import NO_IRQ, IrqLine, IrqSink
from vmmio.devices.lapic import Ipi, LocalApic
from vmmio.devices.pc_testdev import IoRam, PcTestdev
from vmmio.devices.pic import PicPair
from vmmio.devices.pit import Pit8254
from vmmio.devices.rtc import Rtc
from vmmio.devices.testdev import MemoryDevice
from vmmio.devices.uart import Uart16550

__all__ = [
    "I8042",
    "NO_IRQ",
    "AddressMap",
    "Clock",
    "DebugExit",
    "Device",
    "FwCfg",
    "GuestExit",
    "HostClock",
    "IoRam",
    "Ipi",
    "IrqLine",
    "IrqSink",
    "LocalApic",
    "MemoryDevice",
    "PcTestdev",
    "PicPair",
    "Pit8254",
    "Port92",
    "ResetRequested",
    "Rtc",
    "Timer",
    "Uart16550",
    "VirtualClock",
]
