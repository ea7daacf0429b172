"""Guest images parsed and placed as data: ELF32/ELF64, multiboot v1, Linux bzImage, flat binaries.

    plan = load(data, MemoryLayout.simple(32 << 20), name="kernel.elf")   # detect, parse, place
    apply(plan, mem.write)                                                  # write it into RAM
    # then start a vCPU in CPU_STATES[plan.cpu] at plan.entry with plan.regs

This package sits below the machine: it imports nothing else from vmmio and never touches RAM. A
loader returns a `LoadPlan` (chunks to write, entry point, CPU mode and registers); `apply` writes one
through callbacks. Parsing is bounded by the file and the layout: every header field is checked before
use, no loop runs longer than a constant or the file allows, a zero-filled tail is a count rather than a
buffer, and every chunk is checked to lie in usable RAM, clear of the VMM's ranges and of each other.

Every malformed image, impossible placement or unusable option raises `ImageError` (a ValueError) with
a one-line message naming the field or check, and nothing else.
"""

from vmmio.images.detect import FORMATS, OPTIONS, detect, load
from vmmio.images.elf import ElfImage, ElfSegment, load_elf, parse_elf
from vmmio.images.errors import ImageError
from vmmio.images.flat import FLAT_LOAD_ADDR, load_flat
from vmmio.images.layout import E820_RAM, E820_RESERVED, MemoryLayout, Range
from vmmio.images.linux import SetupHeader, build_boot_params, load_linux, parse_setup_header
from vmmio.images.multiboot import (
    BOOTLOADER_MAGIC,
    MultibootHeader,
    build_info,
    find_multiboot_header,
    load_multiboot,
    parse_multiboot_header,
)
from vmmio.images.plan import CPU_STATES, Chunk, CpuMode, EntryMode, Format, LoadPlan, apply

__all__ = [
    "BOOTLOADER_MAGIC",
    "CPU_STATES",
    "E820_RAM",
    "E820_RESERVED",
    "FLAT_LOAD_ADDR",
    "FORMATS",
    "OPTIONS",
    "Chunk",
    "CpuMode",
    "ElfImage",
    "ElfSegment",
    "EntryMode",
    "Format",
    "ImageError",
    "LoadPlan",
    "MemoryLayout",
    "MultibootHeader",
    "Range",
    "SetupHeader",
    "apply",
    "build_boot_params",
    "build_info",
    "detect",
    "find_multiboot_header",
    "load",
    "load_elf",
    "load_flat",
    "load_linux",
    "load_multiboot",
    "parse_elf",
    "parse_multiboot_header",
    "parse_setup_header",
]
