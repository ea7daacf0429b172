"""Format detection and `load`: signatures, precedence, flat images only on request, per-format options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from images.synth import LAYOUT, MIB, bzimage, elf32, elf64, mb_aout, mb_elf, mb_header
from vmmio.images import FLAT_LOAD_ADDR, ImageError, MemoryLayout, detect, load

GUESTS = sorted((Path(__file__).resolve().parents[2] / "vmmio" / "guests").glob("*.bin"))
TEXT = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        pytest.param(elf64(), None, "elf", id="ELF64"),
        pytest.param(elf32(), "kernel.bin", "elf", id="ELF named .bin is still ELF"),
        pytest.param(mb_elf(), None, "multiboot", id="multiboot ELF: the header wins"),
        pytest.param(mb_aout(), None, "multiboot", id="multiboot a.out kludge"),
        pytest.param(mb_header(0x4), None, "multiboot", id="unsupported flags still detect (load says why)"),
        pytest.param(bzimage(), None, "linux", id="bzImage"),
        pytest.param(bzimage(version=0x0200), None, "linux", id="old bzImage still detects (load says why)"),
        pytest.param(TEXT, "passwd.bin", "flat", id=".bin is flat"),
        pytest.param(TEXT, Path("/x/GUEST.BIN"), "flat", id=".BIN path is flat"),
    ],
)
def test_detect(data: bytes, name: str | Path | None, expected: str) -> None:
    assert detect(data, name) == expected


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(TEXT, None, id="text"),
        pytest.param(TEXT, "passwd", id="text with a name"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\x7fEL", None, id="three bytes of ELF magic"),
        pytest.param(mb_header(0, checksum=0), None, id="multiboot magic, bad checksum"),
        pytest.param(bzimage(boot_flag=0), None, id="HdrS without boot_flag"),
    ],
)
def test_unrecognized_images_ask_for_format_flat(data: bytes, name: str | None) -> None:
    with pytest.raises(
        ImageError, match=r"^unrecognized image format .* \(pass format='flat' for a raw binary\)$"
    ):
        detect(data, name)
    with pytest.raises(ImageError, match="unrecognized image format"):
        load(data, LAYOUT, name=name)


def test_etc_passwd_does_not_run_as_a_flat_image_unless_asked() -> None:
    with pytest.raises(ImageError, match="starts 726f6f74"):
        load(TEXT, LAYOUT)
    plan = load(TEXT, LAYOUT, format="flat")
    assert (plan.format, plan.cpu, plan.entry, bytes(plan.chunks[0].data)) == (
        "flat",
        "long64",
        0x100000,
        TEXT,
    )


@pytest.mark.parametrize("path", GUESTS, ids=[p.name for p in GUESTS])
def test_shipped_guests_are_flat_64_bit_images_at_1mib(path: Path) -> None:
    data = path.read_bytes()
    plan = load(data, LAYOUT, name=path.name)
    assert (plan.format, plan.cpu, plan.entry, FLAT_LOAD_ADDR) == ("flat", "long64", 0x100000, 0x100000)
    assert [(c.gpa, bytes(c.data), c.zero) for c in plan.chunks] == [(0x100000, data, 0)]
    assert plan.identity_map == 0x100000 + len(data)


def test_flat_load_addr_and_fit() -> None:
    assert load(b"\x90", LAYOUT, format="flat", load_addr=0x200000).entry == 0x200000
    with pytest.raises(ImageError, match=r"flat image \[0x1fff000, 0x2001000\) is not inside usable RAM"):
        load(bytes(0x2000), LAYOUT, format="flat", load_addr=32 * MIB - 0x1000)
    with pytest.raises(ImageError, match="flat image is empty"):
        load(b"", LAYOUT, format="flat")


def test_load_accepts_bytearray_and_memoryview_and_dispatches_by_detected_format() -> None:
    assert load(bytearray(elf64()), LAYOUT).cpu == "long64"
    assert load(memoryview(mb_elf()), LAYOUT, cmdline="x").cpu == "multiboot32"
    assert load(bzimage(), LAYOUT, cmdline="x", initrd=b"i", vid_mode=0).cpu == "linux64"
    assert load(elf32(), LAYOUT).cpu == "flat32"


@pytest.mark.parametrize(
    ("data", "options", "fragment"),
    [
        pytest.param(elf64(), {"initrd": b"x"}, "elf images take no initrd", id="initrd for ELF"),
        pytest.param(elf64(), {"cmdline": ""}, "elf images take no cmdline", id="cmdline for ELF"),
        pytest.param(
            mb_elf(), {"initrd": b"x", "vid_mode": 1}, "multiboot images take no initrd, vid_mode", id="mb"
        ),
        pytest.param(bzimage(), {"modules": []}, "linux images take no modules", id="modules for Linux"),
        pytest.param(bzimage(), {"load_addr": 0}, "linux images take no load_addr", id="load_addr for Linux"),
        pytest.param(
            elf64(),
            {"format": "coff"},
            "unknown format 'coff' (choose elf, multiboot, linux, flat)",
            id="fmt",
        ),
        pytest.param(elf64(), {"format": "linux"}, "Linux setup header boot_flag", id="forced wrong format"),
        pytest.param(elf64(), {"format": "multiboot"}, "no multiboot header", id="forced multiboot"),
    ],
)
def test_options_a_format_does_not_take_are_errors(
    data: bytes, options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ImageError) as err:
        load(data, LAYOUT, **options)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_memory_layout_is_validated() -> None:
    for ram, fragment in (
        ((), "no RAM ranges"),
        (((0, 0),), "RAM range (base 0x0, size 0x0) is empty"),
        (((-1, 10),), "is empty or not in 64 bits"),
        (((0, 2 * MIB), (MIB, MIB)), "RAM range [0x100000, 0x200000) overlaps [0x0, 0x200000)"),
        (tuple((n * 2, 1) for n in range(65)), "65 RAM ranges, more than 64"),
    ):
        with pytest.raises(ImageError, match=re.escape(fragment)):
            MemoryLayout(ram)
    merged = MemoryLayout(((MIB, MIB), (0, MIB), (4 * MIB, MIB)))
    assert merged.ram == ((0, 2 * MIB), (4 * MIB, MIB))
