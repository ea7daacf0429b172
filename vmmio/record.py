"""Record a run's exits with the devices' answers, and replay them against the same image, device-free.

The container (docs/record.md has it byte by byte) is the ABI's own binary encoding framed:

    header   magic "VMMIOREC", version u16, reserved u16, metadata length u32, metadata (UTF-8 JSON:
             the image's name and SHA-256, the machine options, the ABI version)
    frames   tag u32, payload length u32, payload
             tag 1, exit:  RIP u64 (all ones: unknown), the 48-byte exit record (`abi.pack_exit`), the
                           48-byte entry record that answered it (`abi.pack_entry`; 48 zero bytes when the
                           run ended at this exit: kind 0 is never a valid record)
             tag 2, end:   UTF-8 JSON: how the run ended (reason, status, exits, detail)

Why binary rather than JSON lines: the frames are exactly what crossed the kernel/userspace boundary,
checked on reading by the same `unpack_exit`/`unpack_entry` a device process would use (magic, ABI
version, reserved bits), with nothing to round-trip through text; they are fixed-size, so exit N is at a
computable offset; and they are a third the size of the equivalent JSON. `vmmio replay --trace-json`
turns a record into JSON lines when a person or a tool wants text.

Replay re-runs the image on a `ReplayMachine`: the same layout and loader, no device models; each
request is checked against the recorded exit (and the RIP, when the backend is the recorded one) and
answered with the recorded entry. The first difference stops the replay (`Divergence`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from vmmio.abi import (
    ABI_VERSION,
    RECORD_SIZE,
    AbiError,
    FulfillInout,
    FulfillMmio,
    InoutExit,
    InstEmulExit,
    MmioExit,
    VmEntry,
    VmExit,
    pack_entry,
    pack_exit,
    unpack_entry,
    unpack_exit,
)
from vmmio.devices import GuestExit
from vmmio.insn_at import StateReader, state_reader
from vmmio.machine import Layout, Machine, RunResult, Serviced

__all__ = [
    "MAGIC",
    "VERSION",
    "Divergence",
    "Frame",
    "RecordError",
    "Recorder",
    "Recording",
    "ReplayMachine",
    "describe",
    "end_difference",
    "image_identity",
    "read_recording",
]

MAGIC = b"VMMIOREC"
VERSION = 1
TAG_EXIT, TAG_END = 1, 2
NO_RIP = (1 << 64) - 1
MAX_META = 1 << 20
_HEADER = struct.Struct("<8sHHI")
_FRAME = struct.Struct("<II")
_EXIT = struct.Struct(f"<Q{RECORD_SIZE}s{RECORD_SIZE}s")
_NO_ENTRY = bytes(RECORD_SIZE)
_META_TABLES = ("image", "machine", "limits")


class RecordError(ValueError):
    """The file is not a readable vmmio record (or not one this version reads)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One recorded exit: where the guest was, what it asked, what the devices answered."""

    rip: int | None
    exit: VmExit
    answer: VmEntry | None  # None: the run ended at this exit


@dataclass
class Recording:
    meta: dict[str, Any]
    frames: list[Frame]
    end: dict[str, Any] | None  # None when the recording was cut short (no end frame)


def image_identity(data: bytes, name: str, shipped: bool) -> dict[str, Any]:
    """What identifies the image in a record: its name (or path) and the hash of its bytes."""
    return {"name": name, "shipped": shipped, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def describe(ex: VmExit) -> str:
    """An exit in a few words, for divergence reports."""
    if isinstance(ex, MmioExit):
        what = f"write {ex.data:#x}" if ex.is_write else "read"
        return f"mmio {what} gpa={ex.gpa:#x} size={ex.size}"
    if isinstance(ex, InoutExit):
        what = "in" if ex.is_in else f"out {ex.data:#x}"
        return f"inout {what} port={ex.port:#x} size={ex.size}"
    if isinstance(ex, InstEmulExit):
        return f"inst_emul rip={ex.rip:#x} bytes={ex.insn.hex()} {ex.reason.name}"
    return type(ex).__name__.removesuffix("Exit").lower()


def _rip_of(read_state: StateReader | None, ex: VmExit) -> int | None:
    if isinstance(ex, InstEmulExit):
        return ex.rip
    return None if read_state is None else read_state()[0].rip


class Recorder:
    """A `Machine.run` observer writing every exit and its answer to a record file."""

    def __init__(self, out: IO[bytes], meta: dict[str, Any], vcpu: object) -> None:
        self.out = out
        self.read_state = state_reader(vcpu)
        blob = json.dumps({"abi": ABI_VERSION, **meta}, sort_keys=True).encode()
        out.write(_HEADER.pack(MAGIC, VERSION, 0, len(blob)) + blob)

    def __call__(self, s: Serviced) -> None:
        rip = _rip_of(self.read_state, s.exit)
        answer = _NO_ENTRY if s.answer is None else pack_entry(s.answer)
        payload = _EXIT.pack(NO_RIP if rip is None else rip, pack_exit(s.exit), answer)
        self.out.write(_FRAME.pack(TAG_EXIT, len(payload)) + payload)

    def finish(self, result: RunResult) -> None:
        end = {"reason": result.reason, "status": result.status, "exits": result.exits}
        blob = json.dumps({**end, "detail": result.detail}, sort_keys=True).encode()
        self.out.write(_FRAME.pack(TAG_END, len(blob)) + blob)


def _frames(data: bytes, at: int) -> Iterator[tuple[int, bytes]]:
    while at < len(data):
        if at + _FRAME.size > len(data):
            raise RecordError(f"truncated frame header at byte {at}")
        tag, length = _FRAME.unpack_from(data, at)
        at += _FRAME.size
        if at + length > len(data):
            raise RecordError(f"frame at byte {at - _FRAME.size} runs past the end of the file")
        yield tag, data[at : at + length]
        at += length


def read_recording(data: bytes) -> Recording:
    """Parse and check a whole record; RecordError says what is wrong and where."""
    if len(data) < _HEADER.size:
        raise RecordError("too short for a vmmio record")
    magic, version, _reserved, meta_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RecordError("not a vmmio record (bad magic)")
    if version != VERSION:
        raise RecordError(f"record format version {version}; this vmmio reads version {VERSION}")
    if meta_len > MAX_META or _HEADER.size + meta_len > len(data):
        raise RecordError("metadata length runs past the end of the file")
    try:
        meta = json.loads(data[_HEADER.size : _HEADER.size + meta_len])
    except ValueError as err:
        raise RecordError(f"unreadable metadata: {err}") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k, {}), dict) for k in _META_TABLES):
        raise RecordError("the metadata is not the object docs/record.md describes")
    if meta.get("abi") != ABI_VERSION:
        raise RecordError(f"recorded with ABI version {meta.get('abi')}; this vmmio speaks {ABI_VERSION}")
    frames: list[Frame] = []
    end: dict[str, Any] | None = None
    for tag, payload in _frames(data, _HEADER.size + meta_len):
        if end is not None:
            raise RecordError("frames after the end frame")
        if tag == TAG_EXIT and len(payload) == _EXIT.size:
            rip, raw_exit, raw_entry = _EXIT.unpack(payload)
            try:
                ex = unpack_exit(raw_exit)
                answer = None if raw_entry == _NO_ENTRY else unpack_entry(raw_entry)
            except AbiError as err:
                raise RecordError(f"exit {len(frames) + 1}: {err}") from None
            frames.append(Frame(None if rip == NO_RIP else rip, ex, answer))
        elif tag == TAG_END:
            try:
                end = json.loads(payload)
            except ValueError as err:
                raise RecordError(f"unreadable end frame: {err}") from None
            if not (
                isinstance(end, dict)
                and isinstance(end.get("reason"), str)
                and type(end.get("status")) is int
            ):
                raise RecordError("the end frame is not the object docs/record.md describes")
        else:
            raise RecordError(f"unknown frame (tag {tag}, {len(payload)} bytes) after exit {len(frames)}")
    return Recording(meta, frames, end)


class Divergence(Exception):
    """The replayed guest did something else than the recorded one."""

    def __init__(self, number: int, rip: int | None, expected: str, seen: str) -> None:
        where = f"rip {rip:#x}" if rip is not None else "rip unknown"
        super().__init__(f"exit {number} ({where}): expected {expected}, seen {seen}")
        self.number = number
        self.rip = rip
        self.expected = expected
        self.seen = seen


class ReplayMachine(Machine):
    """The recorded machine's layout and loader, with every request answered from the recording."""

    def __init__(self, layout: Layout, recording: Recording, compare_rip: bool = True) -> None:
        super().__init__(layout, uart_sink=_discard)
        self.recording = recording
        self.compare_rip = compare_rip
        self.matched = 0  # exits checked against the recording so far
        self.read_state: StateReader | None = None  # set by `replaying`

    def replaying(self, vcpu: object) -> None:
        """The vCPU whose RIP is compared with the recorded one."""
        self.read_state = state_reader(vcpu)

    def expect(self, ex: VmExit) -> Frame:
        """The recorded frame for this exit; Divergence if the exit (or its RIP) is not the recorded one."""
        frames = self.recording.frames
        number = self.matched + 1
        rip = _rip_of(self.read_state, ex)
        if self.matched >= len(frames):
            raise Divergence(number, rip, "the end of the recording", describe(ex))
        frame = frames[self.matched]
        if pack_exit(ex) != pack_exit(frame.exit):
            raise Divergence(number, rip, describe(frame.exit), describe(ex))
        if self.compare_rip and None not in (rip, frame.rip) and rip != frame.rip:
            raise Divergence(number, rip, f"{describe(ex)} at rip {frame.rip:#x}", f"it at rip {rip:#x}")
        self.matched = number
        return frame

    def service(self, ex: MmioExit | InoutExit) -> FulfillMmio | FulfillInout:
        frame = self.expect(ex)
        if frame.answer is None:  # the recorded run ended here: the debug device's write
            end = self.recording.end or {}
            raise GuestExit(int(end.get("status", 0)))
        if not isinstance(frame.answer, FulfillMmio | FulfillInout):
            raise Divergence(self.matched, frame.rip, "a fulfillment in the record", str(frame.answer))
        return frame.answer

    def observe(self, s: Serviced) -> None:
        """Checks the exits no device answers (HLT, shutdown, INST_EMUL, suspended)."""
        if not isinstance(s.exit, MmioExit | InoutExit):
            self.expect(s.exit)


# Endings the guest decides itself: a replay must end the same way (a limit, a timeout or a signal ends
# a recording wherever it happened to be; the replay then only has to match every recorded exit).
GUEST_ENDINGS = ("exit", "hlt", "reset", "shutdown", "inst_emul")


def end_difference(recording: Recording, matched: int, result: RunResult) -> str | None:
    """How a replay that matched `matched` exits ended differently from the recording; None if it did not."""
    frames = len(recording.frames)
    if matched < frames:
        return f"the run ended ({result.reason}) after {matched} exits; the record has {frames}"
    end = recording.end
    if end is None or end.get("reason") not in GUEST_ENDINGS:
        return None
    if (result.reason, result.status) != (end["reason"], end.get("status")):
        return (
            f"the run ended {result.reason} (status {result.status}); "
            f"the recorded run ended {end['reason']} (status {end.get('status')})"
        )
    return None


def _discard(data: bytes) -> None:
    """No device output in a replay: the UART model is never reached."""
