"""`vmmio serve`: the kernel as a service process, in the role of bhyve's /dev/vmm.

One process per connection (forked by the listener): a VM's guest code, its Python emulation and its
memory live in a process of their own, so VMs run in parallel on separate cores (no shared GIL), a slow
or hostile client can stall only its own VM, and a client that dies takes its VM with it: the child sees
end-of-file on the socket and exits, and the kernel frees the memfds once the last mapping is gone.

Inside the child, one thread serves the control socket and one thread per vCPU waits on that vCPU's
doorbell. The vCPU's lock is held while it runs; control operations on it take the lock without waiting
and answer BUSY instead, so nothing the client sends can block the control thread (STOP works mid-run).
Every request and every run-page entry is validated before anything changes; a rejected one is answered
with a status code, logs one line, and leaves the VM as it was.
"""

from __future__ import annotations

import array
import contextlib
import errno
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Final, TypeVar

from vmmio.abi import (
    ABI_VERSION,
    RECORD_SIZE,
    AbiError,
    EntryError,
    VmEntry,
    VmExit,
    pack_exit,
    unpack_entry,
)
from vmmio.devices import MemoryDevice
from vmmio.memory import RangeMap
from vmmio.service import protocol as P
from vmmio.service.protocol import Err, Op, RunState, WireError
from vmmio.vmm.vcpu import Vcpu, VcpuBusy
from vmmio.vmm.vm import Vm

LOG_LIMIT: Final = 50  # rejection lines logged per connection; the rest are counted
# Nanoseconds a runner polls its run page before sleeping on the doorbell (VMMIO_SERVE_SPIN_NS). Off by
# default: on machines whose CPUs are shared (as where this was measured: two vCPUs, one core's worth of
# throughput) a spinning peer steals the time the other side needs, and every exit got 2-4x slower.
SPIN_NS: Final = int(os.environ.get("VMMIO_SERVE_SPIN_NS", "0") or 0)
CACHE_LIMIT: Final = 4096  # decoded entries / encoded exits remembered per vCPU (loops repeat them)
U32_STATE, U32_STATUS, U32_NOTES, U32_SEQ = (
    o // 4 for o in (P.OFF_STATE, P.OFF_STATUS, P.OFF_NOTES, P.OFF_SEQ)
)


class Log:
    """One line per event on the server's stderr, prefixed with the connection's name."""

    def __init__(self, name: str, out: IO[str] | None = None) -> None:
        self.name = name
        self.out = out if out is not None else sys.stderr
        self.rejections = 0

    def __call__(self, text: str) -> None:
        try:
            self.out.write(f"vmmio serve [{self.name}]: {text}\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the VM down

    def rejected(self, text: str) -> None:
        self.rejections += 1
        if self.rejections <= LOG_LIMIT:
            self(
                f"rejected: {text}"
                + (" (further rejections are counted only)" if self.rejections == LOG_LIMIT else "")
            )


@dataclass(eq=False)
class VcpuSlot:
    """One vCPU with its run page, doorbells and counters."""

    index: int
    vcpu: Vcpu
    page: memoryview  # this vCPU's 4 KiB of the run-page memfd
    words: memoryview  # the same, as u32 words
    kick: int  # eventfd the client rings after posting an entry
    done: int  # eventfd the server rings when the post is answered
    lock: threading.Lock = field(default_factory=threading.Lock)
    flush: bool = False  # guest code in RAM changed: drop translated code before the next run
    posts: int = 0
    rejected: int = 0
    spurious: int = 0
    run_ns: int = 0
    serve_ns: int = 0
    entries: dict[bytes, VmEntry] = field(default_factory=dict)
    exits: dict[VmExit, bytes] = field(default_factory=dict)


T = TypeVar("T")
Handler = Callable[["Session", int, bytes], tuple[bytes, list[int]]]


class Session:
    """One connection: the HELLO, then one VM, its vCPUs and their runner threads."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.version = 0
        self.caps = 0
        self.vm: Vm | None = None
        self.slots: list[VcpuSlot] = []
        self.devices = 0
        self._keep: list[object] = []  # mappings that must outlive the VM's views of them

    # -- dispatch --------------------------------------------------------------------------------------

    def handle(self, msg: bytes) -> bytes | tuple[bytes, list[int]]:
        """Answer one control message: the reply packet, with descriptors to pass for CREATE_VM."""
        if len(msg) < P.HEADER.size:
            self.log.rejected(f"{len(msg)}-byte message is shorter than the header")
            return self._error(0, 0, 0, Err.MALFORMED, "message shorter than the 16-byte header")
        magic, op, vcpu, tag, status = P.HEADER.unpack_from(msg)
        try:
            if magic != P.REQUEST_MAGIC or status:
                raise WireError(Err.MALFORMED, f"bad magic {magic!r} or non-zero status word {status:#x}")
            handler = HANDLERS.get(op)
            if handler is None:
                raise WireError(Err.UNKNOWN_OP, f"unknown operation {op}")
            if op != Op.HELLO and not self.version:
                raise WireError(Err.STATE, "HELLO first")
            cap = P.NEEDS_CAP.get(Op(op))
            if cap is not None and not self.caps & cap:
                raise WireError(Err.CAPABILITY, f"{Op(op).name} needs capability {cap.name}, not granted")
            body, fds = handler(self, vcpu, msg[P.HEADER.size :])
        except WireError as err:
            name = Op(op).name if op in Op._value2member_map_ else str(op)
            self.log.rejected(f"{name}: {Err(err.code).name}: {err}")
            return self._error(op, vcpu, tag, err.code, str(err))
        except Exception as err:  # a server bug: say so, keep serving
            self.log(f"internal error on op {op}: {type(err).__name__}: {err}")
            return self._error(op, vcpu, tag, Err.INTERNAL, f"{type(err).__name__}: {err}")
        return P.header(P.REPLY_MAGIC, op, vcpu, tag) + body, fds

    @staticmethod
    def _error(op: int, vcpu: int, tag: int, code: Err, text: str) -> bytes:
        raw = text.encode("utf-8", errors="replace")[: P.STATUS_TEXT - 1]
        return P.header(P.REPLY_MAGIC, op, vcpu, tag, code) + raw.ljust(P.STATUS_TEXT, b"\0")

    def _slot(self, vcpu: int) -> VcpuSlot:
        if self.vm is None:
            raise WireError(Err.STATE, "no VM yet: CREATE_VM first")
        if vcpu >= len(self.slots):
            raise WireError(Err.VCPU, f"no vCPU {vcpu} (the VM has {len(self.slots)})")
        return self.slots[vcpu]

    def _idle(self, vcpu: int) -> tuple[VcpuSlot, threading.Lock]:
        slot = self._slot(vcpu)
        if not slot.lock.acquire(blocking=False):
            raise WireError(Err.BUSY, f"vCPU {vcpu} is running")
        return slot, slot.lock

    # -- operations ------------------------------------------------------------------------------------

    def hello(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, P.HELLO_REQ.size)
        if self.version:
            raise WireError(Err.STATE, "HELLO was already answered")
        low, high, wanted = P.HELLO_REQ.unpack(body)
        if vcpu or not low <= P.TRANSPORT_VERSION <= high:
            raise WireError(Err.VERSION, f"versions {low}..{high}: this server speaks {P.TRANSPORT_VERSION}")
        self.version = P.TRANSPORT_VERSION
        self.caps = wanted & P.SERVER_CAPS
        reply = P.HELLO_REP.pack(self.version, ABI_VERSION, self.caps, P.MAX_MESSAGE, P.MAX_VCPUS, P.MAX_RAM)
        return reply, []

    def create_vm(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        if len(body) < P.CREATE_REQ.size:
            raise WireError(Err.MALFORMED, f"CREATE_VM payload is {len(body)} bytes")
        if self.vm is not None:
            raise WireError(Err.STATE, "this connection already has a VM")
        nvcpus, nregions, backend, budget = P.CREATE_REQ.unpack_from(body)
        if not 1 <= nvcpus <= P.MAX_VCPUS or not 1 <= nregions <= P.MAX_REGIONS:
            raise WireError(
                Err.LIMIT, f"{nvcpus} vCPUs, {nregions} regions (1..{P.MAX_VCPUS}, 1..{P.MAX_REGIONS})"
            )
        _size(body, P.CREATE_REQ.size + nregions * P.REGION.size)
        if vcpu or backend != P.Backend.UNICORN or budget > 1 << 16:
            raise WireError(Err.INVALID, f"backend {backend} (1: unicorn), rep budget {budget} (0..65536)")
        regions = [P.REGION.unpack_from(body, P.CREATE_REQ.size + n * P.REGION.size) for n in range(nregions)]
        check = RangeMap[None]("RAM region")
        for gpa, size in regions:
            if size == 0 or (gpa | size) % P.PAGE or gpa + size > 1 << 52:
                raise WireError(Err.RANGE, f"region {gpa:#x}+{size:#x}: page-aligned, non-empty, below 2^52")
            try:
                check.add(gpa, size, None)
            except ValueError as err:
                raise WireError(Err.RANGE, str(err)) from None
        total = sum(size for _, size in regions)
        if total > P.MAX_RAM:
            raise WireError(Err.LIMIT, f"{total:#x} bytes of RAM; at most {P.MAX_RAM:#x}")
        return self._build(nvcpus, regions, budget or 64)

    def _build(self, nvcpus: int, regions: list[tuple[int, int]], budget: int) -> tuple[bytes, list[int]]:
        ram_fd = os.memfd_create("vmmio-ram", os.MFD_CLOEXEC)
        run_fd = os.memfd_create("vmmio-run", os.MFD_CLOEXEC)
        doorbells: list[int] = []
        try:
            os.ftruncate(ram_fd, sum(size for _, size in regions))
            os.ftruncate(run_fd, nvcpus * P.PAGE)
            vm = Vm()
            layout = []
            offset = 0
            for gpa, size in regions:
                vm.memory.add_ram(gpa, size, mmap.mmap(ram_fd, size, offset=offset))
                layout.append(P.REGION_REP.pack(gpa, size, offset))
                offset += size
            pages = mmap.mmap(run_fd, nvcpus * P.PAGE)
            self._keep.append(pages)
            slots = []
            for n in range(nvcpus):
                try:
                    vcpu = vm.create_vcpu("unicorn", rep_budget=budget)
                except Exception as err:  # the engine cannot start here
                    raise WireError(Err.BACKEND, f"cannot create vCPU {n}: {err}") from None
                page = memoryview(pages)[n * P.PAGE : (n + 1) * P.PAGE]
                P.RUN_HEAD.pack_into(page, 0, P.RUN_MAGIC, self.version, n, RunState.IDLE, 0, 0, 0)
                kick, done = os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)
                doorbells += [kick, done]
                slots.append(VcpuSlot(n, vcpu, page, page.cast("I"), kick, done))
        except BaseException:
            for fd in (ram_fd, run_fd, *doorbells):
                os.close(fd)
            raise
        self.vm, self.slots = vm, slots
        for slot in slots:
            threading.Thread(target=self._runner, args=(slot,), name=f"vcpu{slot.index}", daemon=True).start()
        self.log(f"VM created: {len(regions)} RAM region(s), {offset >> 20} MiB, {nvcpus} vCPU(s)")
        reply = P.CREATE_REP.pack(offset, P.PAGE, len(regions)) + b"".join(layout)
        # The client's copies keep the memory: ours are closed once sent (the mappings stay).
        return reply, [ram_fd, run_fd, *doorbells]

    def get_regs(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        slot, lock = self._idle(vcpu)
        with _held(lock):
            return P.pack_regs(slot.vcpu.regs), []

    def set_regs(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, P.REGS.size)
        regs = P.unpack_regs(body)
        slot, lock = self._idle(vcpu)
        with _held(lock):
            _pending_guard(slot.vcpu.set_regs, regs)
        return b"", []

    def get_control(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        slot, lock = self._idle(vcpu)
        with _held(lock):
            return P.pack_control(slot.vcpu.control), []

    def set_control(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, P.CONTROL_SIZE)
        ctl = P.unpack_control(body)
        slot, lock = self._idle(vcpu)
        with _held(lock):
            old = slot.vcpu.control
            try:
                _pending_guard(slot.vcpu.set_control, ctl)
            except WireError:
                raise
            except Exception as err:  # the engine refused part of it: put the old state back
                slot.vcpu.set_control(old)
                raise WireError(Err.INVALID, f"control state refused: {err}") from None
        return b"", []

    def get_vector(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        slot, lock = self._idle(vcpu)
        with _held(lock):
            return P.pack_vector(slot.vcpu.vector), []

    def set_vector(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, P.VECTOR.size)
        vec = P.unpack_vector(body)
        if vec.mxcsr >> 16:
            raise WireError(Err.INVALID, f"MXCSR {vec.mxcsr:#x} sets reserved bits")
        slot, lock = self._idle(vcpu)
        with _held(lock):
            try:
                _pending_guard(slot.vcpu.set_vector, vec)
            except WireError:
                raise
            except Exception as err:  # checked before anything is loaded (e.g. no AVX-512 state)
                raise WireError(Err.INVALID, f"vector state refused: {err}") from None
        return b"", []

    def _ram(self, body: bytes, write: bool) -> tuple[memoryview, bytes]:
        if len(body) < P.RAM_REQ.size:
            raise WireError(Err.MALFORMED, f"payload is {len(body)} bytes")
        gpa, length, reserved = P.RAM_REQ.unpack_from(body)
        data = body[P.RAM_REQ.size :]
        if reserved or (write and len(data) != length) or (not write and data):
            raise WireError(
                Err.MALFORMED, f"length {length} with {len(data)} data bytes, reserved {reserved}"
            )
        if not 0 < length <= P.MAX_DATA:
            raise WireError(Err.LIMIT, f"length {length}: 1..{P.MAX_DATA} per message")
        if self.vm is None:
            raise WireError(Err.STATE, "no VM yet: CREATE_VM first")
        region = self.vm.memory.ram_at(gpa, length)
        if region is None:
            raise WireError(Err.RANGE, f"[{gpa:#x}, {gpa + length:#x}) is not within one RAM region")
        off = gpa - region.gpa
        return region.view[off : off + length], data

    def read_ram(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        view, _ = self._ram(body, False)
        return bytes(view), []

    def write_ram(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        view, data = self._ram(body, True)
        view[:] = data
        self._invalidate()
        return b"", []

    def invalidate_code(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        self._slot(0)
        self._invalidate()
        return b"", []

    def _invalidate(self) -> None:
        for slot in self.slots:
            slot.flush = True  # the runner drops translated code before its next run

    def add_device(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, P.DEVICE_REQ.size)
        kind, reserved, base, size = P.DEVICE_REQ.unpack(body)
        if reserved or vcpu:
            raise WireError(Err.MALFORMED, "reserved word set")
        if kind not in P.DeviceKind._value2member_map_:
            raise WireError(Err.INVALID, f"unknown device kind {kind}")
        if not 0 < size <= P.MAX_DEVICE or self.devices >= P.MAX_DEVICES:
            raise WireError(
                Err.LIMIT, f"size {size:#x} (1..{P.MAX_DEVICE:#x}) or more than {P.MAX_DEVICES} devices"
            )
        self._slot(0)
        assert self.vm is not None
        held = []
        try:
            for slot in self.slots:  # the address maps change: no vCPU may be looking them up
                if not slot.lock.acquire(blocking=False):
                    raise WireError(Err.BUSY, f"vCPU {slot.index} is running")
                held.append(slot.lock)
            try:
                if kind == P.DeviceKind.MMIO_MEMORY:
                    if base % P.PAGE or size % P.PAGE:
                        raise WireError(Err.RANGE, f"MMIO device {base:#x}+{size:#x} must be page-aligned")
                    self.vm.add_mmio_device(base, size, MemoryDevice(size))
                else:
                    self.vm.add_port_device(base, size, MemoryDevice(size))
            except ValueError as err:
                if isinstance(err, WireError):
                    raise
                raise WireError(Err.RANGE, str(err)) from None
        finally:
            for lock in held:
                lock.release()
        self.devices += 1
        return b"", []

    def stop(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        self._slot(vcpu).vcpu.request_stop()
        return b"", []

    def stats(self, vcpu: int, body: bytes) -> tuple[bytes, list[int]]:
        _size(body, 0)
        s = self._slot(vcpu)
        return P.STATS_REP.pack(s.posts, s.rejected, s.run_ns, s.serve_ns), []

    # -- the run page ----------------------------------------------------------------------------------

    def _runner(self, slot: VcpuSlot) -> None:
        """Wait on the doorbell, serve the post, ring back; until the process ends."""
        words, posted = slot.words, RunState.POSTED
        clock, spin = time.perf_counter_ns, SPIN_NS
        while True:
            # Spin briefly for the next post (a fast client answers an exit within microseconds), then
            # sleep on the doorbell. A post found by spinning leaves its ring counted in the eventfd:
            # the next read returns at once, finds the page DONE, and is ignored as spurious.
            deadline = clock() + spin
            while words[U32_STATE] != posted and clock() < deadline:
                pass
            if words[U32_STATE] != posted:
                try:
                    os.read(slot.kick, 8)
                except OSError:
                    return
            try:
                self._serve_post(slot)
            except Exception as err:  # never leave the client waiting on a dead thread
                self.log(f"vCPU {slot.index}: internal error: {type(err).__name__}: {err}")
                self._answer(slot, Err.INTERNAL, f"{type(err).__name__}: {err}", None)

    def _serve_post(self, slot: VcpuSlot) -> None:
        words = slot.words
        state = words[U32_STATE]
        if state in (RunState.IDLE, RunState.DONE):
            slot.spurious += 1  # a ring with nothing posted (e.g. a second ring for one post): ignored
            return
        if state != RunState.POSTED:
            self._answer(slot, Err.RUN_STATE, f"doorbell rang with state word {state}; post with 1", None)
            return
        t0 = time.perf_counter_ns()
        words[U32_STATE] = RunState.RUNNING
        raw = bytes(slot.page[P.OFF_ENTRY : P.OFF_ENTRY + RECORD_SIZE])
        entry = slot.entries.get(raw)
        if entry is None:
            try:
                entry = unpack_entry(raw)
            except AbiError as err:
                self._answer(slot, Err.ENTRY, str(err), None)
                return
            if len(slot.entries) >= CACHE_LIMIT:
                slot.entries.clear()
            slot.entries[raw] = entry
        failure: tuple[Err, str] | None = None
        with slot.lock:
            if slot.flush:
                slot.flush = False
                invalidate = getattr(slot.vcpu.backend, "invalidate_code", None)
                if invalidate is not None:
                    invalidate()
            t1 = time.perf_counter_ns()
            try:
                ex = slot.vcpu.run(entry)
            except EntryError as err:
                failure = Err.MISMATCH, str(err)
            except Exception as err:
                self.log(f"vCPU {slot.index}: backend failed: {type(err).__name__}: {err}")
                failure = Err.BACKEND, f"{type(err).__name__}: {err}"
            slot.run_ns += time.perf_counter_ns() - t1
        # Published only after the lock is released: a client that sees DONE finds the vCPU idle.
        if failure is not None:
            self._answer(slot, *failure, None)
            return
        record = slot.exits.get(ex)
        if record is None:
            record = pack_exit(ex)
            if len(slot.exits) >= CACHE_LIMIT:
                slot.exits.clear()
            slot.exits[ex] = record
        written = (
            words[U32_STATE] != RunState.RUNNING or slot.page[P.OFF_ENTRY : P.OFF_ENTRY + RECORD_SIZE] != raw
        )
        slot.serve_ns += time.perf_counter_ns() - t0
        self._answer(slot, Err.OK, "", record, P.NOTE_WRITTEN_WHILE_RUNNING if written else 0)

    def _answer(self, slot: VcpuSlot, code: Err, text: str, record: bytes | None, notes: int = 0) -> None:
        """Publish the outcome of a post (exit first, state last) and ring the client's doorbell."""
        page, words = slot.page, slot.words
        slot.posts += 1
        if record is not None:
            page[P.OFF_EXIT : P.OFF_EXIT + RECORD_SIZE] = record
        if code:
            slot.rejected += 1
            self.log.rejected(f"vCPU {slot.index} run page: {code.name}: {text}")
            page[P.OFF_TEXT : P.OFF_TEXT + P.TEXT_SIZE] = text.encode("utf-8", "replace")[:255].ljust(
                256, b"\0"
            )
        words[U32_STATUS] = code
        words[U32_NOTES] = notes
        words[U32_SEQ] = (words[U32_SEQ] + 1) & 0xFFFF_FFFF
        words[U32_STATE] = RunState.DONE
        with contextlib.suppress(OSError):  # the client is gone: the process ends with the socket
            os.write(slot.done, b"\1\0\0\0\0\0\0\0")


HANDLERS: Final[dict[int, Handler]] = {
    Op.HELLO: Session.hello,
    Op.CREATE_VM: Session.create_vm,
    Op.GET_REGS: Session.get_regs,
    Op.SET_REGS: Session.set_regs,
    Op.GET_CONTROL: Session.get_control,
    Op.SET_CONTROL: Session.set_control,
    Op.GET_VECTOR: Session.get_vector,
    Op.SET_VECTOR: Session.set_vector,
    Op.READ_RAM: Session.read_ram,
    Op.WRITE_RAM: Session.write_ram,
    Op.ADD_DEVICE: Session.add_device,
    Op.STOP: Session.stop,
    Op.INVALIDATE_CODE: Session.invalidate_code,
    Op.STATS: Session.stats,
}


def _size(body: bytes, expected: int) -> None:
    if len(body) != expected:
        raise WireError(Err.MALFORMED, f"payload is {len(body)} bytes; this operation takes {expected}")


class _held:
    """`with _held(lock)`: release a lock acquired without waiting."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _pending_guard(setter: Callable[[T], None], value: T) -> None:
    try:
        setter(value)
    except VcpuBusy as err:
        raise WireError(Err.PENDING, str(err)) from None


# --- connections ----------------------------------------------------------------------------------------


def serve_connection(conn: socket.socket, log: Log) -> None:
    """Answer control messages until the peer closes or dies; then return (the VM goes with the process)."""
    session = Session(log)
    log("connected")
    while True:
        try:
            msg, anc, flags, _ = conn.recvmsg(P.MAX_MESSAGE, socket.CMSG_SPACE(16 * 4))
        except OSError as err:
            log(f"connection lost ({err.strerror}); VM released")
            return
        for level, kind, data in anc:  # descriptors a client sends us are closed, never used
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(data[: len(data) - len(data) % received.itemsize])
                for fd in received:
                    os.close(fd)
        if not msg and not anc and _hung_up(conn):
            log("closed by the client; VM released")
            return
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            log.rejected(f"message over {P.MAX_MESSAGE} bytes (or with too many descriptors)")
            tag = P.HEADER.unpack_from(msg)[3] if len(msg) >= P.HEADER.size else 0
            answer: bytes | tuple[bytes, list[int]] = Session._error(
                0, 0, tag, Err.LIMIT, "message too large"
            )
        else:
            answer = session.handle(msg)
        body, passed = answer if isinstance(answer, tuple) else (answer, [])
        try:
            if passed:
                conn.sendmsg([body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", passed))])
            else:
                conn.send(body)
        except OSError as err:
            log(f"connection lost ({err.strerror}); VM released")
            return
        finally:
            doorbells = {fd for s in session.slots for fd in (s.kick, s.done)}
            for fd in passed:
                if fd not in doorbells:  # the memfds: the mappings keep the memory; the doorbells stay open
                    os.close(fd)


def _hung_up(conn: socket.socket) -> bool:
    """After an empty read: did the peer close (POLLHUP), or send an empty packet (answered MALFORMED)?"""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _child(conn: socket.socket, name: str, out: IO[str] | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the terminal is for the listener
    status = 0
    try:
        serve_connection(conn, Log(name, out))
    except BaseException as err:  # logged; the process ends either way
        Log(name, out)(f"connection ended by {type(err).__name__}: {err}")
        status = 1
    os._exit(status)


def serve(path: str, *, out: IO[str] | None = None, ready: Callable[[], None] | None = None) -> int:
    """Listen on the Unix socket `path`; fork one process per connection. Returns on SIGTERM/SIGINT."""
    log = Log("listener", out)
    try:
        if os.path.exists(path) and not _listening(path):
            os.unlink(path)  # a stale socket from a server that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(path)
    except OSError as err:
        log(f"cannot listen on {path}: {err.strerror or err}")
        return 1
    sock.listen(64)
    children: dict[int, str] = {}
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    saved = [(s, signal.signal(s, stop)) for s in (signal.SIGTERM, signal.SIGINT)]
    log(f"listening on {path} (transport {P.TRANSPORT_VERSION}, ABI {ABI_VERSION}, pid {os.getpid()})")
    if ready is not None:
        ready()
    serial = 0
    try:
        while not stopping:
            _reap(children, log)
            try:
                readable, _, _ = select.select([sock], [], [], 0.2)
            except InterruptedError:
                continue
            if not readable:
                continue
            try:
                conn, _ = sock.accept()
            except OSError as err:
                if err.errno not in (errno.EINTR, errno.EAGAIN, errno.ECONNABORTED):
                    log(f"accept failed: {err.strerror}")
                continue
            serial += 1
            name = f"conn {serial}"
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(conn, name, out)
            conn.close()
            children[pid] = name
            log(f"{name}: served by pid {pid}")
    finally:
        for s, handler in saved:
            signal.signal(s, handler)
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while children and time.monotonic() < deadline:
            _reap(children, log)
            time.sleep(0.01)
    log("stopped")
    return 0


def serve_fd(fd: int, *, out: IO[str] | None = None) -> int:
    """Serve one already-connected SOCK_SEQPACKET socket (a private server: `vmmio run --remote auto`)."""
    conn = socket.socket(fileno=fd)
    serve_connection(conn, Log(f"fd {fd}", out))
    return 0


def _reap(children: dict[int, str], log: Log) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        name = children.pop(pid, f"pid {pid}")
        log(f"{name}: process {pid} ended (status {os.waitstatus_to_exitcode(status)}); its VM is gone")


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


__all__ = ["Session", "serve", "serve_connection", "serve_fd"]
