"""Hostile input against `vmmio serve`, checked against an in-process reference.

Each step sends the server either a control message or a run-page entry, well-formed or mutated (bytes
flipped, cut, extended, fields set to edge values). The reference is a plain `Vm`/`Vcpu` in this process
that receives every request the server accepted, through the kernel's own API; the two must agree:

- the server answers every packet with a well-formed reply (or status on the run page) and keeps serving;
- an accepted request is one the reference accepts too, with the same result (registers, control and
  vector state, RAM bytes, STATS shape), and an unmutated request the reference accepts is accepted;
- a run-page entry gets ENTRY exactly when `unpack_entry` refuses it, MISMATCH exactly when the
  reference `Vcpu.run` raises EntryError, and otherwise the very exit record the reference produces;
- state is compared in full every `CHECK_EVERY` steps and at the end of each epoch: a rejected request
  left the VM unchanged, since the reference never saw it.

The run is cut into epochs (a fresh connection, VM and reference each), so a guest driven somewhere
unrecoverable (shutdown, or a loop without exits that the watchdog had to STOP) costs only its epoch.

    python -m vmmio.service.fuzz --count 100000 [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from vmmio.abi import (
    RECORD_SIZE,
    AbiError,
    Default,
    Discard,
    EntryError,
    FulfillInout,
    FulfillMmio,
    InoutExit,
    MmioExit,
    ShutdownExit,
    VmEntry,
    VmExit,
    pack_entry,
    pack_exit,
    unpack_entry,
)
from vmmio.devices import MemoryDevice
from vmmio.service import protocol as P
from vmmio.service.client import Client, RemoteVcpu, RemoteVm
from vmmio.service.protocol import Err, Op, RunState
from vmmio.vmm.vcpu import Vcpu
from vmmio.vmm.vm import Vm
from vmmio.x86.state import Control, CpuState, Regs, VectorState, flat_protected_control

RAM = ((0, 0x10_0000), (0x20_0000, 0x1_0000))  # two regions: GPA checks have an edge in the middle
CODE = 0x1000
# 32-bit loop: MMIO read, MMIO write, a store to where ADD_DEVICE may map memory, a read-modify-write,
# OUT, IN, a 16-bit OUT to where ADD_DEVICE may map ports, inc ebx, jmp back. The rest of RAM is HLT.
GUEST = bytes.fromhex("a1000000d0a3080000d0a3000000e00105100000d0e680e48166e77043ebe1")
OTHER_OPS = (Op.GET_REGS, Op.GET_CONTROL, Op.GET_VECTOR, Op.STOP, Op.INVALIDATE_CODE, Op.STATS, Op.HELLO,
             Op.CREATE_VM, 0, 99)  # fmt: skip
EPOCH_STEPS = 2000
CHECK_EVERY = 64
WATCHDOG_S = 2.0
EDGES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFF_FFFF, 0x1000, 0xFFF, 8, 48)


def entry_state() -> CpuState:
    return CpuState(Regs(rip=CODE), flat_protected_control())


@dataclass
class Report:
    steps: int = 0
    epochs: int = 0
    control: Counter[str] = field(default_factory=Counter)  # status names of control replies
    runs: Counter[str] = field(default_factory=Counter)  # status names of run-page posts
    mutated: int = 0
    checks: int = 0
    watchdog: int = 0
    divergences: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ctl = ", ".join(f"{k} {v}" for k, v in sorted(self.control.items()))
        run = ", ".join(f"{k} {v}" for k, v in sorted(self.runs.items()))
        return "\n".join(
            (
                f"{self.steps} steps in {self.epochs} epochs ({self.mutated} mutated), "
                f"{self.checks} full state checks, {self.watchdog} watchdog stops",
                f"  control messages ({sum(self.control.values())}): {ctl}",
                f"  run-page posts ({sum(self.runs.values())}): {run}",
                f"  divergences: {len(self.divergences)}",
            )
        )


def mutate(rng: random.Random, msg: bytes) -> bytes:
    """One of: flip bytes, cut, extend, write an edge value somewhere (header fields included)."""
    buf = bytearray(msg)
    how = rng.randrange(5)
    if how == 0 and buf:
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif how == 1:
        del buf[rng.randrange(len(buf) + 1) :]
    elif how == 2:
        buf += rng.randbytes(rng.randint(1, 24))
    elif buf:
        width = rng.choice((1, 2, 4, 8))
        at = rng.randrange(len(buf))
        value = rng.choice(EDGES) if how == 3 else rng.getrandbits(8 * width)
        buf[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")[: len(buf) - at]
    return bytes(buf)


class Epoch:
    """One connection, one served VM and its reference, driven step by step."""

    def __init__(self, path: str, rng: random.Random, report: Report) -> None:
        self.rng, self.report = rng, report
        self.client = Client.connect(path)
        self.remote: RemoteVm = self.client.create_vm(list(RAM), vcpus=2)
        self.vm = Vm()
        for gpa, size in RAM:
            self.vm.memory.add_ram(gpa, size)
        self.refs: list[Vcpu] = []
        for gpa, size in RAM:
            fill = bytes([0xF4]) * size
            self.remote.vm.memory.write(gpa, fill)
            self.vm.memory.write(gpa, fill)
        self.remote.vm.memory.write(CODE, GUEST)
        self.vm.memory.write(CODE, GUEST)
        for n in range(2):
            state = entry_state()
            ref = self.vm.create_vcpu("unicorn", state=state)
            self.refs.append(ref)
            served = self.remote.vcpus[n]
            served.set_control(state.control)
            served.set_regs(state.regs)
        self.last_exit: list[VmExit | None] = [None, None]
        self.shutdowns = 0
        self.tainted = False  # a watchdog stop: the two sides stopped at different points

    def close(self) -> None:
        self.client.close()
        for ref in self.refs:
            ref.backend.close()

    def diverged(self, text: str) -> None:
        self.report.divergences.append(f"step {self.report.steps}: {text}")

    # -- control messages ------------------------------------------------------------------------------------

    def control_step(self) -> None:
        rng = self.rng
        vcpu = rng.choice((0, 0, 0, 1, 2, 0xFFFF))
        op, body, apply = self._request(vcpu)
        msg = P.header(P.REQUEST_MAGIC, op, vcpu, rng.getrandbits(32)) + body
        mutated = rng.random() < 0.4
        if mutated:
            msg = mutate(rng, msg)
            self.report.mutated += 1
        reply, fds = self.client.send_raw(msg)
        for fd in fds:
            os.close(fd)
        if len(reply) < P.HEADER.size or reply[:4] != P.REPLY_MAGIC:
            self.diverged(f"malformed reply {reply[:32].hex()} to {msg[:32].hex()}")
            return
        status = P.HEADER.unpack_from(reply)[4]
        self.report.control[Err(status).name if status in Err._value2member_map_ else str(status)] += 1
        payload = reply[P.HEADER.size :]
        if status == Err.OK:
            if mutated:
                # The server accepted what it parsed: find out what that was, as the reference sees it.
                op2, vcpu2 = P.HEADER.unpack_from(msg)[1:3]
                apply = self._reparse(op2, vcpu2, msg[P.HEADER.size :])
            try:
                expected = apply()
            except Exception as err:
                self.diverged(f"server accepted op {op} ({msg[:40].hex()}); the reference refuses: {err!r}")
                return
            if expected is not None and expected != payload:
                self.diverged(
                    f"op {op}: server answered {payload[:48].hex()}, reference {expected[:48].hex()}"
                )
        elif not mutated and vcpu < 2 and op in RESTORABLE and self._reference_accepts(apply):
            self.diverged(f"op {op} vcpu {vcpu} refused ({Err(status).name}: {P.error_text(payload)}) "
                          "but the reference accepts it")  # fmt: skip

    def _reference_accepts(self, apply: Callable[[], bytes | None]) -> bool:
        """Whether the reference takes the request; it is then undone by a full state copy back."""
        snapshot = self._snapshot_ref()
        try:
            apply()
        except Exception:
            return False
        self._restore_ref(snapshot)
        return True

    def _snapshot_ref(self) -> list[tuple[Regs, Control, VectorState] | None]:
        out: list[tuple[Regs, Control, VectorState] | None] = []
        for ref in self.refs:
            out.append(None if ref.pending is not None else (ref.regs, ref.control, ref.vector))
        return out

    def _restore_ref(self, snapshot: list[tuple[Regs, Control, VectorState] | None]) -> None:
        for ref, saved in zip(self.refs, snapshot, strict=True):
            if saved is not None:
                ref.set_control(saved[1])
                ref.set_regs(saved[0])
                ref.set_vector(saved[2])

    def _ref(self, vcpu: int) -> Vcpu:
        if vcpu >= len(self.refs):
            raise IndexError(f"no vCPU {vcpu}")
        return self.refs[vcpu]

    def _request(self, vcpu: int) -> tuple[int, bytes, Callable[[], bytes | None]]:
        """A well-formed request and how the reference performs it (returning the expected payload)."""
        rng = self.rng
        kind = rng.randrange(12)
        if kind == 0:
            regs = self._ref(0).regs if rng.random() < 0.5 else Regs()
            regs.gprs[rng.randrange(16)] = rng.choice((rng.getrandbits(64), rng.choice(EDGES)))
            if rng.random() < 0.2:
                regs.rip = rng.choice((CODE, CODE + 5, rng.getrandbits(32), 0xD000_0000))
            body = P.pack_regs(regs)
        elif kind == 1:
            ctl = entry_state().control
            field_ = rng.choice(("cr0", "cr3", "cr4", "efer", "cpl", "gdtr", "idtr", "seg", None))
            if field_ == "cpl":
                ctl.cpl = rng.randrange(4)
            elif field_ in ("gdtr", "idtr"):
                setattr(ctl, field_, (rng.getrandbits(32), rng.choice((0, 0xFFF, 0xFFFF))))
            elif field_ == "seg":
                seg = ctl.segs[rng.randrange(6)]
                seg.base, seg.limit = (
                    rng.choice((0, rng.getrandbits(32))),
                    rng.choice((0xFFFF_FFFF, 0xFFFF, 0)),
                )
            elif field_ is not None:
                setattr(ctl, field_, getattr(ctl, field_) ^ (1 << rng.randrange(32)))
            body = P.pack_control(ctl)
        elif kind == 2:
            vec = VectorState()
            vec.zmm[rng.randrange(16)] = rng.getrandbits(rng.choice((128, 256, 512)))
            vec.mxcsr = rng.choice((0x1F80, 0xFFFF, 0x1_0000, 0))
            body = P.pack_vector(vec)
        elif kind in (3, 4):
            gpa = rng.choice(
                (0x8000, 0xFFFF0, 0x10_0000 - 8, 0x20_0000, 0x20_FFF0, 0x30_0000, rng.getrandbits(24))
            )
            length = rng.choice((1, 8, 16, 100, P.MAX_DATA, P.MAX_DATA + 1, 0))
            if kind == 3:
                body = P.RAM_REQ.pack(gpa, length, 0)
                return Op.READ_RAM, body, self._parse_apply(Op.READ_RAM, vcpu, body)
            data = rng.randbytes(min(length, 64)) * (length // 64 + 1)
            body = P.RAM_REQ.pack(gpa, length, 0) + data[:length]
            return Op.WRITE_RAM, body, self._parse_apply(Op.WRITE_RAM, vcpu, body)
        elif kind == 5:
            dev_kind = rng.choice((1, 2, 3))
            base = rng.choice((0xE000_0000, 0xE000_1000, 0x70, 0x8000, 0xD000_0000, rng.getrandbits(32)))
            size = rng.choice((0x1000, 2, 0x800, 0x2000, 0))
            body = P.DEVICE_REQ.pack(dev_kind, 0, base, size)
            return Op.ADD_DEVICE, body, self._parse_apply(Op.ADD_DEVICE, 0, body)
        else:
            op = rng.choice(OTHER_OPS)
            body = b"" if op not in (Op.HELLO, Op.CREATE_VM) else rng.randbytes(16)
            return op, body, self._parse_apply(op, vcpu, body)
        op = (Op.SET_REGS, Op.SET_CONTROL, Op.SET_VECTOR)[kind]
        return op, body, self._parse_apply(op, vcpu, body)

    def _reparse(self, op: int, vcpu: int, body: bytes) -> Callable[[], bytes | None]:
        return self._parse_apply(op, vcpu, body)

    def _parse_apply(self, op: int, vcpu: int, body: bytes) -> Callable[[], bytes | None]:
        """What the reference does for this (op, vcpu, payload); raises if it cannot do it."""

        def apply() -> bytes | None:
            handler = REFERENCE.get(op)
            if handler is None:
                raise ValueError(f"no operation {op}")
            return handler(self, vcpu, body)

        return apply

    # -- the reference's side of each operation --------------------------------------------------------------

    def ref_set_regs(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, P.REGS.size)
        self._ref(vcpu).set_regs(P.unpack_regs(body))
        return b""

    def ref_get_regs(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        return P.pack_regs(self._ref(vcpu).regs)

    def ref_set_control(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, P.CONTROL_SIZE)
        ref = self._ref(vcpu)
        old = ref.control
        try:
            ref.set_control(P.unpack_control(body))
        except Exception:
            ref.set_control(old)
            raise
        return b""

    def ref_get_control(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        return P.pack_control(self._ref(vcpu).control)

    def ref_set_vector(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, P.VECTOR.size)
        vec = P.unpack_vector(body)
        if vec.mxcsr >> 16:
            raise ValueError("MXCSR reserved bits")
        self._ref(vcpu).set_vector(vec)
        return b""

    def ref_get_vector(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        return P.pack_vector(self._ref(vcpu).vector)

    def _ref_ram(self, body: bytes, write: bool) -> tuple[int, bytes, int]:
        gpa, length, reserved = P.RAM_REQ.unpack_from(body)
        data = body[P.RAM_REQ.size :]
        if reserved or not 0 < length <= P.MAX_DATA or (len(data) != length if write else bool(data)):
            raise ValueError("bad RAM request")
        if self.vm.memory.ram_at(gpa, length) is None:
            raise ValueError("not RAM")
        return gpa, data, length

    def ref_read_ram(self, vcpu: int, body: bytes) -> bytes | None:
        gpa, _, length = self._ref_ram(body, False)
        return self.vm.memory.read(gpa, length)

    def ref_write_ram(self, vcpu: int, body: bytes) -> bytes | None:
        gpa, data, _ = self._ref_ram(body, True)
        self.vm.memory.write(gpa, data)
        for ref in self.refs:
            ref.backend.invalidate_code()  # type: ignore[attr-defined]
        return b""

    def ref_add_device(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, P.DEVICE_REQ.size)
        kind, reserved, base, size = P.DEVICE_REQ.unpack(body)
        if reserved or vcpu or not 0 < size <= P.MAX_DEVICE:
            raise ValueError("bad device request")
        if kind == P.DeviceKind.MMIO_MEMORY:
            self.vm.add_mmio_device(base, size, MemoryDevice(size))
        elif kind == P.DeviceKind.PORT_MEMORY:
            self.vm.add_port_device(base, size, MemoryDevice(size))
        else:
            raise ValueError(f"device kind {kind}")
        return b""

    def ref_stop(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        self._ref(vcpu).request_stop()
        return b""

    def ref_invalidate(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        for ref in self.refs:
            ref.backend.invalidate_code()  # type: ignore[attr-defined]
        return b""

    def ref_stats(self, vcpu: int, body: bytes) -> bytes | None:
        _exact(body, 0)
        self._ref(vcpu)
        return None  # counters and times are the server's own: only acceptance is compared

    # -- run-page entries ------------------------------------------------------------------------------------

    def run_step(self) -> None:
        rng = self.rng
        n = 0 if rng.random() < 0.8 else 1
        ref, served = self.refs[n], self.remote.vcpus[n]
        if rng.random() < 0.03:
            self._bad_state(served)
            return
        record = self._entry_record(ref)[:RECORD_SIZE].ljust(RECORD_SIZE, b"\0")  # the page slot is 48 bytes
        status, raw, fired = self._post(served, record)
        self.report.runs[Err(status).name if status in Err._value2member_map_ else str(status)] += 1
        try:
            entry = unpack_entry(record)
        except AbiError:
            if status != Err.ENTRY:
                self.diverged(f"entry {record.hex()} does not decode, server said {status}")
            return
        timer = threading.Timer(WATCHDOG_S, ref.request_stop)
        timer.start()
        try:
            ex = ref.run(entry)
        except EntryError:
            if status != Err.MISMATCH:
                self.diverged(f"{entry} refused by the reference (EntryError), server said {status}")
            return
        finally:
            timer.cancel()
        if fired:
            self.report.watchdog += 1
            self.tainted = True
            return
        if status != Err.OK:
            self.diverged(f"{entry}: reference ran to {ex}, server said {status} {P.error_text(raw)}")
        elif raw != pack_exit(ex):
            self.diverged(f"{entry}: reference exit {ex}, server exit {raw.hex()}")
        self.last_exit[n] = ex
        self.shutdowns = self.shutdowns + 1 if isinstance(ex, ShutdownExit) else 0

    def _entry_record(self, ref: Vcpu) -> bytes:
        rng = self.rng
        pending = ref.pending
        consistent = rng.random() < 0.1
        entry: VmEntry
        roll = rng.random()
        if pending is None:
            entry = Default(consistent) if roll < 0.9 else Discard(consistent)
        elif roll < 0.75:
            entry = _answer(rng, pending, consistent)
        elif roll < 0.85:
            entry = Discard(consistent)
        elif roll < 0.92:
            entry = Default(consistent)
        elif isinstance(pending, MmioExit):
            entry = FulfillMmio(pending.gpa ^ 8, pending.size, pending.is_write, 0, consistent)
        else:
            entry = FulfillInout(pending.port ^ 1, pending.size, pending.is_in, 0, consistent)
        record = pack_entry(entry)
        if rng.random() < 0.2:
            record = mutate(rng, record)
            self.report.mutated += 1
        return record

    def _post(self, served: RemoteVcpu, record: bytes) -> tuple[int, bytes, bool]:
        """Post on the run page (the record may be any length: the page slot takes 48 bytes)."""
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            self.client.request(Op.STOP, vcpu=served.index)

        timer = threading.Timer(WATCHDOG_S, stop)
        timer.start()
        try:
            status, raw = served.post(record)
        finally:
            timer.cancel()
        return status, raw, fired.is_set()

    def _bad_state(self, served: RemoteVcpu) -> None:
        """Ring with a state word that is not POSTED: RUN_STATE, and nothing runs."""
        served.words[P.OFF_STATE // 4] = self.rng.choice((RunState.RUNNING, 4, 0xFFFF_FFFF, 7))
        os.write(served.kick, (1).to_bytes(8, "little"))
        while served.words[P.OFF_STATE // 4] != RunState.DONE:
            os.read(served.done, 8)
        status = served.words[P.OFF_STATUS // 4]
        self.report.runs[Err(status).name if status in Err._value2member_map_ else str(status)] += 1
        if status != Err.RUN_STATE:
            self.diverged(f"bad state word answered with {status}")

    # -- full comparison -------------------------------------------------------------------------------------

    def check(self) -> None:
        self.report.checks += 1
        for n, ref in enumerate(self.refs):
            served = self.remote.vcpus[n]
            for name in ("regs", "control", "vector"):
                ours, theirs = getattr(ref, name), getattr(served, name)
                if ours != theirs:
                    self.diverged(f"vCPU {n} {name}: reference {ours}, server {theirs}")
        for gpa, size in RAM:
            if self.vm.memory.read(gpa, size) != self.remote.vm.memory.read(gpa, size):
                self.diverged(f"RAM region {gpa:#x} differs")


REFERENCE: dict[int, Callable[[Epoch, int, bytes], bytes | None]] = {
    Op.SET_REGS: Epoch.ref_set_regs,
    Op.GET_REGS: Epoch.ref_get_regs,
    Op.SET_CONTROL: Epoch.ref_set_control,
    Op.GET_CONTROL: Epoch.ref_get_control,
    Op.SET_VECTOR: Epoch.ref_set_vector,
    Op.GET_VECTOR: Epoch.ref_get_vector,
    Op.READ_RAM: Epoch.ref_read_ram,
    Op.WRITE_RAM: Epoch.ref_write_ram,
    Op.ADD_DEVICE: Epoch.ref_add_device,
    Op.STOP: Epoch.ref_stop,
    Op.INVALIDATE_CODE: Epoch.ref_invalidate,
    Op.STATS: Epoch.ref_stats,
}


# Operations whose effect on the reference can be undone, so an unmutated refusal can be double-checked.
RESTORABLE = frozenset(
    {Op.GET_REGS, Op.GET_CONTROL, Op.GET_VECTOR, Op.SET_REGS, Op.SET_CONTROL, Op.SET_VECTOR, Op.READ_RAM}
    | {Op.STATS, Op.INVALIDATE_CODE}
)


def _exact(body: bytes, size: int) -> None:
    if len(body) != size:
        raise ValueError(f"payload {len(body)} bytes, not {size}")


def _answer(rng: random.Random, pending: MmioExit | InoutExit, consistent: bool) -> VmEntry:
    """The right fulfillment, with a random value for a read."""
    if isinstance(pending, MmioExit):
        if pending.is_write:
            return pending.fulfill(exit_consistent=consistent)
        return pending.fulfill(rng.getrandbits(8 * pending.size), exit_consistent=consistent)
    if not pending.is_in:
        return pending.fulfill(exit_consistent=consistent)
    return pending.fulfill(rng.getrandbits(8 * pending.size), exit_consistent=consistent)


def fuzz(path: str, count: int, seed: int = 0, epoch_steps: int = EPOCH_STEPS) -> Report:
    """`count` steps against the server at `path`."""
    rng = random.Random(seed)
    report = Report()
    while report.steps < count:
        epoch = Epoch(path, rng, report)
        report.epochs += 1
        try:
            for i in range(min(epoch_steps, count - report.steps)):
                report.steps += 1
                if rng.random() < 0.5:
                    epoch.control_step()
                else:
                    epoch.run_step()
                if epoch.tainted or epoch.shutdowns > 20 or len(report.divergences) > 20:
                    break
                if i % CHECK_EVERY == CHECK_EVERY - 1:
                    epoch.check()
            if not epoch.tainted:
                epoch.check()
        finally:
            epoch.close()
        if len(report.divergences) > 20:
            break
    return report


def start_server(path: str, log: str | None = None) -> subprocess.Popen[bytes]:
    """`vmmio serve --socket path` in a child process, its log lines to `log` (default: discarded)."""
    err = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmmio.cli", "serve", "--socket", path], stdin=subprocess.DEVNULL, stderr=err
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"vmmio serve did not start (status {proc.poll()})")
        time.sleep(0.02)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--count", type=int, default=100_000, help="steps (control messages + run-page posts)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", help="write the server's log lines here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vmm.sock")
        server = start_server(path, args.log)
        t0 = time.monotonic()
        try:
            report = fuzz(path, args.count, args.seed)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(10)
    print(report.summary())
    print(f"  {time.monotonic() - t0:.1f} s; server still serving at the end: {alive}")
    for line in report.divergences[:20]:
        print("  DIVERGENCE", line)
    return 0 if alive and not report.divergences else 1


if __name__ == "__main__":
    sys.exit(main())
