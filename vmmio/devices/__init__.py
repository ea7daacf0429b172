"""Userspace device models. A device is `read(offset, size)` and `write(offset, size, value)`."""

from vmmio.devices.base import AddressMap, Device
from vmmio.devices.debug_exit import DebugExit, GuestExit
from vmmio.devices.testdev import MemoryDevice
from vmmio.devices.uart import Uart16550

__all__ = ["AddressMap", "DebugExit", "Device", "GuestExit", "MemoryDevice", "Uart16550"]
