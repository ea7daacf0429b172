#!/usr/bin/env python3
"""The Linux guest: Debian's cloud kernel and a busybox initramfs, fetched and built into build/linux/.

    python guests/linux/linux_guest.py            # (make linux) fetch if needed, build, print the two paths
    python guests/linux/linux_guest.py --check    # exit 0 if built, 1 with the reason if it cannot be

The kernel and busybox come from Debian's archive with its own tools (`apt-get download`, `dpkg-deb
-x`) into build/cache/ (ignored by git), never from the network otherwise. The initramfs is built here
(vmmio.images.cpio): busybox, /init from init.sh, /dev/console. Run it with

    vmmio run --kernel build/linux/vmlinuz --initrd build/linux/initramfs.cpio
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = REPO / "build" / "cache"
OUT = REPO / "build" / "linux"
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # a metapackage: it depends on the versioned image
BUSYBOX_PACKAGE = "busybox-static"


class Unavailable(RuntimeError):
    """Debian's packages cannot be fetched here (no apt, no archive reachable)."""


@dataclass(frozen=True)
class LinuxGuest:
    kernel: Path
    initrd: Path


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"{cmd[0]}: {err}") from None
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"{' '.join(cmd)}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def _versioned(package: str) -> str:
    """The package a metapackage depends on (linux-image-cloud-amd64 -> linux-image-6.1.0-NN-cloud-amd64)."""
    for line in _run(["apt-cache", "depends", package]).splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise Unavailable(f"apt-cache depends {package}: no linux-image dependency")


def _fetch(package: str) -> Path:
    """The package's files, unpacked under build/cache/<package>/ (downloaded once)."""
    root = CACHE / package
    if (root / ".unpacked").exists():
        return root
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise Unavailable("apt-get and dpkg-deb are needed to fetch Debian's packages")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        _run(["apt-get", "download", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise Unavailable(f"apt-get download {package} gave {len(debs)} packages")
        shutil.rmtree(root, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    (root / ".unpacked").write_text(package + "\n")
    return root


def initramfs(busybox: bytes, init: str) -> bytes:
    """The archive: busybox (installing its applets is /init's first step), /init, /dev/console."""
    sys.path.insert(0, str(REPO))
    from vmmio.images.cpio import Member, newc

    return newc(
        [
            Member.directory("bin"),
            Member.directory("dev"),
            Member.char_device("dev/console", 5, 1),
            Member.file("bin/busybox", busybox, 0o755),
            Member.symlink("bin/sh", "busybox"),
            Member.file("init", init.encode(), 0o755),
        ]
    )


def build() -> LinuxGuest:
    """Fetch what is missing and (re)build build/linux/; raises Unavailable with the reason."""
    image = _fetch(_versioned(KERNEL_PACKAGE))
    kernels = sorted((image / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise Unavailable(f"no /boot/vmlinuz-* in {image}")
    busybox = _fetch(BUSYBOX_PACKAGE) / "bin" / "busybox"
    if not busybox.exists():
        raise Unavailable(f"{busybox} missing from {BUSYBOX_PACKAGE}")
    OUT.mkdir(parents=True, exist_ok=True)
    guest = LinuxGuest(OUT / "vmlinuz", OUT / "initramfs.cpio")
    shutil.copyfile(kernels[-1], guest.kernel)
    guest.initrd.write_bytes(initramfs(busybox.read_bytes(), (HERE / "init.sh").read_text()))
    return guest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only say whether the guest can be built")
    args = parser.parse_args(argv)
    try:
        guest = build()
    except Unavailable as err:
        print(f"linux guest unavailable: {err}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"kernel  {guest.kernel}\ninitrd  {guest.initrd}")
        print(f"run it: vmmio run --kernel {guest.kernel} --initrd {guest.initrd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
