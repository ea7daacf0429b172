"""`vmmio serve` as hostile input meets it: validation, isolation, dead clients, and a fuzz slice.

Every test talks to a real server process over its socket and run pages, as any client would.
"""

from __future__ import annotations

import array
import mmap
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmio.abi import (
    AbiError,
    Default,
    Discard,
    EntryError,
    FulfillMmio,
    InoutExit,
    MmioExit,
    SuspendedExit,
    pack_entry,
    unpack_exit,
)
from vmmio.memory import GuestMemory
from vmmio.service import protocol as P
from vmmio.service.client import Client, RemoteMachine, RemoteVcpu, RemoteVm, ServiceError
from vmmio.service.fuzz import fuzz, start_server
from vmmio.service.protocol import Cap, Err, Op, RunState
from vmmio.x86.state import CpuState, Regs, flat_protected_control

CODE = 0x1000
# mov eax, [0xd0000000]; mov [0xd0000004], eax; out 0xf4, al; jmp $ (a loop without exits)
GUEST = bytes.fromhex("a1000000d0a3040000d0e6f4ebfe")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("serve")
    path, log = str(tmp / "vmm.sock"), tmp / "serve.log"
    proc = start_server(path, str(log))
    yield path, log
    proc.terminate()
    assert proc.wait(10) == 0
    assert "Traceback" not in log.read_text()


@pytest.fixture
def path(served: tuple[str, Path]) -> str:
    return served[0]


def _vm(client: Client) -> RemoteVm:
    vm = client.create_vm([(0, 0x10_0000)])
    vm.vm.memory.write(CODE, GUEST)
    vcpu = vm.vcpus[0]
    state = CpuState(Regs(rip=CODE), flat_protected_control())
    vcpu.set_control(state.control)
    vcpu.set_regs(state.regs)
    return vm


def _to_spin(vcpu: RemoteVcpu) -> InoutExit:
    """Run the guest to its OUT (answering its MMIO read with 1): the next entry enters `jmp $`."""
    read = vcpu.run()
    assert isinstance(read, MmioExit)
    write = vcpu.run(read.fulfill(1))
    assert isinstance(write, MmioExit)
    out = vcpu.run(write.fulfill())
    assert isinstance(out, InoutExit)
    return out


def _status(client: Client, op: int, body: bytes = b"", vcpu: int = 0) -> int:
    try:
        client.request(op, body, vcpu)
    except ServiceError as err:
        return err.code
    return 0


def test_memory_backed_by_a_given_mapping() -> None:
    """GuestMemory can put a region on memory the caller mapped (the server's memfd); sizes must match."""
    fd = os.memfd_create("t")
    os.ftruncate(fd, 0x2000)
    mem = GuestMemory()
    region = mem.add_ram(0x1000, 0x2000, mmap.mmap(fd, 0x2000))
    mem.write(0x1800, b"shared")
    assert os.pread(fd, 6, 0x800) == b"shared" and region.size == 0x2000
    with pytest.raises(ValueError, match="backing"):
        mem.add_ram(0x10000, 0x1000, mmap.mmap(fd, 0x2000))
    os.close(fd)


def test_hello_negotiates_version_and_capabilities(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    bare = Client.__new__(Client)
    bare.sock, bare._lock, bare._tag = sock, threading.Lock(), 0
    assert _status(bare, Op.GET_REGS) == Err.STATE  # before HELLO
    newer = P.TRANSPORT_VERSION + 1
    assert _status(bare, Op.HELLO, P.HELLO_REQ.pack(newer, newer + 7, 0)) == Err.VERSION
    reply, _ = bare.request(Op.HELLO, P.HELLO_REQ.pack(0, 5, Cap.VECTOR | Cap.BATCHED_REP | 1 << 40))
    version, abi, caps = P.HELLO_REP.unpack(reply)[:3]
    # asked for, never assumed: batched REP is not here
    assert (version, abi, caps) == (P.TRANSPORT_VERSION, 2, Cap.VECTOR)
    assert _status(bare, Op.HELLO, P.HELLO_REQ.pack(1, 1, 0)) == Err.STATE
    sock.close()
    with Client.connect(path, caps=0) as client:
        _vm(client)
        assert _status(client, Op.GET_VECTOR) == Err.CAPABILITY
        assert _status(client, Op.ADD_DEVICE, P.DEVICE_REQ.pack(1, 0, 0xE000_0000, 0x1000)) == Err.CAPABILITY


def test_rejected_requests_change_nothing(path: str) -> None:
    with Client.connect(path) as client:
        vm = _vm(client)
        vcpu = vm.vcpus[0]
        before = vcpu.regs
        body = P.pack_regs(Regs(rip=0x4242))
        assert _status(client, Op.SET_REGS, body[:-1]) == Err.MALFORMED
        assert _status(client, Op.SET_REGS, body + b"\0") == Err.MALFORMED
        assert _status(client, Op.SET_REGS, body, vcpu=1) == Err.VCPU
        assert _status(client, 77) == Err.UNKNOWN_OP
        assert (
            _status(client, Op.CREATE_VM, P.CREATE_REQ.pack(1, 1, 1, 0) + P.REGION.pack(0, 4096)) == Err.STATE
        )
        ctl = P.pack_control(vcpu.control)
        assert (
            _status(client, Op.SET_CONTROL, ctl[:40] + (7).to_bytes(4, "little") + ctl[44:]) == Err.INVALID
        )  # CPL 7
        assert vcpu.regs == before
        assert (
            _status(client, Op.WRITE_RAM, P.RAM_REQ.pack(0xFFFFC, 8, 0) + b"x" * 8) == Err.RANGE
        )  # runs off RAM
        assert _status(client, Op.WRITE_RAM, P.RAM_REQ.pack(0x2000, 9, 0) + b"x" * 8) == Err.MALFORMED
        assert _status(client, Op.READ_RAM, P.RAM_REQ.pack(0, P.MAX_DATA + 1, 0)) == Err.LIMIT
        assert vm.read_ram(0xFFFF8, 8) == bytes(8)
        assert (
            _status(client, Op.ADD_DEVICE, P.DEVICE_REQ.pack(1, 0, 0x8000, 0x1000)) == Err.RANGE
        )  # over RAM
        # The raw socket: an empty packet, an oversized one, one carrying descriptors: answered, not fatal.
        reply, _ = client.send_raw(b"")
        assert P.HEADER.unpack_from(reply)[4] == Err.MALFORMED
        reply, _ = client.send_raw(P.header(P.REQUEST_MAGIC, Op.GET_REGS) + bytes(P.MAX_MESSAGE))
        assert P.HEADER.unpack_from(reply)[4] == Err.LIMIT
        r, w = os.pipe()
        fds = array.array("i", [r, w]).tobytes()
        client.sock.sendmsg(
            [P.header(P.REQUEST_MAGIC, Op.GET_REGS)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        )
        reply = client.sock.recv(P.MAX_MESSAGE)
        assert P.HEADER.unpack_from(reply)[4] == Err.OK
        os.close(r)
        os.close(w)
        assert vcpu.regs == before


def test_run_page_entries_are_validated(path: str) -> None:
    with Client.connect(path) as client:
        vm = _vm(client)
        vcpu = vm.vcpus[0]
        ex = vcpu.run()
        assert isinstance(ex, MmioExit) and ex == MmioExit(0xD000_0000, 4, False, 0)
        with pytest.raises(EntryError):
            vcpu.run(Default())  # a request is pending
        with pytest.raises(EntryError):
            vcpu.run(FulfillMmio(0xD000_0008, 4, False, 1))
        bad = bytearray(pack_entry(ex.fulfill(5)))
        bad[40] = 1  # a reserved byte
        status, text = vcpu.post(bytes(bad))
        assert status == Err.ENTRY and "reserved" in P.error_text(text)
        with pytest.raises(AbiError):  # what RemoteVcpu.run makes of ENTRY (pack_entry never builds one)
            raise AbiError(P.error_text(text))
        assert _status(client, Op.SET_REGS, P.pack_regs(Regs())) == Err.PENDING
        # A ring with a state word that is not POSTED: RUN_STATE, nothing runs.
        vcpu.words[P.OFF_STATE // 4] = 9
        os.write(vcpu.kick, (1).to_bytes(8, "little"))
        while vcpu.words[P.OFF_STATE // 4] != RunState.DONE:
            os.read(vcpu.done, 8)
        assert vcpu.words[P.OFF_STATUS // 4] == Err.RUN_STATE
        # Everything refused left the request pending, exactly as before: the right answer goes through.
        assert vcpu.run(ex.fulfill(41)) == MmioExit(0xD000_0004, 4, True, 41)
        assert vcpu.run(FulfillMmio(0xD000_0004, 4, True, 41)) == InoutExit(0xF4, 1, False, 41)
        assert vcpu.stats()[:2] == (7, 4)  # posts, rejected (the ring with a bad state counts)


def test_run_page_written_while_running_and_stop(path: str) -> None:
    """While the guest spins, control requests on the vCPU get BUSY, a post written into the page is
    ignored and noted, and STOP ends the run with SuspendedExit."""
    with Client.connect(path) as client:
        vm = _vm(client)
        vcpu = vm.vcpus[0]
        out = _to_spin(vcpu)
        words = vcpu.words
        vcpu.page[P.OFF_ENTRY : P.OFF_ENTRY + 48] = pack_entry(out.fulfill())
        words[P.OFF_STATE // 4] = RunState.POSTED
        os.write(vcpu.kick, (1).to_bytes(8, "little"))  # runs `jmp $` in the guest: no exit comes
        deadline = time.monotonic() + 5
        while words[P.OFF_STATE // 4] != RunState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)
        assert _status(client, Op.GET_REGS) == Err.BUSY
        vcpu.page[P.OFF_ENTRY : P.OFF_ENTRY + 48] = pack_entry(Discard())  # scribbled mid-run
        words[P.OFF_STATE // 4] = RunState.POSTED
        client.request(Op.STOP)
        while words[P.OFF_STATE // 4] != RunState.DONE:
            os.read(vcpu.done, 8)
        assert words[P.OFF_STATUS // 4] == Err.OK
        assert words[P.OFF_NOTES // 4] == P.NOTE_WRITTEN_WHILE_RUNNING  # the Discard was not taken
        assert unpack_exit(vcpu.page[P.OFF_EXIT : P.OFF_EXIT + 48]) == SuspendedExit()
        assert vcpu.regs.rip == CODE + 12  # at `jmp $`, and the vCPU answers again
        vcpu.request_stop()  # a stop asked between runs ends the next one at once
        assert vcpu.run() == SuspendedExit() and vcpu.notes == 0


def test_dead_client_releases_its_vm(served: tuple[str, Path]) -> None:
    """SIGKILL a client while its guest runs: the server's process for it ends, the others serve on."""
    path, log = served
    script = textwrap.dedent(f"""
        import sys
        from vmmio.service.client import Client
        from tests.test_service import _to_spin, _vm
        client = Client.connect({path!r})
        v = _vm(client).vcpus[0]
        out = _to_spin(v)
        print("running", flush=True)
        v.run(out.fulfill())  # `jmp $`: never returns
    """)
    before = log.read_text()
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=repo)
    assert proc.stdout is not None and proc.stdout.readline() == b"running\n"
    new = log.read_text()[len(before) :]
    served_by = re.findall(r"(conn \d+): served by pid (\d+)", new)
    assert served_by, new
    name, pid = served_by[-1][0], int(served_by[-1][1])
    assert Path(f"/proc/{pid}").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while f"{name}: process {pid} ended" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f"{name}: process {pid} ended" in log.read_text()
    assert not Path(f"/proc/{pid}").exists()
    with Client.connect(path) as client:  # the server serves on
        assert isinstance(_vm(client).vcpus[0].run(), MmioExit)


def test_slow_client_does_not_block_others(path: str) -> None:
    """A client sits on an exit (and another VM spins in its guest); a third runs a guest to the end."""
    with Client.connect(path) as slow, Client.connect(path) as spinning:
        held = _vm(slow).vcpus[0]
        pending = held.run()
        assert isinstance(pending, MmioExit)
        spin = _vm(spinning).vcpus[0]
        out = _to_spin(spin)
        spin.page[P.OFF_ENTRY : P.OFF_ENTRY + 48] = pack_entry(out.fulfill())
        spin.words[P.OFF_STATE // 4] = RunState.POSTED
        os.write(spin.kick, (1).to_bytes(8, "little"))  # into `jmp $`, left running
        results: list[int] = []

        def run_hello() -> None:
            from vmmio.guests import load

            with Client.connect(path) as client:
                m = RemoteMachine(client, uart_sink=lambda _: None)
                results.append(m.run(m.vcpu(m.load(load("hello")))).status)

        threads = [threading.Thread(target=run_hello) for _ in range(3)]  # several connections at once
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [0, 0, 0]
        assert isinstance(held.run(pending.fulfill(7)), MmioExit)  # the slow one goes on when it likes
        spinning.request(Op.STOP)


def test_fuzz_slice(path: str) -> None:
    """A slice of `make fuzz-service`: mutated control messages and run-page entries, no divergence."""
    report = fuzz(path, 3000, seed=1)
    assert report.divergences == [], report.summary()
    assert report.steps == 3000
    assert report.control[Err.OK.name] > 100 and report.runs[Err.OK.name] > 300
    for code in (Err.MALFORMED, Err.ENTRY, Err.MISMATCH, Err.RUN_STATE, Err.VCPU):
        assert report.control[code.name] + report.runs[code.name] > 0, code
