"""The Python client of `vmmio serve`: a `RemoteVcpu` with the in-process `Vcpu`'s boundary API.

`RemoteVcpu.run(entry) -> exit` writes the entry on the vCPU's shared run page, rings the doorbell and
waits for the server's ring: no socket traffic per exit. Registers, control and vector state, STOP and
RAM go over the control socket. Guest RAM is the server's memfd mapped here, wrapped in a local `Vm`
whose regions are those mappings (`GuestMemory.add_ram(..., backing=)`), so `Machine` loads images into
it as it does in process; `RemoteMachine` is that `Machine`.
"""

from __future__ import annotations

import array
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from vmmio.abi import (
    ABI_VERSION,
    RECORD_SIZE,
    AbiError,
    Default,
    EntryError,
    VmEntry,
    VmExit,
    pack_entry,
    unpack_exit,
)
from vmmio.machine import Image, Layout, Machine
from vmmio.service import protocol as P
from vmmio.service.protocol import Err, Op, RunState
from vmmio.vmm.vm import Vm
from vmmio.x86.state import Control, Regs, VectorState

DEFAULT_CAPS: Final = P.Cap.VECTOR | P.Cap.KERNEL_DEVICES | P.Cap.STATS
_RING: Final = (1).to_bytes(8, "little")
SPIN_NS: Final = int(os.environ.get("VMMIO_CLIENT_SPIN_NS", "0") or 0)  # poll before sleeping (server.py)
_STATE, _STATUS, _NOTES = P.OFF_STATE // 4, P.OFF_STATUS // 4, P.OFF_NOTES // 4


class ServiceError(Exception):
    """The server refused a request: `code` (protocol.Err) says why, the text says what."""

    def __init__(self, code: int, text: str) -> None:
        name = Err(code).name if code in Err._value2member_map_ else str(code)
        super().__init__(f"{name}: {text}")
        self.code = code


class Client:
    """One connection to a server: HELLO done at construction, then at most one VM."""

    def __init__(self, sock: socket.socket, caps: int = DEFAULT_CAPS) -> None:
        self.sock = sock
        self._lock = threading.Lock()  # request/reply pairs from several threads (STOP from a watcher)
        self._tag = 0
        reply, _ = self.request(Op.HELLO, P.HELLO_REQ.pack(P.TRANSPORT_VERSION, P.TRANSPORT_VERSION, caps))
        version, abi, granted, self.max_message, self.max_vcpus, self.max_ram = P.HELLO_REP.unpack(reply)
        if version != P.TRANSPORT_VERSION or abi != ABI_VERSION:
            raise ServiceError(Err.VERSION, f"server chose transport {version}, ABI {abi}")
        self.caps = granted

    @classmethod
    def connect(cls, path: str, caps: int = DEFAULT_CAPS, timeout: float = 0.0) -> Client:
        """Connect to the server listening at `path`, retrying for `timeout` seconds while it starts."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(path)
                return cls(sock, caps)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, msg: bytes) -> tuple[bytes, list[int]]:
        """Send one packet as is and return the reply packet with its descriptors (tests, fuzzing)."""
        with self._lock:
            self.sock.send(msg)
            return _recv(self.sock)

    def request(self, op: int, body: bytes = b"", vcpu: int = 0) -> tuple[bytes, list[int]]:
        """One request: the reply payload and descriptors, or ServiceError with the server's code."""
        with self._lock:
            self._tag = (self._tag + 1) & 0xFFFF_FFFF
            tag = self._tag
            self.sock.send(P.header(P.REQUEST_MAGIC, op, vcpu, tag) + body)
            reply, fds = _recv(self.sock)
        if len(reply) < P.HEADER.size:
            raise ConnectionError("the server closed the connection")
        magic, rop, _, rtag, status = P.HEADER.unpack_from(reply)
        if magic != P.REPLY_MAGIC or rop != op or rtag != tag:
            raise ConnectionError(f"reply {magic!r} op {rop} tag {rtag} does not answer op {op} tag {tag}")
        if status:
            for fd in fds:
                os.close(fd)
            raise ServiceError(status, P.error_text(reply[P.HEADER.size :]))
        return reply[P.HEADER.size :], fds

    def create_vm(self, regions: Sequence[tuple[int, int]], vcpus: int = 1, rep_budget: int = 64) -> RemoteVm:
        """A VM with RAM `regions` [(gpa, size)] and `vcpus` vCPUs in their reset state."""
        body = P.CREATE_REQ.pack(vcpus, len(regions), P.Backend.UNICORN, rep_budget)
        body += b"".join(P.REGION.pack(gpa, size) for gpa, size in regions)
        reply, fds = self.request(Op.CREATE_VM, body)
        return RemoteVm(self, reply, fds)


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    msg, anc, _, _ = sock.recvmsg(P.MAX_MESSAGE, socket.CMSG_SPACE(4 * (2 + 2 * P.MAX_VCPUS)))
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


class RemoteVm:
    """The client's view of a served VM: RAM mapped from the server's memfd, and its vCPUs."""

    def __init__(self, client: Client, reply: bytes, fds: list[int]) -> None:
        self.client = client
        ram_size, page_size, nregions = P.CREATE_REP.unpack_from(reply)
        ram_fd, run_fd, *doorbells = fds
        nvcpus = len(doorbells) // 2
        self.vm = Vm()  # local: memory and address maps only; the kernel state is the server's
        for n in range(nregions):
            gpa, size, offset = P.REGION_REP.unpack_from(reply, P.CREATE_REP.size + n * P.REGION_REP.size)
            self.vm.memory.add_ram(gpa, size, mmap.mmap(ram_fd, size, offset=offset))
        self.pages = mmap.mmap(run_fd, nvcpus * page_size)
        os.close(ram_fd)
        os.close(run_fd)
        self.vcpus = [
            RemoteVcpu(
                self,
                n,
                memoryview(self.pages)[n * page_size : (n + 1) * page_size],
                *doorbells[2 * n : 2 * n + 2],
            )
            for n in range(nvcpus)
        ]
        self.ram_size = ram_size

    @property
    def memory(self) -> object:
        return self.vm.memory

    def add_device(self, kind: P.DeviceKind, base: int, size: int) -> None:
        """Map an in-kernel device (served by the server without an exit)."""
        self.client.request(Op.ADD_DEVICE, P.DEVICE_REQ.pack(kind, 0, base, size))

    def write_ram(self, gpa: int, data: bytes) -> None:
        """Write RAM through the server (which then drops translated code); the mapping is faster."""
        for at in range(0, len(data), P.MAX_DATA):
            chunk = data[at : at + P.MAX_DATA]
            self.client.request(Op.WRITE_RAM, P.RAM_REQ.pack(gpa + at, len(chunk), 0) + chunk)

    def read_ram(self, gpa: int, length: int) -> bytes:
        reply, _ = self.client.request(Op.READ_RAM, P.RAM_REQ.pack(gpa, length, 0))
        return reply

    def invalidate_code(self) -> None:
        """Tell the server guest code in the shared RAM changed (it drops the translations it made)."""
        self.client.request(Op.INVALIDATE_CODE)


class RemoteVcpu:
    """A served vCPU with the boundary API of `vmmio.vmm.Vcpu`: run, request_stop, registers."""

    def __init__(self, vm: RemoteVm, index: int, page: memoryview, kick: int, done: int) -> None:
        self.remote = vm
        self.index = index
        self.page = page
        self.words = page.cast("I")
        self.kick = kick
        self.done = done
        self.notes = 0  # the last post's notes word
        self._entries: dict[VmEntry, bytes] = {}
        self._exits: dict[bytes, VmExit] = {}

    # -- the boundary ----------------------------------------------------------------------------------

    def post(self, record: bytes) -> tuple[int, bytes]:
        """Post one raw entry record; (status, exit record or error text) once the server answers."""
        page, words = self.page, self.words
        page[P.OFF_ENTRY : P.OFF_ENTRY + RECORD_SIZE] = record
        words[_STATE] = RunState.POSTED
        os.write(self.kick, _RING)
        done = RunState.DONE
        deadline = time.perf_counter_ns() + SPIN_NS
        while words[_STATE] != done and time.perf_counter_ns() < deadline:
            pass  # most exits come back within tens of microseconds: cheaper than a wake-up
        while words[_STATE] != done:
            os.read(self.done, 8)
        status = words[_STATUS]
        self.notes = words[_NOTES]
        if status:
            return status, bytes(page[P.OFF_TEXT : P.OFF_TEXT + P.TEXT_SIZE])
        return 0, bytes(page[P.OFF_EXIT : P.OFF_EXIT + RECORD_SIZE])

    def run(self, entry: VmEntry | None = None) -> VmExit:
        """Apply `entry` and return the next exit, exactly as `Vcpu.run` (EntryError if refused)."""
        if entry is None:
            entry = Default()
        record = self._entries.get(entry)
        if record is None:
            record = pack_entry(entry)
            if len(self._entries) > 4096:
                self._entries.clear()
            self._entries[entry] = record
        status, raw = self.post(record)
        if status:
            text = P.error_text(raw)
            if status == Err.MISMATCH:
                raise EntryError(text)
            if status == Err.ENTRY:
                raise AbiError(text)
            raise ServiceError(status, text)
        ex = self._exits.get(raw)
        if ex is None:
            ex = unpack_exit(raw)
            if len(self._exits) > 4096:
                self._exits.clear()
            self._exits[raw] = ex
        return ex

    def request_stop(self) -> None:
        """Make the run in progress (or the next) return SuspendedExit soon; callable from any thread."""
        self.remote.client.request(Op.STOP, vcpu=self.index)

    # -- state -----------------------------------------------------------------------------------------

    def _get(self, op: Op) -> bytes:
        return self.remote.client.request(op, vcpu=self.index)[0]

    @property
    def regs(self) -> Regs:
        return P.unpack_regs(self._get(Op.GET_REGS))

    def set_regs(self, regs: Regs) -> None:
        self.remote.client.request(Op.SET_REGS, P.pack_regs(regs), self.index)

    @property
    def control(self) -> Control:
        return P.unpack_control(self._get(Op.GET_CONTROL))

    def set_control(self, ctl: Control) -> None:
        self.remote.client.request(Op.SET_CONTROL, P.pack_control(ctl), self.index)

    @property
    def vector(self) -> VectorState:
        return P.unpack_vector(self._get(Op.GET_VECTOR))

    def set_vector(self, vec: VectorState) -> None:
        self.remote.client.request(Op.SET_VECTOR, P.pack_vector(vec), self.index)

    def stats(self) -> tuple[int, int, int, int]:
        """(posts, rejected posts, ns in Vcpu.run, ns serving posts) as the server counted them."""
        values: tuple[int, int, int, int] = P.STATS_REP.unpack(self._get(Op.STATS))
        return values


class RemoteMachine(Machine):
    """A `Machine` whose kernel is a server: RAM is the served VM's, the vCPU a `RemoteVcpu`.

    The device models, image loading and the run loop are Machine's own, unchanged.
    """

    def __init__(
        self,
        client: Client,
        layout: Layout | None = None,
        *,
        uart_sink: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__(layout, uart_sink=uart_sink)
        self.remote = client.create_vm([(0, self.layout.ram_size)])
        self.vm = self.remote.vm  # the anonymous RAM Machine made is never touched, and goes

    def vcpu(self, image: Image, backend: str = "unicorn") -> RemoteVcpu:
        if backend != "unicorn":
            raise ValueError(f"a served VM runs on the unicorn backend, not {backend!r}")
        state = self.entry_state(image)
        vcpu = self.remote.vcpus[0]
        vcpu.set_control(state.control)
        vcpu.set_regs(state.regs)
        return vcpu


def spawn_server(stderr: int | None = subprocess.DEVNULL) -> tuple[Client, subprocess.Popen[bytes]]:
    """A private server process on one end of a socketpair (`vmmio run --remote auto`)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cmd = [sys.executable, "-m", "vmmio.cli", "serve", "--fd", str(theirs.fileno())]
    proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stderr=stderr)
    theirs.close()
    return Client(ours), proc


__all__ = ["Client", "RemoteMachine", "RemoteVcpu", "RemoteVm", "ServiceError", "spawn_server"]
