"""Userspace glue: a machine with RAM, devices on MMIO and ports, image loading and the run loop.

This is the VMM's userspace half. It never sees decode state: it services the plain requests a vCPU
returns and answers them on the next entry. The vCPU may be vmmio's own kernel over an execution
backend, or a KVM vCPU whose MMIO exits come from Linux's emulator; both speak the same exit types.

The machine contract guests are built against (`guests/`) is the default `Layout`:

    RAM             0 .. ram_size (default 32 MiB)
    page tables     0x1000 ..: the layout's mappings (default: identity map of the first 4 GiB with
                    2 MiB pages), used by 64-bit images, and by 32-bit ones when `paging` is set
    CPU             64-bit long mode (or flat 32-bit protected mode for ELF32), SSE enabled, IF clear
    GDT             0x800: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18)
    load address    0x100000 for flat images; ELF images load at their physical addresses
    stack           top of RAM, 16-byte aligned
    UART 16550      MMIO 0xD0000000 (stride 1) and ports 0x3F8-0x3FF
    debug exit      port 0xF4 and MMIO 0xD0001000: a write ends the run with the value as status
    test device     MMIO 0xD0010000 .. 0xD0012000, memory-like
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from time import perf_counter_ns
from typing import Protocol

from vmmio import images
from vmmio.abi import (
    Default,
    Device,
    FulfillInout,
    FulfillInoutBatch,
    FulfillMmio,
    FulfillMmioBatch,
    HltExit,
    InoutBatchExit,
    InoutExit,
    InstEmulExit,
    MmioBatchExit,
    MmioExit,
    ShutdownExit,
    SuspendedExit,
    VmEntry,
    VmExit,
)
from vmmio.devices import AddressMap, DebugExit, GuestExit, MemoryDevice, ResetRequested, Uart16550
from vmmio.images import CPU_STATES, CpuMode
from vmmio.vmm.vm import Vm
from vmmio.x86.pagetables import RW, P, PageTables
from vmmio.x86.state import (
    CR0_PE,
    CR0_SSE,
    CR4_SSE,
    CpuState,
    Regs,
    flat_protected_control,
    flat_segment,
    long_mode_control,
)

# The default layout's addresses (the machine contract above), by name for guests and tests.
LOAD_ADDR = 0x10_0000
GDT_BASE = 0x800
PT_BASE = 0x1000
UART_MMIO = 0xD000_0000
UART_PORT = 0x3F8
DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_MMIO = 0xD000_1000
TESTDEV_MMIO = 0xD001_0000
TESTDEV_SIZE = 0x2000

GDT = CPU_STATES["long64"].gdt  # null, 64-bit code (0x08), data (0x10), 32-bit code (0x18)

# Unclaimed MMIO reads as all ones and ignores writes, as on a PC bus with nothing decoding the address.
UNCLAIMED = 0xFFFF_FFFF_FFFF_FFFF


class ExitSource(Protocol):
    """A vCPU as userspace sees it: vmmio's `Vcpu`, or the KVM reference vCPU."""

    def run(self, entry: VmEntry | None = None) -> VmExit: ...

    def request_stop(self) -> None: ...


class RunControl:
    """Stops a run from outside the guest: Ctrl-C, SIGTERM, a deadline; always within ~0.1 s.

    While a guest runs without exits the main thread sits in the engine (Unicorn, with the GIL released)
    or in KVM_RUN, where no Python signal handler can run. A watcher thread therefore waits on the
    interpreter's signal wakeup fd and on the deadline, and asks the vCPU to stop (`request_stop`),
    repeating until the run loop has seen it; a signal kicks the main thread out of a blocking KVM_RUN.
    Use as a context manager in the main thread around `Machine.run(..., control=...)`.
    """

    KICK = signal.SIGUSR1  # interrupts KVM_RUN; its handler does nothing

    def __init__(self, vcpu: ExitSource, timeout: float | None = None) -> None:
        self.vcpu = vcpu
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.reason: str | None = None  # "interrupted", "terminated" or "timeout" once asked to stop
        self.seen = threading.Event()  # the run loop noticed
        self._main = threading.get_ident()
        self._saved: list[tuple[int, object]] = []
        self._wakeup = -1
        self._fds: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.vcpu.request_stop()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != self.KICK:
            self.stop("interrupted" if signum == signal.SIGINT else "terminated")

    def _watch(self) -> None:
        assert self._fds is not None
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, self.KICK})
        rfd = self._fds[0]
        while not self.seen.is_set():
            wait = 0.05 if self.reason is not None else 0.5
            if self.deadline is not None and self.reason is None:
                wait = max(0.0, min(wait, self.deadline - time.monotonic()))
            ready, _, _ = select.select([rfd], [], [], wait)
            if ready:
                data = os.read(rfd, 64)
                if signal.SIGINT in data:
                    self.stop("interrupted")
                elif signal.SIGTERM in data:
                    self.stop("terminated")
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop("timeout")
            if self.reason is not None and not self.seen.is_set():
                self.vcpu.request_stop()  # again: a stop racing with entry into the engine can be lost
                signal.pthread_kill(self._main, self.KICK)

    def __enter__(self) -> RunControl:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        self._fds = (rfd, wfd)
        for sig in (signal.SIGINT, signal.SIGTERM, self.KICK):
            self._saved.append((sig, signal.signal(sig, self._on_signal)))
        self._wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="vmmio-run-control", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seen.set()
        signal.set_wakeup_fd(self._wakeup)
        assert self._fds is not None
        os.write(self._fds[1], b"\0")
        if self._thread is not None:
            self._thread.join()
        for sig, handler in self._saved:
            signal.signal(sig, handler)  # type: ignore[arg-type]
        for fd in self._fds:
            os.close(fd)


@dataclass(frozen=True)
class Image:
    """A loaded guest: where to start, in which entry mode (`vmmio.images.CPU_STATES`), and the
    registers its boot protocol sets (multiboot's EAX/EBX, Linux's RSI)."""

    entry: int
    bits: int
    mode: CpuMode = "long64"
    regs: tuple[tuple[str, int], ...] = ()
    format: str = "flat"


@dataclass(frozen=True)
class Mapping:
    """`size` bytes of linear addresses from `linear` mapped to guest-physical `physical`."""

    linear: int
    physical: int
    size: int


def default_entry_state(image: Image, layout: Layout) -> CpuState:
    """The CPU state at entry: 64-bit long mode over the layout's page tables, or flat 32-bit protected
    mode with paging off; SSE enabled, interrupts off, an empty IDT, the stack at the top of RAM."""
    mode = CPU_STATES[image.mode]
    regs = Regs(rip=image.entry)
    regs.rsp = (layout.ram_size - 16) & ~0xF
    for name, value in image.regs:
        setattr(regs, name, value)
    gdtr = (layout.gdt_base, 8 * len(mode.gdt) - 1)
    idtr = (0, 0xFFF)
    if mode.paging:
        if not layout.paging:
            raise ValueError("a 64-bit image needs paging: long mode cannot run with CR0.PG clear")
        ctl = long_mode_control(layout.page_tables, mode.cs, gdtr=gdtr, idtr=idtr)
        ctl.cr0 |= CR0_SSE
        ctl.cr4 |= CR4_SSE
    else:
        ctl = flat_protected_control(
            mode.cs, mode.ds, cr0=CR0_PE | CR0_SSE, cr4=CR4_SSE, gdtr=gdtr, idtr=idtr
        )
    ctl.segs = [flat_segment(mode.ds) for _ in range(6)]
    ctl.segs[1] = flat_segment(mode.cs, code=True, bits=mode.bits)
    return CpuState(regs, ctl)


@dataclass(frozen=True)
class Layout:
    """Where things are in the guest and how its CPU starts: the machine contract, as data.

    A device address of None leaves that device out. `entry_state` computes the CPU state at entry
    from the loaded image (default: `default_entry_state`).
    """

    ram_size: int = 32 << 20
    load_addr: int = LOAD_ADDR
    uart_mmio: int | None = UART_MMIO
    uart_port: int | None = UART_PORT
    debug_exit_port: int | None = DEBUG_EXIT_PORT
    debug_exit_mmio: int | None = DEBUG_EXIT_MMIO
    testdev_mmio: int | None = TESTDEV_MMIO
    testdev_size: int = TESTDEV_SIZE
    gdt_base: int = GDT_BASE
    page_tables: int = PT_BASE
    paging: bool = True  # page tables for `mappings` (64-bit images need them; 32-bit ones start unpaged)
    mappings: tuple[Mapping, ...] = (Mapping(0, 0, 4 << 30),)
    entry_state: Callable[[Image, Layout], CpuState] = default_entry_state

    def page_table_entries(self) -> dict[int, int]:
        """The 4-level tables for `mappings`, as {physical address: entry}."""
        pt = PageTables(self.page_tables)
        for m in self.mappings:
            pt.map_range(m.linear, m.physical, m.size, P | RW)
        return pt.entries


@dataclass(frozen=True, slots=True)
class Serviced:
    """One exit as the run loop saw it: what tools (traces, recordings, statistics) are given per exit.

    The observer is called before the next `vcpu.run`, so the vCPU's state is still the state at `exit`.
    """

    number: int  # 1 for the run's first exit
    exit: VmExit
    answer: VmEntry | None  # the entry the next `vcpu.run` gets; None when the run ends at this exit
    at_ns: int  # when `vcpu.run` returned the exit, from the start of the run
    kernel_ns: int  # spent in `vcpu.run` up to this exit (guest, kernel and backend)
    device_ns: int  # spent in the device models answering it (0 for exits no device answers)


@dataclass
class RunResult:
    status: int  # the guest's exit status; 0 after HLT
    # "exit", "hlt", "reset", "shutdown", "inst_emul", "limit", "interrupted", "terminated", "timeout"
    reason: str
    exits: int  # exits serviced
    detail: str = ""


class Machine:
    """RAM, the layout's devices, a loaded image and a vCPU, with the loop that services its exits."""

    def __init__(
        self, layout: Layout | None = None, *, uart_sink: Callable[[bytes], None] | None = None
    ) -> None:
        self.layout = layout = layout if layout is not None else Layout()
        self.vm = Vm(layout.ram_size)
        self.mmio = AddressMap("MMIO device range")
        self.ports = AddressMap("port device range")
        self.uart = Uart16550() if uart_sink is None else Uart16550(uart_sink)
        self.testdev = MemoryDevice(layout.testdev_size)
        # The last request `service` answered: its device, direction and answer.
        self._last_request: MmioExit | InoutExit | None = None
        self._last_hit: tuple[Device, int] | None = None
        self._last_write = False
        self._last_answer: FulfillMmio | FulfillInout | None = None
        debug = DebugExit()
        for base, size, device, is_port in (
            (layout.uart_mmio, 0x1000, self.uart, False),
            (layout.debug_exit_mmio, 0x1000, debug, False),
            (layout.testdev_mmio, layout.testdev_size, self.testdev, False),
            (layout.uart_port, 8, self.uart, True),
            (layout.debug_exit_port, 1, debug, True),
        ):
            if base is not None:
                (self.add_port if is_port else self.add_mmio)(base, size, device)

    def add_mmio(self, base: int, size: int, device: Device) -> None:
        """Serve [base, base+size) from `device` in userspace; refused over RAM or another device."""
        if self.vm.memory.regions.overlaps(base, size):
            raise ValueError(f"MMIO device range [{base:#x}, {base + size:#x}) overlaps guest RAM")
        self.mmio.add(base, size, device)
        self._last_request = None

    def add_port(self, base: int, count: int, device: Device) -> None:
        """Serve ports [base, base+count) from `device` in userspace; refused over another device."""
        if base < 0 or base + count > 0x10000:
            raise ValueError(f"ports {base:#x}+{count} are outside 0..0xffff")
        if self.vm.ports.overlaps(base, count):
            raise ValueError(f"ports [{base:#x}, {base + count:#x}) are served in the kernel")
        self.ports.add(base, count, device)
        self._last_request = None

    def memory_layout(self) -> images.MemoryLayout:
        """Guest-physical memory as loaders see it: RAM, the device windows (reserved in the memory
        maps), and what the machine keeps for itself (GDT, page tables)."""
        layout = self.layout
        tables = layout.page_table_entries() if layout.paging else {}
        in_use = [(layout.gdt_base & ~0xFFF, 0x1000)]
        if tables:
            in_use.append((layout.page_tables, (max(tables) | 0xFFF) + 1 - layout.page_tables))
        reserved = [(base, end - base) for base, end, _ in self.mmio]
        return images.MemoryLayout(((0, layout.ram_size),), tuple(reserved), tuple(sorted(set(in_use))))

    def load(
        self,
        data: bytes,
        addr: int | None = None,
        *,
        name: str | None = None,
        format: images.Format | None = None,
        cmdline: str | None = None,
        initrd: bytes | None = None,
        modules: Sequence[tuple[bytes, str]] | None = None,
    ) -> Image:
        """Load an image with `vmmio.images` (ELF32/64, multiboot v1, Linux bzImage, flat), and the
        structures its entry mode needs (GDT, page tables). Raises `images.ImageError` for a malformed
        image or one that does not fit.

        Without `format`, the format is detected; unnamed data that is none of the known formats is a
        flat 64-bit binary at `addr` (default: the layout's load address), while a `name` must end in
        ".bin" for that, so a text file is refused rather than run.
        """
        layout = self.layout
        fmt = format
        if fmt is None:
            try:
                fmt = images.detect(data, name)
            except images.ImageError:
                if name is not None:
                    raise
                fmt = "flat"
        flat_at = (layout.load_addr if addr is None else addr) if fmt == "flat" else None
        plan = images.load(
            data,
            self.memory_layout(),
            format=fmt,
            name=name,
            load_addr=flat_at,
            cmdline=cmdline,
            initrd=initrd,
            modules=modules,
        )
        mem = self.vm.memory
        for n, desc in enumerate(plan.state.gdt):
            mem.write_int(layout.gdt_base + 8 * n, 8, desc)
        if layout.paging:
            for gpa, entry in layout.page_table_entries().items():
                mem.write_int(gpa, 8, entry)
        images.apply(plan, mem.write)
        return Image(plan.entry, plan.state.bits, plan.cpu, plan.regs, plan.format)

    def entry_state(self, image: Image) -> CpuState:
        return self.layout.entry_state(image, self.layout)

    def vcpu(self, image: Image, backend: str = "unicorn") -> ExitSource:
        """A vCPU at the image's entry state on the named backend ("unicorn" or "kvm")."""
        state = self.entry_state(image)
        if backend == "kvm":
            from vmmio.reference.kvm import KvmVcpu

            return KvmVcpu(self.vm.memory, state, ports=self.vm.ports, chipset=self.vm)
        return self.vm.create_vcpu(backend, state=state)

    def service(self, ex: MmioExit | InoutExit) -> FulfillMmio | FulfillInout:
        """Answer one request from the device it addresses (raises GuestExit for the debug device).

        The kernel hands out the same exit object for a repeated access, so the last request's device
        and answer are kept: the same request with the same value read gets the same (immutable) answer.
        """
        if ex is self._last_request:
            hit, write = self._last_hit, self._last_write
        else:
            if type(ex) is MmioExit:
                hit, write = self.mmio.find(ex.gpa), ex.is_write
            else:
                assert type(ex) is InoutExit
                hit, write = self.ports.find(ex.port), not ex.is_in
            self._last_request, self._last_hit, self._last_write = ex, hit, write
            self._last_answer = None
        if write:
            if hit is not None:
                hit[0].write(hit[1], ex.size, ex.data)
            answer = self._last_answer
            if answer is None:
                answer = self._last_answer = ex.fulfill()
            return answer
        mask = _MASKS[ex.size]
        value = hit[0].read(hit[1], ex.size) & mask if hit is not None else UNCLAIMED & mask
        answer = self._last_answer
        if answer is None or answer.data != value:
            answer = self._last_answer = ex.fulfill(value)
        return answer

    def service_batch(self, ex: MmioBatchExit | InoutBatchExit) -> FulfillMmioBatch | FulfillInoutBatch:
        """Answer a batched REP request: as many elements as the device at the first one holds, through
        its `read_elements`/`write_elements` when it has them (`ElementDevice`), else one by one."""
        size, count = ex.size, ex.count
        if type(ex) is MmioBatchExit:
            span, write = self.mmio.span(ex.gpa), ex.is_write
            if span is None:
                count, device, offset, step = 1, None, 0, 0  # unclaimed: one element, then look again
            else:
                base, end, device = span
                offset, step = ex.gpa - base, -size if ex.df else size
                room = offset // size + 1 if ex.df else (end - ex.gpa) // size
                count = max(1, min(count, room))
        else:
            assert type(ex) is InoutBatchExit
            hit, write, step = self.ports.find(ex.port), not ex.is_in, 0
            device, offset = hit if hit is not None else (None, 0)
        if write:
            if device is not None:
                data = ex.data[: count * size]
                write_elements = getattr(device, "write_elements", None)
                if write_elements is not None:
                    write_elements(offset, size, data, step)
                else:
                    for i in range(count):
                        value = int.from_bytes(data[i * size : (i + 1) * size], "little")
                        device.write(offset + i * step, size, value)
            return ex.fulfill(count=count)
        if device is None:
            return ex.fulfill(UNCLAIMED.to_bytes(8, "little")[:size] * count)
        read_elements = getattr(device, "read_elements", None)
        if read_elements is not None:
            return ex.fulfill(read_elements(offset, size, count, step))
        mask = (1 << (8 * size)) - 1
        values = (device.read(offset + i * step, size) & mask for i in range(count))
        return ex.fulfill(b"".join(v.to_bytes(size, "little") for v in values))

    def _run_plain(self, vcpu: ExitSource) -> RunResult:
        """`run` when nothing watches it: the same answers, in a tight loop."""
        entry: VmEntry = _DEFAULT_ENTRY
        exits = 0
        service = self.service
        while True:
            ex = vcpu.run(entry)
            exits += 1
            try:
                if type(ex) is MmioExit or type(ex) is InoutExit:
                    entry = service(ex)
                    continue
                if type(ex) is MmioBatchExit or type(ex) is InoutBatchExit:
                    entry = self.service_batch(ex)
                    continue
            except GuestExit as done:
                return RunResult(done.status, "exit", exits)
            except ResetRequested as reset:  # a reboot: the run ends, the guest asked for it
                return RunResult(0, "reset", exits, reset.source)
            if type(ex) is SuspendedExit:
                entry = _DEFAULT_ENTRY
                continue
            assert isinstance(ex, HltExit | ShutdownExit | InstEmulExit)
            return _final(ex, exits)

    def run(
        self,
        vcpu: ExitSource,
        trace: Callable[[VmExit], None] | None = None,
        max_exits: int = 0,
        control: RunControl | None = None,
        observe: Callable[[Serviced], None] | None = None,
    ) -> RunResult:
        """Run until the guest exits, halts, shuts down, needs an instruction vmmio cannot emulate, or
        `control` stops it (reason "interrupted", "terminated" or "timeout").

        `trace` sees each exit as it arrives; `observe` sees it once answered, with the answer and the
        time spent in the kernel and in the devices (only measured when `observe` is given).
        """
        entry: VmEntry = Default()
        exits = 0
        start = before = returned = perf_counter_ns() if observe is not None else 0
        service = self.service
        if trace is None and observe is None and control is None and not max_exits:
            return self._run_plain(vcpu)
        while not max_exits or exits < max_exits:
            if observe is not None:
                before = perf_counter_ns()
            ex = vcpu.run(entry)
            if observe is not None:
                returned = perf_counter_ns()
            exits += 1
            if trace is not None:
                trace(ex)
            stopping = control is not None and control.reason is not None
            answer: VmEntry | None = None
            result: RunResult | None = None
            if type(ex) in _REQUESTS:
                try:
                    if type(ex) is MmioExit or type(ex) is InoutExit:
                        answer = service(ex)
                    else:
                        assert type(ex) is MmioBatchExit or type(ex) is InoutBatchExit
                        answer = self.service_batch(ex)
                except GuestExit as done:
                    result = RunResult(done.status, "exit", exits)
                except ResetRequested as reset:  # a reboot: the run ends, the guest asked for it
                    result = RunResult(0, "reset", exits, reset.source)
                else:
                    if stopping:  # finish the instruction in flight first: no half-done state is left
                        answer = replace(answer, exit_consistent=True)
            elif stopping and control is not None and control.reason is not None:
                control.seen.set()
                result = RunResult(0, control.reason, exits, f"after {exits} exits")
            elif isinstance(ex, SuspendedExit):
                answer = Default()
            else:
                assert isinstance(ex, HltExit | ShutdownExit | InstEmulExit)
                result = _final(ex, exits)
            if observe is not None:
                serviced = perf_counter_ns()
                device = serviced - returned if type(ex) in _REQUESTS else 0
                observe(Serviced(exits, ex, answer, returned - start, returned - before, device))
            if result is not None:
                return result
            assert answer is not None
            entry = answer
        return RunResult(0x7D, "limit", exits, f"stopped after {max_exits} exits")


_REQUESTS = (MmioExit, InoutExit, MmioBatchExit, InoutBatchExit)  # the exits devices answer
_DEFAULT_ENTRY = Default()
_MASKS = {n: (1 << (8 * n)) - 1 for n in (1, 2, 4, 8)}  # a value read, cut to the request's size


def _final(ex: HltExit | ShutdownExit | InstEmulExit, exits: int) -> RunResult:
    """How a run ends on an exit userspace cannot answer."""
    if isinstance(ex, HltExit):
        return RunResult(0, "hlt", exits)
    if isinstance(ex, ShutdownExit):
        return RunResult(0x7F, "shutdown", exits, ex.reason.name.lower().replace("_", " "))
    return RunResult(
        0x7E, "inst_emul", exits, f"rip={ex.rip:#x} bytes={ex.insn.hex()} reason={ex.reason.name}"
    )


__all__ = [
    "Device",
    "ExitSource",
    "Image",
    "Layout",
    "Machine",
    "Mapping",
    "RunResult",
    "Serviced",
    "default_entry_state",
]
