"""Linux bzImages by the x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry.

The setup header is parsed field by field from one table (SetupHeader's field metadata: offset and
struct format), checked, and copied into a fresh boot_params (the "zero page"), which this loader then
fills: type_of_loader, command line, initrd, the e820 map. The real-mode setup code is not loaded: the
64-bit entry (protected-mode kernel + 0x200) skips it, so there is no setup heap, and CAN_USE_HEAP
stays clear with heap_end_ptr 0.

Protocol 2.12 is the minimum: xloadflags (2.12) is the only way a kernel says it has the 64-bit entry
point (XLF_KERNEL_64), and pref_address/init_size (2.10) say where and how much memory it needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from vmmio.images.errors import ImageError
from vmmio.images.layout import ADDR_LIMIT, LIMIT_4G, PAGE, MemoryLayout, align_up, find_free
from vmmio.images.plan import Chunk, LoadPlan, check_chunks

BOOT_FLAG = 0xAA55
HDRS = int.from_bytes(b"HdrS", "little")
MIN_VERSION = 0x020C
SETUP_HEADER_START = 0x1F1
SETUP_HEADER_MAX_END = 0x290  # boot_params puts other fields from here on
JMP_SHORT = 0xEB
SECTOR = 512
DEFAULT_SETUP_SECTS = 4  # setup_sects 0 means 4
ENTRY64_OFFSET = 0x200
MIB = 1 << 20
KERNEL_MIN_ADDR = MIB
LOW_START = 0x1000  # boot_params and command line: from here (page 0 holds the real-mode IVT/BDA)

# loadflags
LOADED_HIGH = 1 << 0
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7
# xloadflags
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1

TYPE_OF_LOADER_UNDEFINED = 0xFF
VID_MODE_NORMAL = 0xFFFF

# boot_params (arch/x86/include/uapi/asm/bootparam.h): fields this loader writes outside the header.
BOOT_PARAMS_SIZE = 0x1000
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_E820_ENTRIES = 0x1E8
BP_SENTINEL = 0x1EF
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128
E820_ENTRY = struct.Struct("<QQI")  # addr, size, type


def _at(offset: int, fmt: str) -> Any:
    """A SetupHeader field at `offset` in the file (and in boot_params), read with struct `fmt`."""
    return field(metadata={"offset": offset, "fmt": "<" + fmt})


@dataclass(frozen=True)
class SetupHeader:
    """The setup header, one field per boot.rst row (offsets are file offsets = boot_params offsets)."""

    setup_sects: int = _at(0x1F1, "B")
    root_flags: int = _at(0x1F2, "H")
    syssize: int = _at(0x1F4, "I")
    ram_size: int = _at(0x1F8, "H")
    vid_mode: int = _at(0x1FA, "H")
    root_dev: int = _at(0x1FC, "H")
    boot_flag: int = _at(0x1FE, "H")
    jump: int = _at(0x200, "H")
    header: int = _at(0x202, "I")
    version: int = _at(0x206, "H")
    realmode_swtch: int = _at(0x208, "I")
    start_sys_seg: int = _at(0x20C, "H")
    kernel_version: int = _at(0x20E, "H")
    type_of_loader: int = _at(0x210, "B")
    loadflags: int = _at(0x211, "B")
    setup_move_size: int = _at(0x212, "H")
    code32_start: int = _at(0x214, "I")
    ramdisk_image: int = _at(0x218, "I")
    ramdisk_size: int = _at(0x21C, "I")
    bootsect_kludge: int = _at(0x220, "I")
    heap_end_ptr: int = _at(0x224, "H")
    ext_loader_ver: int = _at(0x226, "B")
    ext_loader_type: int = _at(0x227, "B")
    cmd_line_ptr: int = _at(0x228, "I")
    initrd_addr_max: int = _at(0x22C, "I")
    kernel_alignment: int = _at(0x230, "I")
    relocatable_kernel: int = _at(0x234, "B")
    min_alignment: int = _at(0x235, "B")
    xloadflags: int = _at(0x236, "H")
    cmdline_size: int = _at(0x238, "I")
    hardware_subarch: int = _at(0x23C, "I")
    hardware_subarch_data: int = _at(0x240, "Q")
    payload_offset: int = _at(0x248, "I")
    payload_length: int = _at(0x24C, "I")
    setup_data: int = _at(0x250, "Q")
    pref_address: int = _at(0x258, "Q")
    init_size: int = _at(0x260, "I")
    handover_offset: int = _at(0x264, "I")
    kernel_info_offset: int = _at(0x268, "I")

    @property
    def version_str(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF}"

    @property
    def header_end(self) -> int:
        """End of the header as the kernel declares it: 0x202 + the short jump's displacement."""
        return 0x202 + (self.jump >> 8)

    @property
    def setup_size(self) -> int:
        """Bytes of boot sector + real-mode setup code before the protected-mode kernel in the file."""
        return ((self.setup_sects or DEFAULT_SETUP_SECTS) + 1) * SECTOR


SETUP_FIELDS = {f.name: (f.metadata["offset"], struct.Struct(f.metadata["fmt"])) for f in fields(SetupHeader)}
SETUP_HEADER_END = max(off + s.size for off, s in SETUP_FIELDS.values())  # 0x26C: the last field this reads


def is_bzimage(data: bytes) -> bool:
    """boot_flag 0xAA55 and "HdrS" at their offsets: the two fixed signatures of a boot-protocol image."""
    return (
        len(data) >= 0x206
        and int.from_bytes(data[0x1FE:0x200], "little") == BOOT_FLAG
        and data[0x202:0x206] == b"HdrS"
    )


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


# (field, check, message): applied in order to a parsed header, the first failing one raises.
_CHECKS: tuple[tuple[str, Callable[[SetupHeader], object], str], ...] = (
    ("boot_flag", lambda h: h.boot_flag == BOOT_FLAG, "{h.boot_flag:#06x} is not 0xAA55"),
    ("header", lambda h: h.header == HDRS, "{h.header:#010x} is not 'HdrS'"),
    (
        "version", lambda h: h.version >= MIN_VERSION,
        "{h.version_str} < 2.12: without xloadflags there is no way to know the kernel has a 64-bit entry",
    ),
    ("jump", lambda h: h.jump & 0xFF == JMP_SHORT, "{h.jump:#06x} is not a short JMP (0xEB) over the header"),
    (
        "jump", lambda h: SETUP_HEADER_END <= h.header_end <= SETUP_HEADER_MAX_END,
        "{h.jump:#06x}: header end {h.header_end:#x} (0x202 + displacement) is not within [0x26c, 0x290]",
    ),
    (
        "loadflags", lambda h: h.loadflags & LOADED_HIGH,
        "{h.loadflags:#04x} lacks LOADED_HIGH (bit 0): zImages loaded at 0x10000 are not supported",
    ),
    (
        "xloadflags", lambda h: h.xloadflags & XLF_KERNEL_64,
        "{h.xloadflags:#06x} lacks XLF_KERNEL_64 (bit 0): the kernel has no 64-bit entry point",
    ),
    (
        "kernel_alignment", lambda h: _is_pow2(h.kernel_alignment),
        "{h.kernel_alignment:#x} is not a power of two",
    ),
    ("syssize", lambda h: h.syssize > 0, "0: no protected-mode kernel"),
    ("cmdline_size", lambda h: h.cmdline_size > 0, "0: the kernel takes no command line"),
    ("init_size", lambda h: h.init_size > 0, "0: the kernel states no memory need"),
)  # fmt: skip


def parse_setup_header(data: bytes) -> SetupHeader:
    """Read and check the setup header, and check the file holds what it describes."""
    if len(data) < SETUP_HEADER_END:
        raise ImageError(
            f"Linux setup header truncated: file is {len(data):#x} bytes, "
            f"the header ends at {SETUP_HEADER_END:#x}"
        )
    values = {name: s.unpack_from(data, off)[0] for name, (off, s) in SETUP_FIELDS.items()}
    hdr = SetupHeader(**values)
    for name, check, message in _CHECKS:
        if not check(hdr):
            raise ImageError(f"Linux setup header {name} " + message.format(h=hdr))
    rest = len(data) - hdr.setup_size
    if rest <= 0:
        raise ImageError(
            f"Linux setup header setup_sects {hdr.setup_sects}: the setup code ({hdr.setup_size:#x} bytes) "
            f"reaches the end of the file ({len(data):#x})"
        )
    if hdr.syssize * 16 > align_up(rest, 16):
        raise ImageError(
            f"Linux setup header syssize {hdr.syssize:#x}: {hdr.syssize * 16:#x} bytes of kernel, "
            f"the file has {rest:#x} after the setup code"
        )
    if hdr.init_size < hdr.syssize * 16:
        raise ImageError(
            f"Linux setup header init_size {hdr.init_size:#x} < the kernel's {hdr.syssize * 16:#x} bytes"
        )
    return hdr


FOUR_GIB = 1 << 32


def kernel_payload(data: bytes, hdr: SetupHeader) -> memoryview:
    """The protected-mode kernel: syssize paragraphs after the setup code (a trailing signature is not)."""
    return memoryview(data)[hdr.setup_size : hdr.setup_size + hdr.syssize * 16]


def _place_kernel(hdr: SetupHeader, layout: MemoryLayout) -> int:
    """pref_address when [it, + init_size) is free; else, if relocatable, the lowest aligned free address
    above it. Never lower: a 64-bit kernel loaded below pref_address (LOAD_PHYSICAL_ADDR) decompresses
    itself to [pref_address, + init_size) anyway (arch/x86/boot/compressed/head_64.S), so that memory
    must be RAM. Below 4 GiB: code32_start is a 32-bit field. A non-relocatable kernel gets pref_address
    or nothing."""
    free = layout.free()
    pref = max(hdr.pref_address, KERNEL_MIN_ADDR)
    aligned = pref % hdr.kernel_alignment == 0 or not hdr.relocatable_kernel
    fits = pref + hdr.init_size <= FOUR_GIB
    if aligned and fits and find_free(free, hdr.init_size, 1, lo=pref, hi=pref + hdr.init_size) == pref:
        return pref
    if hdr.relocatable_kernel:
        addr = find_free(free, hdr.init_size, hdr.kernel_alignment, lo=pref, hi=FOUR_GIB)
        if addr is not None:
            return addr
    why = "" if hdr.relocatable_kernel else " (relocatable_kernel 0: only pref_address will do)"
    raise ImageError(
        f"Linux setup header init_size {hdr.init_size:#x}: no free RAM below 4 GiB for the kernel at or "
        f"above pref_address {hdr.pref_address:#x} aligned to kernel_alignment {hdr.kernel_alignment:#x}"
        f"{why}; {layout.describe()}"
    )


def _put(bp: bytearray, name: str, value: int) -> None:
    off, s = SETUP_FIELDS[name]
    s.pack_into(bp, off, value)


def build_boot_params(
    data: bytes,
    hdr: SetupHeader,
    layout: MemoryLayout,
    *,
    kernel_addr: int,
    cmdline_addr: int,
    initrd: tuple[int, int],
    vid_mode: int,
) -> bytes:
    """The zero page: the kernel's setup header copied to 0x1F1, the loader's fields, the e820 map."""
    bp = bytearray(BOOT_PARAMS_SIZE)
    bp[SETUP_HEADER_START : hdr.header_end] = data[SETUP_HEADER_START : hdr.header_end]
    initrd_addr, initrd_size = initrd
    writes = {
        "vid_mode": vid_mode,
        "type_of_loader": TYPE_OF_LOADER_UNDEFINED,
        "loadflags": hdr.loadflags & ~(CAN_USE_HEAP | KEEP_SEGMENTS | QUIET_FLAG),
        "code32_start": kernel_addr,
        "ramdisk_image": initrd_addr & 0xFFFF_FFFF,
        "ramdisk_size": initrd_size & 0xFFFF_FFFF,
        "heap_end_ptr": 0,
        "cmd_line_ptr": cmdline_addr & 0xFFFF_FFFF,
        "hardware_subarch": 0,
        "setup_data": 0,
    }
    for name, value in writes.items():
        _put(bp, name, value)
    struct.pack_into("<I", bp, BP_EXT_RAMDISK_IMAGE, initrd_addr >> 32)
    struct.pack_into("<I", bp, BP_EXT_RAMDISK_SIZE, initrd_size >> 32)
    struct.pack_into("<I", bp, BP_EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    e820 = layout.memory_map()
    if len(e820) > E820_MAX_ENTRIES:
        raise ImageError(f"e820 map has {len(e820)} entries, more than the zero page's {E820_MAX_ENTRIES}")
    bp[BP_E820_ENTRIES] = len(e820)
    for n, entry in enumerate(e820):
        E820_ENTRY.pack_into(bp, BP_E820_TABLE + n * E820_ENTRY.size, *entry)
    return bytes(bp)


def load_linux(
    data: bytes,
    layout: MemoryLayout,
    *,
    cmdline: str | bytes = "",
    initrd: bytes | None = None,
    vid_mode: int = VID_MODE_NORMAL,
) -> LoadPlan:
    """Plan a bzImage for the 64-bit boot protocol ("linux64" entry).

    The kernel goes to pref_address (or, if relocatable, the lowest kernel_alignment-aligned free RAM
    from 1 MiB) and owns [load, load + init_size); boot_params and the command line share one chunk in
    the lowest free RAM from 0x1000 below 4 GiB; the initrd goes page-aligned as high as RAM and
    initrd_addr_max (or, with XLF_CAN_BE_LOADED_ABOVE_4G, RAM alone) allow.
    """
    hdr = parse_setup_header(data)
    raw_cmdline = cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline)
    if b"\0" in raw_cmdline:
        raise ImageError("Linux command line contains a NUL byte")
    if len(raw_cmdline) > hdr.cmdline_size:
        raise ImageError(
            f"Linux command line is {len(raw_cmdline)} bytes, longer than cmdline_size {hdr.cmdline_size}"
        )
    if not 0 <= vid_mode <= 0xFFFF:
        raise ImageError(f"vid_mode {vid_mode:#x} does not fit 16 bits")
    payload = kernel_payload(data, hdr)
    kernel_addr = _place_kernel(hdr, layout)
    kernel = Chunk(kernel_addr, payload, hdr.init_size - len(payload), "Linux kernel (init_size)")
    taken = [(kernel.gpa, kernel.size)]
    low_size = BOOT_PARAMS_SIZE + len(raw_cmdline) + 1
    bp_addr = find_free(layout.free(taken), low_size, PAGE, lo=LOW_START, hi=LIMIT_4G)
    if bp_addr is None:
        raise ImageError(
            f"no free RAM below 4 GiB for boot_params and the command line ({low_size:#x} bytes)"
        )
    taken.append((bp_addr, low_size))
    chunks = [kernel]
    initrd_at = (0, 0)
    if initrd:
        above_4g = hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G
        limit = ADDR_LIMIT if above_4g else hdr.initrd_addr_max + 1
        addr = find_free(layout.free(taken), len(initrd), PAGE, hi=limit, top_down=True)
        if addr is None:
            raise ImageError(
                f"initrd ({len(initrd):#x} bytes) does not fit in free RAM below {limit:#x} "
                f"(initrd_addr_max {hdr.initrd_addr_max:#x}, xloadflags {hdr.xloadflags:#x}); "
                f"{layout.describe()}"
            )
        initrd_at = (addr, len(initrd))
        chunks.append(Chunk(addr, memoryview(bytes(initrd)), 0, "initrd"))
    cmdline_addr = bp_addr + BOOT_PARAMS_SIZE
    bp = build_boot_params(
        data,
        hdr,
        layout,
        kernel_addr=kernel_addr,
        cmdline_addr=cmdline_addr,
        initrd=initrd_at,
        vid_mode=vid_mode,
    )
    chunks.append(Chunk(bp_addr, memoryview(bp + raw_cmdline + b"\0"), 0, "boot_params and command line"))
    placed = check_chunks(chunks, layout, ADDR_LIMIT)
    info = [("boot_params", bp_addr), ("cmdline", cmdline_addr), ("kernel", kernel_addr)]
    if initrd:
        info.append(("initrd", initrd_at[0]))
    return LoadPlan(
        "linux",
        "linux64",
        kernel_addr + ENTRY64_OFFSET,
        placed,
        regs=(("rsi", bp_addr),),
        identity_map=max(c.end for c in placed),
        boot_info=tuple(info),
    )


__all__ = [
    "SETUP_FIELDS",
    "SetupHeader",
    "build_boot_params",
    "is_bzimage",
    "load_linux",
    "parse_setup_header",
]
