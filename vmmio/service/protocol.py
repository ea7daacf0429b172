"""The wire format of `vmmio serve` (docs/transport.md is the full description, this is its code).

Control messages travel on a SOCK_SEQPACKET Unix socket, one message per packet: a 16-byte header and a
fixed payload per operation. Runs never touch the socket: each vCPU has a shared run page holding the
next entry and the last exit in the 48-byte ABI records, and a pair of eventfds as doorbells. Every
layout is a `struct.Struct` here so the server, the Python client and the fuzzer share one definition.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from vmmio.abi import RECORD_SIZE
from vmmio.x86.state import Control, Regs, Segment, VectorState

TRANSPORT_VERSION: Final = 2  # 2: XCR0 in CONTROL; x87 status, tags and exponents in VECTOR
REQUEST_MAGIC: Final = b"VSRQ"
REPLY_MAGIC: Final = b"VSRP"
HEADER: Final = struct.Struct("<4sHHII")  # magic, op, vcpu, tag, status
MAX_MESSAGE: Final = 65536  # header included; larger packets are refused (and truncated by the kernel)
MAX_DATA: Final = MAX_MESSAGE - HEADER.size - 16  # READ_RAM / WRITE_RAM bytes per message
MAX_VCPUS: Final = 8
MAX_REGIONS: Final = 8
MAX_RAM: Final = 4 << 30
MAX_DEVICE: Final = 1 << 20  # bytes (or ports) of one in-kernel memory-like device
MAX_DEVICES: Final = 16
PAGE: Final = 4096


class Op(IntEnum):
    """Control operations; a reply carries the same code."""

    HELLO = 1
    CREATE_VM = 2
    GET_REGS = 3
    SET_REGS = 4
    GET_CONTROL = 5
    SET_CONTROL = 6
    GET_VECTOR = 7
    SET_VECTOR = 8
    READ_RAM = 9
    WRITE_RAM = 10
    ADD_DEVICE = 11
    STOP = 12
    INVALIDATE_CODE = 13
    STATS = 14


class Err(IntEnum):
    """Status codes, in replies and in a run page's `status` word. 0 is success."""

    OK = 0
    MALFORMED = 1  # wrong size, magic, reserved bytes or flags: the message or record does not parse
    VERSION = 2  # no transport or ABI version in common
    UNKNOWN_OP = 3
    STATE = 4  # not now: before HELLO, HELLO twice, no VM yet, a second CREATE_VM
    VCPU = 5  # no such vCPU
    RANGE = 6  # a guest-physical range that is not RAM, or a device range over something mapped
    INVALID = 7  # a field value the VM refuses (sizes, kinds, register state the CPU rejects)
    BUSY = 8  # the vCPU is running: wait for its exit (or STOP it) first
    PENDING = 9  # a request is pending on the vCPU: fulfill or discard it first
    CAPABILITY = 10  # the operation needs a capability that was not granted at HELLO
    LIMIT = 11  # beyond a server limit (vCPUs, regions, RAM, devices, data per message)
    ENTRY = 12  # run page: the entry record does not decode (vmmio.abi rules)
    MISMATCH = 13  # run page: the entry does not fit the vCPU's pending request (EntryError)
    RUN_STATE = 14  # run page: the doorbell rang with a state word that is not POSTED
    BACKEND = 15  # the execution backend failed; the vCPU may be unusable
    INTERNAL = 16  # a server bug; logged


class Cap(IntEnum):
    """Capability bits asked for at HELLO; the reply grants the subset the server has."""

    VECTOR = 1 << 0  # GET_VECTOR / SET_VECTOR
    KERNEL_DEVICES = 1 << 1  # ADD_DEVICE
    STATS = 1 << 2  # STATS
    BATCHED_REP = 1 << 3  # batched REP requests (architecture note): this server never grants it


SERVER_CAPS: Final = Cap.VECTOR | Cap.KERNEL_DEVICES | Cap.STATS
NEEDS_CAP: Final = {
    Op.GET_VECTOR: Cap.VECTOR,
    Op.SET_VECTOR: Cap.VECTOR,
    Op.ADD_DEVICE: Cap.KERNEL_DEVICES,
    Op.STATS: Cap.STATS,
}


class Backend(IntEnum):
    UNICORN = 1


class DeviceKind(IntEnum):
    """In-kernel devices ADD_DEVICE can map (served without an exit)."""

    MMIO_MEMORY = 1  # memory-like: reads return what was written (vmmio.devices.MemoryDevice)
    PORT_MEMORY = 2  # the same over a port range


# --- payloads ---------------------------------------------------------------------------------------

HELLO_REQ: Final = struct.Struct("<IIQ")  # min_version, max_version, caps wanted
HELLO_REP: Final = struct.Struct(
    "<IIQIIQ"
)  # version, abi_version, caps granted, max_message, max_vcpus, max_ram
CREATE_REQ: Final = struct.Struct("<IIII")  # nvcpus, nregions, backend, rep_budget; then nregions x REGION
REGION: Final = struct.Struct("<QQ")  # gpa, size
CREATE_REP: Final = struct.Struct("<QII")  # ram bytes, run page size, nregions; then nregions x REGION_REP
REGION_REP: Final = struct.Struct("<QQQ")  # gpa, size, offset in the RAM memfd
REGS: Final = struct.Struct("<18Q")  # 16 GPRs (hardware order), RIP, RFLAGS
CONTROL_HEAD: Final = struct.Struct("<5QII QII QII II4Q Q")  # ..., pdptes, xcr0
SEGMENT: Final = struct.Struct("<QIHBBB7s")  # base, limit, selector, type, dpl, flags, reserved
SEG_FLAGS: Final = ("s", "present", "db", "l", "g", "unusable")  # bit n of SEGMENT.flags
CONTROL_SIZE: Final = CONTROL_HEAD.size + 8 * SEGMENT.size
VECTOR: Final = struct.Struct("<2048s64s64sII16sHH")  # zmm0-31, k0-7, mm0-7, mxcsr, 0, mm_hi0-7, fsw, ftw
RAM_REQ: Final = struct.Struct("<QII")  # gpa, length, reserved; WRITE_RAM: then exactly `length` bytes
DEVICE_REQ: Final = struct.Struct("<IIQQ")  # kind, reserved, base, size
STATS_REP: Final = struct.Struct("<QQQQ")  # posts, rejected posts, ns in vcpu.run, ns serving posts
STATUS_TEXT: Final = 200  # bytes of error text after an error reply's header (NUL-padded)

# --- run page -----------------------------------------------------------------------------------------

RUN_MAGIC: Final = b"VRUN"
RUN_HEAD: Final = struct.Struct("<4sHHIIII")  # magic, version, vcpu, state, status, notes, seq
OFF_STATE: Final = 8
OFF_STATUS: Final = 12
OFF_NOTES: Final = 16
OFF_SEQ: Final = 20
OFF_ENTRY: Final = 64
OFF_EXIT: Final = 128
OFF_TEXT: Final = 256
TEXT_SIZE: Final = 256
assert OFF_ENTRY + RECORD_SIZE <= OFF_EXIT and OFF_EXIT + RECORD_SIZE <= OFF_TEXT


class RunState(IntEnum):
    """The run page's state word: who owns the page and what the last post became."""

    IDLE = 0  # no post yet; the client owns the page
    POSTED = 1  # the client wrote an entry and rings the doorbell
    RUNNING = 2  # the server took the entry; the page is the server's until DONE
    DONE = 3  # status (and on success the exit) are ready; the client owns the page again


NOTE_WRITTEN_WHILE_RUNNING: Final = 1  # the page changed during the run; what was written was ignored


# --- codecs -------------------------------------------------------------------------------------------


class WireError(ValueError):
    """A message or payload that does not parse; carries the status code to answer with."""

    def __init__(self, code: Err, message: str) -> None:
        super().__init__(message)
        self.code = code


def header(magic: bytes, op: int, vcpu: int = 0, tag: int = 0, status: int = 0) -> bytes:
    return HEADER.pack(magic, op, vcpu, tag, status)


def pack_regs(regs: Regs) -> bytes:
    return REGS.pack(*regs.gprs, regs.rip, regs.rflags)


def unpack_regs(raw: bytes) -> Regs:
    values = REGS.unpack(raw)
    return Regs(list(values[:16]), values[16], values[17])


def _pack_segment(seg: Segment) -> bytes:
    flags = sum(1 << n for n, name in enumerate(SEG_FLAGS) if getattr(seg, name))
    return SEGMENT.pack(seg.base, seg.limit, seg.selector, seg.type, seg.dpl, flags, bytes(7))


def _unpack_segment(raw: bytes) -> Segment:
    base, limit, selector, type_, dpl, flags, reserved = SEGMENT.unpack(raw)
    if any(reserved) or flags >> len(SEG_FLAGS) or type_ > 15 or dpl > 3:
        raise WireError(Err.INVALID, f"segment: type {type_}, dpl {dpl}, flags {flags:#x} or reserved bytes")
    bits = {name: bool(flags >> n & 1) for n, name in enumerate(SEG_FLAGS)}
    return Segment(selector, base, limit, type_, dpl=dpl, **bits)


def pack_control(ctl: Control) -> bytes:
    pd = ctl.pdptes
    head = CONTROL_HEAD.pack(
        ctl.cr0, ctl.cr2, ctl.cr3, ctl.cr4, ctl.efer, ctl.cpl, ctl.pkru,
        ctl.gdtr[0], ctl.gdtr[1], 0, ctl.idtr[0], ctl.idtr[1], 0,
        int(pd is not None), 0, *(pd if pd is not None else (0, 0, 0, 0)), ctl.xcr0,
    )  # fmt: skip
    return head + b"".join(_pack_segment(s) for s in (*ctl.segs, ctl.tr, ctl.ldtr))


def unpack_control(raw: bytes) -> Control:
    f = CONTROL_HEAD.unpack_from(raw)
    cr0, cr2, cr3, cr4, efer, cpl, pkru, gbase, glimit, r0, ibase, ilimit, r1, has_pd, r2 = f[:15]
    if r0 or r1 or r2 or has_pd > 1 or (not has_pd and any(f[15:19])):
        raise WireError(Err.MALFORMED, "control: reserved fields set")
    if cpl > 3 or glimit > 0xFFFF or ilimit > 0xFFFF:
        raise WireError(Err.INVALID, f"control: cpl {cpl}, gdtr limit {glimit:#x}, idtr limit {ilimit:#x}")
    at = CONTROL_HEAD.size
    segs = [_unpack_segment(raw[at + n * SEGMENT.size : at + (n + 1) * SEGMENT.size]) for n in range(8)]
    pdptes = (f[15], f[16], f[17], f[18]) if has_pd else None
    gdtr, idtr = (gbase, glimit), (ibase, ilimit)
    xcr0 = f[19]
    if not xcr0 & 1:
        raise WireError(Err.INVALID, f"control: xcr0 {xcr0:#x} without x87 (bit 0 is always set)")
    return Control(cr0, cr2, cr3, cr4, efer, cpl, segs[:6], gdtr, idtr, segs[6], segs[7], pdptes, pkru, xcr0)


def _lanes(values: list[int], width: int) -> bytes:
    return b"".join(v.to_bytes(width, "little") for v in values)


def pack_vector(vec: VectorState) -> bytes:
    return VECTOR.pack(
        _lanes(vec.zmm, 64),
        _lanes(vec.k, 8),
        _lanes(vec.mm, 8),
        vec.mxcsr,
        0,
        _lanes(vec.mm_hi, 2),
        vec.fsw,
        vec.ftw,
    )


def unpack_vector(raw: bytes) -> VectorState:
    zmm, k, mm, mxcsr, reserved, mm_hi, fsw, ftw = VECTOR.unpack(raw)
    if reserved or ftw >> 8:
        raise WireError(Err.MALFORMED, "vector: reserved word or tag bits 15:8 set")

    def split(blob: bytes, width: int) -> list[int]:
        return [int.from_bytes(blob[i : i + width], "little") for i in range(0, len(blob), width)]

    return VectorState(split(zmm, 64), split(k, 8), mxcsr, split(mm, 8), fsw, ftw, split(mm_hi, 2))


def error_text(raw: bytes) -> str:
    return raw[:STATUS_TEXT].split(b"\0", 1)[0].decode("utf-8", errors="replace")


__all__ = [
    "CONTROL_SIZE",
    "MAX_MESSAGE",
    "TRANSPORT_VERSION",
    "Cap",
    "DeviceKind",
    "Err",
    "Op",
    "RunState",
    "WireError",
    "pack_control",
    "pack_regs",
    "pack_vector",
    "unpack_control",
    "unpack_regs",
    "unpack_vector",
]
