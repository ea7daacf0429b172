"""A real Linux kernel (Debian's cloud kernel) boots to a busybox shell on the PC machine and reboots,
on Unicorn and on the KVM reference (where KVM runs guest kernel code itself: not on PVM).

The kernel and busybox come from Debian's archive (guests/linux/linux_guest.py, `make linux`); the test
skips only when those packages cannot be fetched. Every device access goes through the boundary: port
and MMIO exits to the userspace devices, the kernel's in-kernel PIC/PIT/RTC, interrupts injected by
the kernel. What is checked is the guest's own output.
"""

from __future__ import annotations

import importlib.util
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from vmmio.images import ImageError
from vmmio.images.cpio import Member, newc
from vmmio.pc import LINUX_CMDLINE
from vmmio.reference.kvm import INT3_PROBE, kernel_mode_runs, kvm_usable

REPO = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT_S = 600  # ~30 s on an idle 2-core machine; a hang must fail, not stall the suite


def _linux_guest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("linux_guest", REPO / "guests" / "linux" / "linux_guest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def guest() -> object:
    module = _linux_guest()
    try:
        return module.build()
    except module.Unavailable as err:
        pytest.skip(f"Debian's kernel and busybox packages cannot be fetched here: {err}")


# -- the initramfs writer -----------------------------------------------------------------------------


def _read_newc(blob: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """A reader written from the format's description, to check the writer field by field."""
    out: list[tuple[str, int, bytes, tuple[int, int]]] = []
    at = 0
    while True:
        assert blob[at : at + 6] == b"070701"
        fields = [int(blob[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = blob[at + 110 : at + 110 + namesize - 1].decode()
        assert blob[at + 110 + namesize - 1] == 0
        at = (at + 110 + namesize + 3) & ~3
        data = blob[at : at + filesize]
        at = (at + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert at == len(blob)
            return out
        out.append((name, fields[1], data, (fields[9], fields[10])))


def test_newc_writes_each_member_as_linux_reads_it() -> None:
    blob = newc(
        [
            Member.directory("bin"),
            Member.file("bin/tool", b"abc", 0o755),
            Member.symlink("bin/sh", "tool"),
            Member.char_device("console", 5, 1),
        ]
    )
    assert _read_newc(blob) == [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("bin/tool", stat.S_IFREG | 0o755, b"abc", (0, 0)),
        ("bin/sh", stat.S_IFLNK | 0o777, b"tool", (0, 0)),
        ("console", stat.S_IFCHR | 0o600, b"", (5, 1)),
    ]
    assert newc([Member.file("a", b"x")]) == newc([Member.file("a", b"x")])  # no times, no host ids


@pytest.mark.parametrize("name", ["", "/", "a/../b", "a\0b"])
def test_newc_refuses_names_linux_would_misplace(name: str) -> None:
    with pytest.raises(ImageError):
        newc([Member.file(name, b"")])


def test_newc_refuses_a_repeated_name() -> None:
    with pytest.raises(ImageError):
        newc([Member.file("a", b""), Member.file("/a", b"")])


# -- the boot -------------------------------------------------------------------------------------------


def _kvm_why_not() -> str | None:
    """Why Linux cannot boot on the KVM reference here, or None."""
    why = kvm_usable()
    if why is not None:
        return f"KVM is not usable: {why}"
    if not kernel_mode_runs(INT3_PROBE):
        return (
            "this KVM runs the guest's kernel mode through Linux's instruction emulator (PVM, the software "
            "KVM), which cannot deliver INT3 in long mode, nor run FWAIT or the XSAVE family: Linux stops at "
            "the first of them (its int3 self-test at the latest); with those done for it, init's first "
            "SYSCALL does not reach the kernel (PVM wants a PVM guest kernel)"
        )
    return None


@pytest.fixture(scope="module", params=["unicorn", "kvm"])
def boot(guest: object, request: pytest.FixtureRequest) -> tuple[str, str, int]:
    """Boot once per backend, as a user does: (serial output, stderr, exit status). On KVM the same
    machine runs with the KVM reference as its vCPU: the devices and interrupt controllers are the same
    objects, injected with KVM_INTERRUPT (vmmio.reference.kvm)."""
    backend = request.param
    if backend == "kvm" and (why := _kvm_why_not()) is not None:
        pytest.skip(why)
    kernel, initrd = guest.kernel, guest.initrd  # type: ignore[attr-defined]
    cmd = [sys.executable, "-m", "vmmio", "run", "--kernel", str(kernel), "--initrd", str(initrd)]
    cmd += ["--backend", backend]
    done = subprocess.run(
        [*cmd, "--timeout", str(BOOT_TIMEOUT_S)], capture_output=True, timeout=BOOT_TIMEOUT_S + 60
    )
    return done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"), done.returncode


def _said(text: str, what: str) -> str:
    found = re.search(rf"^vmmio-linux: {what}(.*)$", text, re.M)
    assert found, f"the guest never said 'vmmio-linux: {what}'; its output ends:\n{text[-3000:]}"
    return found.group(1).strip()


def test_linux_boots_to_the_shell_and_reboots(boot: tuple[str, str, int]) -> None:
    text, stderr, status = boot
    # `reboot -f` pulsed the i8042's reset line: the run ends there, successfully
    assert (status, stderr) == (0, "vmmio: guest reset the machine (i8042)\n"), text[-3000:]
    assert f"Command line: {LINUX_CMDLINE}" in text
    assert "Linux version 6." in text and "Run /init as init process" in text
    assert _said(text, "uname").startswith("Linux 6.")
    assert float(_said(text, "shell up after").split()[0]) > 0
    assert _said(text, "rebooting") == ""


def test_the_devices_did_their_work(boot: tuple[str, str, int]) -> None:
    text = boot[0]
    assert "serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A" in text
    interrupts = {
        m.group(2): int(m.group(1)) for m in re.finditer(r"^ *\d+: +(\d+) +XT-PIC +(\S+)", text, re.M)
    }
    assert interrupts["timer"] > 100 and interrupts["ttyS0"] > 0 and interrupts["i8042"] > 0
    assert int(_said(text, "timer interrupts during sleep 1:")) >= 50  # HZ is 250: the timers kept ticking
    # The local APIC, found through the ACPI MADT, took over the tick from the PIT after calibration.
    assert "ACPI: Using ACPI for processor (LAPIC) configuration information" in text
    assert int(re.search(r"^ *LOC: +(\d+)", text, re.M).group(1)) > 0  # type: ignore[union-attr]
    assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d", _said(text, "rtc"))  # the CMOS clock's date
    assert 200_000 < int(_said(text, "memory").split()[0]) < 256 * 1024  # the e820 map's RAM


def test_an_initrd_too_large_for_ram_is_one_line(guest: object, tmp_path: Path) -> None:
    big = tmp_path / "big.cpio"
    big.write_bytes(bytes(8 << 20))
    cmd = [sys.executable, "-m", "vmmio", "run", "--kernel", str(guest.kernel), "--ram", "8M"]  # type: ignore[attr-defined]
    done = subprocess.run([*cmd, "--initrd", str(big)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("vmmio: cannot load"), done.stderr
