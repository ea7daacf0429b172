"""Which loader an image needs, and `load`, which runs it.

Detection looks only at fixed signatures, so it is cheap and never fails on a malformed body (the
loader then names what is wrong):

    multiboot  a 4-aligned 0x1BADB002 with a valid checksum in the first 8192 bytes. A multiboot
               kernel is usually ELF too; the header wins, since it asks for the multiboot entry state.
    linux      boot_flag 0xAA55 at 0x1FE and "HdrS" at 0x202. Checked before multiboot: two fixed
               offsets are a stronger signature than a checksum found anywhere in 8 KiB.
    elf        the \\x7fELF magic.
    flat       only when asked for (format="flat") or when the name ends in ".bin": any file is a valid
               flat image, so guessing it would run text files as code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vmmio.images.elf import is_elf, load_elf
from vmmio.images.errors import ImageError
from vmmio.images.flat import FLAT_LOAD_ADDR, load_flat
from vmmio.images.layout import MemoryLayout
from vmmio.images.linux import VID_MODE_NORMAL, is_bzimage, load_linux
from vmmio.images.multiboot import find_multiboot_header, load_multiboot
from vmmio.images.plan import Format, LoadPlan

FORMATS: tuple[Format, ...] = ("elf", "multiboot", "linux", "flat")
FLAT_SUFFIX = ".bin"

# Which of load()'s boot options each format takes; passing another is an error, not silently ignored.
OPTIONS: dict[Format, frozenset[str]] = {
    "elf": frozenset(),
    "flat": frozenset({"load_addr"}),
    "multiboot": frozenset({"cmdline", "modules", "info_addr"}),
    "linux": frozenset({"cmdline", "initrd", "vid_mode"}),
}


def detect(data: bytes, name: str | os.PathLike[str] | None = None) -> Format:
    """The image's format by its signatures (see the module docstring); ImageError when there is none."""
    if is_bzimage(data):
        return "linux"
    if find_multiboot_header(data) is not None:
        return "multiboot"
    if is_elf(data):
        return "elf"
    if name is not None and os.fspath(name).lower().endswith(FLAT_SUFFIX):
        return "flat"
    raise ImageError(
        f"unrecognized image format (starts {bytes(data[:4]).hex() or 'empty'}): not ELF, multiboot v1 or a "
        "Linux bzImage (pass format='flat' for a raw binary)"
    )


def load(
    data: bytes | bytearray | memoryview,
    layout: MemoryLayout,
    *,
    format: Format | None = None,
    name: str | os.PathLike[str] | None = None,
    cmdline: str | bytes | None = None,
    modules: Sequence[tuple[bytes, str | bytes]] | None = None,
    initrd: bytes | None = None,
    info_addr: int | None = None,
    load_addr: int | None = None,
    vid_mode: int | None = None,
) -> LoadPlan:
    """Detect (unless `format` is given) and plan an image in `layout`.

    Options apply per format (OPTIONS): cmdline (multiboot, linux), modules and info_addr (multiboot),
    initrd and vid_mode (linux), load_addr (flat, default 0x100000). Passing one the format does not
    take raises ImageError. A copy is made only when `data` is not already bytes.
    """
    raw = data if isinstance(data, bytes) else bytes(data)
    fmt = detect(raw, name) if format is None else format
    if fmt not in OPTIONS:
        raise ImageError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    given = {
        k
        for k, v in (
            ("cmdline", cmdline), ("modules", modules), ("initrd", initrd), ("info_addr", info_addr),
            ("load_addr", load_addr), ("vid_mode", vid_mode),
        )
        if v is not None
    }  # fmt: skip
    extra = sorted(given - OPTIONS[fmt])
    if extra:
        raise ImageError(f"{fmt} images take no {', '.join(extra)}")
    if fmt == "elf":
        return load_elf(raw, layout)
    if fmt == "flat":
        return load_flat(raw, layout, FLAT_LOAD_ADDR if load_addr is None else load_addr)
    if fmt == "multiboot":
        return load_multiboot(raw, layout, cmdline=cmdline or "", modules=modules or (), info_addr=info_addr)
    return load_linux(
        raw,
        layout,
        cmdline=cmdline or "",
        initrd=initrd,
        vid_mode=VID_MODE_NORMAL if vid_mode is None else vid_mode,
    )
