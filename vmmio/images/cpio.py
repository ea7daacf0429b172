"""Writing initramfs archives: cpio "newc" (SVR4 without checksums), the format Linux unpacks at boot.

Each member is a 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated name and the
data, both padded to 4 bytes; "TRAILER!!!" ends the archive (kernel: init/initramfs.c,
Documentation/driver-api/early-userspace/buffer-format.rst). Owners are root; times are 0 so that an
archive is a function of its members only.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from vmmio.images.errors import ImageError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
MAX_FIELD = 0xFFFF_FFFF


@dataclass(frozen=True)
class Member:
    """One file, directory, symlink (`data` is the target) or device node (`rdev` is (major, minor))."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def directory(name: str, perm: int = 0o755) -> Member:
        return Member(name, stat.S_IFDIR | perm)

    @staticmethod
    def file(name: str, data: bytes, perm: int = 0o644) -> Member:
        return Member(name, stat.S_IFREG | perm, data)

    @staticmethod
    def symlink(name: str, target: str) -> Member:
        return Member(name, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> Member:
        return Member(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(out: bytearray) -> None:
    out.extend(bytes(-len(out) % 4))


def _header(ino: int, member: Member, nlink: int, namesize: int) -> bytes:
    fields = (ino, member.mode, 0, 0, nlink, 0, len(member.data), 0, 0, *member.rdev, namesize, 0)
    if any(not 0 <= f <= MAX_FIELD for f in fields):
        raise ImageError(f"cpio: {member.name!r} has a field beyond 32 bits")
    return MAGIC + b"".join(b"%08x" % f for f in fields)


def newc(members: Iterable[Member]) -> bytes:
    """The archive holding `members` in order (parents before children), then the trailer."""
    out = bytearray()
    seen: set[str] = set()
    for ino, member in enumerate([*members, Member(TRAILER, 0)], start=1):
        name = member.name.strip("/")
        if not name or "\0" in name or ".." in name.split("/") or name in seen:
            raise ImageError(f"cpio: bad or repeated member name {member.name!r}")
        seen.add(name)
        encoded = name.encode() + b"\0"
        out += _header(ino, member, 2 if stat.S_ISDIR(member.mode) else 1, len(encoded))
        out += encoded
        _pad4(out)
        out += member.data
        _pad4(out)
    return bytes(out)


__all__ = ["Member", "newc"]
