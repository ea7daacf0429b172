"""The vCPU: the instruction-emulation state machine behind `run(entry) -> exit`.

On a fault the Vcpu fetches and decodes the instruction at CS:RIP and runs its semantics. Each access
the semantics yields is translated, split at page boundaries and into naturally aligned pieces of at
most 8 bytes, and performed: RAM and in-kernel handlers directly, anything else as an exit to
userspace. The instruction's progress stays here until userspace fulfills the request on the next
entry; registers are committed only when the instruction (or one REP iteration) completes.
"""

from __future__ import annotations

from typing import Any

from vmmio.abi import (
    AbiError,
    Capability,
    Default,
    Discard,
    EntryError,
    HltExit,
    InoutBatchExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioBatchExit,
    MmioExit,
    Request,
    ShutdownExit,
    ShutdownReason,
    SuspendedExit,
    VmEntry,
    VmExit,
    batch_fulfillment,
    fulfillment_data,
    inout_request,
    mmio_request,
    split_access,
)
from vmmio.backends.base import (
    Backend,
    BackendEvent,
    HltEvent,
    IoEvent,
    NpfEvent,
    ShutdownEvent,
    StoppedEvent,
)
from vmmio.devices.interrupt_window import WINDOW_POLL_NS as WINDOW_POLL_NS  # its home before it was shared
from vmmio.devices.interrupt_window import Halt, offer_interrupt, wait_halted
from vmmio.memory import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, HandlerRegion, RamRegion
from vmmio.vmm.abort import EmulationAbort
from vmmio.vmm.fast import Learner
from vmmio.vmm.plan import PLANNED_ACCESSES, Access, Piece, Plans, Run
from vmmio.vmm.rep_batch import Batch, Batcher
from vmmio.vmm.semantics.context import (
    NO_AC,
    PORT_CHECK,
    PORT_IN,
    PORT_OUT,
    SYS_READ,
    SYS_WRITE,
    TOUCH,
)
from vmmio.vmm.tlb import Tlb, holds
from vmmio.vmm.vm import Vm
from vmmio.x86.cpuid import CpuidTable
from vmmio.x86.delivery import LinearMemory, Unsupported
from vmmio.x86.faults import GP, PFEC_U, PFEC_W, GuestFault
from vmmio.x86.insn import MAX_INSN_LEN
from vmmio.x86.ioperm import check_io
from vmmio.x86.paging import TranslationError, Updates, apply_updates
from vmmio.x86.regs import AC, IF, MASK, SIGN, ZF, Gpr, Seg
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import DIRTY_ALL, DIRTY_RIP, EFER_LMA, Control, Regs, VectorState

# Page-fault error-code bits each request kind checks (RMW reads are checked for write).
_ACCESS_BITS = (0, PFEC_W, PFEC_W, 0, 0, PFEC_W)  # by request kind, READ .. SYS_WRITE
_WRITES = (False, True, False, False, False, True)
_CS, _FS = int(Seg.CS), int(Seg.FS)
_WHOLE = frozenset((1, 2, 4, 8))  # device accesses of these sizes stay one request
_MAX_BLOCK = 4096  # instructions decoded ahead to find where a fetch fault really is
_HLT = HltExit()
_SUSPENDED = SuspendedExit()
_DEFAULT = Default()
_FAST_NOT_RUN = -3  # backend.fast_cycle: nothing was done (vmmio/_fastpath.c)
_FAST_RUNS = 256  # plans learned by the native path before they are all dropped (its table holds 64)


class VcpuBusy(RuntimeError):
    """The vCPU's state cannot be changed while an instruction is in flight (a request is pending)."""


class Vcpu:
    """One virtual CPU. `run` is the only way through the kernel/userspace boundary.

    Between exits userspace may read the register and control state (`regs`, `control`) and, when no
    request is pending, change it (`set_regs`, `set_control`): how a VMM finishes an instruction the
    kernel handed back with an INST_EMUL exit, or loads state it saved.
    """

    def __init__(self, vm: Vm, backend: Backend, rep_budget: int = 64) -> None:
        self.vm = vm
        self.backend = backend
        self.memory = vm.memory
        self.walker = vm.walker
        self.rep_budget = rep_budget
        self._linear = LinearMemory(vm.walker, vm.memory)  # implicit supervisor reads (TSS)
        self.shutdown_detail = ""  # what the backend said with the last ShutdownExit
        self._stop = False  # request_stop() while the kernel itself waits (HLT)
        self._cur: Run | None = None
        self._pending: Request | None = None
        self._batch: Batch | None = None  # the batched run `_pending` asks for, if it is one
        self.capabilities = Capability(0)
        self._batching = False  # Capability.REP_BATCH is on
        self.tlb = Tlb(vm.walker)
        self.plans = Plans(vm.memory, self.tlb, backend)
        self.direct = True  # `Direct` forms start from their planned access (False: always the semantics)
        # The last entry accepted, for the request it fulfilled, and the value it brought: entries and
        # exits are immutable, so the same pair is accepted again without the matching rule.
        self._accepted: VmEntry | None = None
        self._accepted_for: Request | None = None
        self._accepted_value = 0
        self._out = Regs()  # what a completed instruction writes back (backends copy it)
        # The backend's native exit path, if it has one (vmmio.vmm.fast, docs/fastpath.md): the plans it
        # learned, by handle, with the access each was learned with.
        self._fastpath: Any = getattr(backend, "fastpath", None)
        self.fast = self._fastpath is not None  # use it (False: the Python path only)
        self._fast_runs: dict[int, tuple[Run, Access]] = {}
        self._fast_generation = vm.memory.generation
        self._learner = Learner(vm.memory)
        self._batcher = Batcher(self.tlb, vm.memory, vm.ports, self._io_permitted, backend.ram_written)

    @property
    def pending(self) -> Request | None:
        """The request userspace must fulfill on the next entry, if any."""
        return self._pending

    def enable(self, capability: Capability) -> None:
        """Turn on what the vCPU does beyond the one-element boundary (`Capability.REP_BATCH`: batched
        REP requests). A vCPU that never enables anything sees one-element exits only. Refused
        (VcpuBusy) while a request is pending."""
        self._set_capabilities(self.capabilities | capability)

    def disable(self, capability: Capability) -> None:
        """Back to one-element exits for `capability`; refused (VcpuBusy) while a request is pending."""
        self._set_capabilities(self.capabilities & ~capability)

    def _set_capabilities(self, capabilities: Capability) -> None:
        self._idle("changing capabilities")
        unknown = int(capabilities) & ~int(Capability.REP_BATCH)
        if unknown:
            raise ValueError(f"unknown capability bits {unknown:#x}")
        self.capabilities = Capability(capabilities)
        self._batching = bool(capabilities & Capability.REP_BATCH)

    # -- architectural state ----------------------------------------------------------------------

    @property
    def regs(self) -> Regs:
        """A copy of the GPRs, RIP and RFLAGS as the guest sees them (by name: `vcpu.regs.rax`).

        While a request is pending this is the state before the instruction in flight: its results
        are committed only when it completes.
        """
        return self.backend.get_regs()

    @property
    def control(self) -> Control:
        """A copy of the control state (CRs, EFER, CPL, segment caches, descriptor tables)."""
        return self.backend.get_control().copy()

    @property
    def vector(self) -> VectorState:
        """A copy of the vector registers (XMM/YMM/ZMM, opmasks, MXCSR, MMX) as far as the CPU has them."""
        return self.backend.get_vector()

    def set_vector(self, vec: VectorState) -> None:
        """Load the vector registers; refused (VcpuBusy) while a request is pending."""
        self._idle("set_vector")
        self.backend.set_vector(vec)

    @property
    def cpuid(self) -> CpuidTable:
        """What CPUID reports to the guest (instructions of features it lacks raise #UD)."""
        return self.backend.cpuid

    def set_regs(self, regs: Regs) -> None:
        """Load all GPRs, RIP and RFLAGS; refused (VcpuBusy) while a request is pending."""
        self._idle("set_regs")
        self.backend.set_regs(regs, DIRTY_ALL)

    def set_control(self, ctl: Control) -> None:
        """Load the control state; refused (VcpuBusy) while a request is pending."""
        self._idle("set_control")
        self.backend.set_control(ctl)
        self.plans.forget()  # a backend may hand back an equal state as the object it had before
        self.tlb.flush()

    def request_stop(self) -> None:
        """Make the run in progress (or the next) return SuspendedExit soon; callable from any thread.

        A guest that never exits (a tight loop) is stopped only this way.
        """
        self._stop = True
        self.backend.request_stop()
        self.vm.wakeup.set()

    def _idle(self, what: str) -> None:
        if self._pending is not None:
            raise VcpuBusy(f"{what} while {self._pending} is pending: fulfill or discard it first")

    # -- the boundary -------------------------------------------------------------------------

    def run(self, entry: VmEntry | None = None) -> VmExit:
        """Apply `entry`, finish what is in flight, run the guest, and return the next exit."""
        pending = self._pending
        if pending is not None and entry is self._accepted and pending is self._accepted_for:
            value = self._accepted_value  # the same (immutable) entry fulfilled the same request before
        else:
            if entry is None:
                entry = _DEFAULT
            if pending is None:
                if type(entry) is not Default:
                    raise EntryError(f"{type(entry).__name__} entry, but no request is pending")
                return _SUSPENDED if entry.exit_consistent else self._run_guest()
            if type(entry) is Discard:
                self._pending = None
                self._batch = None
                cur = self._cur
                self._cur = None
                if cur is not None:
                    cur.direct_pending = False
                    self._flush(cur)  # REP iterations completed before this one stay completed
                return _SUSPENDED if entry.exit_consistent else self._run_guest()
            if self._batch is not None:
                return self._fulfill_batch(pending, entry)
            assert type(pending) is MmioExit or type(pending) is InoutExit
            try:
                value = fulfillment_data(pending, entry)
            except AbiError as err:
                raise EntryError(str(err)) from None
            self._accepted, self._accepted_for, self._accepted_value = entry, pending, value
        self._pending = None
        cur = self._cur
        assert cur is not None
        # The request stays in effect for the rest of the instruction, whatever later entries say.
        if entry.exit_consistent:  # type: ignore[union-attr]  # (entry is the accepted one, never None)
            cur.consistent = True
        if cur.direct_pending:
            if cur.fast_handle >= 0 and self.fast and not cur.consistent and self.vm.interrupts is None:
                handle = self.backend.fast_cycle(cur.fast_handle, value)  # type: ignore[attr-defined]
                if handle >= 0:
                    hit = self._fast_runs.get(handle)
                    if hit is not None:  # the request of the plan matched (registers in the backend)
                        run, a = hit
                        run.consistent = False
                        run.direct_pending = True
                        run.loaded = False
                        direct = run.direct
                        assert direct is not None
                        stored = 0 if direct.load else self._fastpath.data
                        request = a.request
                        if request is None or request.data != stored:
                            request = a.request = mmio_request(
                                a.pieces[0][1], a.size, not direct.load, stored
                            )
                        self._cur = run
                        self._pending = request
                        return request
                if handle != _FAST_NOT_RUN:  # completed and run: go on from where the engine stopped
                    cur.direct_pending = False
                    self._cur = None
                    return self._on_event(self.backend.fast_stopped())  # type: ignore[attr-defined]
            self._finish_direct(cur, value)
        else:
            ex = self._advance(cur, value)
            if ex is not None:
                return ex
        if cur.consistent:
            return _SUSPENDED
        return self._run_guest()

    def _fulfill_batch(self, pending: Request, entry: VmEntry) -> VmExit:
        """`run` with a batched run pending."""
        batch = self._batch
        assert batch is not None
        assert type(pending) is MmioBatchExit or type(pending) is InoutBatchExit
        try:
            count, data = batch_fulfillment(pending, entry)
        except AbiError as err:
            raise EntryError(str(err)) from None
        self._pending = None
        self._batch = None
        cur = self._cur
        assert cur is not None
        cur.consistent = cur.consistent or entry.exit_consistent
        ex = self._finish_batch(cur, batch, count, data)
        if ex is not None:
            return ex
        if cur.consistent:
            return _SUSPENDED
        return self._run_guest()

    def _on_event(self, event: BackendEvent) -> VmExit:
        """Handle `event` as `_run_guest` would, then run on."""
        if type(event) is NpfEvent and not event.fetch:
            ex = self._emulate(event.gpa >> PAGE_SHIFT, -1)
        else:
            ex = self._event_handlers[type(event)](self, event)
        return ex if ex is not None else self._run_guest()

    def _run_guest(self) -> VmExit:
        handlers = self._event_handlers
        backend = self.backend
        interrupts = self.vm.interrupts is not None
        while True:
            if interrupts:
                self._interrupt_window()
                if self._stop:
                    self._stop = False
                    return _SUSPENDED
            event = backend.run()
            if type(event) is NpfEvent and not event.fetch:  # the common exit, without the dispatch
                ex = self._emulate(event.gpa >> PAGE_SHIFT, -1)
            else:
                ex = handlers[type(event)](self, event)
            if ex is not None:
                return ex

    # -- interrupts and time ----------------------------------------------------------------------

    def _interrupt_window(self) -> None:
        """At an instruction boundary: inject what is pending if the guest can take it, and arm the
        backend to stop when the shared rules want to look again (the next deadline, or soon when an
        interrupt waits for IF)."""
        vm = self.vm
        at, _waiting = offer_interrupt(vm, self.backend)
        self.backend.set_timer(None if at is None else at - vm.clock.now_ns())

    def _wait_for_interrupt(self) -> VmExit | None:
        """HLT: with interrupts enabled, sleep until the next deadline or a kick, then go on."""
        if self.vm.interrupts is None:
            return _HLT  # what wait_halted says without an interrupt source, without reading RFLAGS
        enabled = bool(self.backend.get_regs().rflags & IF)
        halt = wait_halted(self.vm, enabled, lambda: self._stop)
        if halt is Halt.RESUME:
            return None
        if halt is Halt.EXIT:
            return _HLT
        self._stop = False
        return _SUSPENDED

    # -- backend events -------------------------------------------------------------------------

    def _on_npf(self, event: BackendEvent) -> VmExit | None:
        assert type(event) is NpfEvent
        if event.fetch:
            return self._fetch_fault()
        return self._emulate(event.gpa >> PAGE_SHIFT, -1)

    def _fetch_fault(self) -> VmExit | None:
        """The hardware could not fetch code: hand the instruction whose bytes are not RAM to userspace.

        An engine that translates blocks reports the fault at the start of the straight-line run that led
        to it (a block never contains a branch before its end). The instructions before the missing bytes
        are decoded here, the hardware runs up to the first that cannot be fetched, and that one becomes
        a FETCH_FAILED exit carrying the bytes that are RAM, at its own RIP, as a CPU would report it.
        """
        backend = self.backend
        ctl = backend.get_control()
        regs = backend.get_regs()
        wrap = MASK[8] if ctl.code_size == 64 else 0xFFFF_FFFF
        rip = regs.rip
        for _ in range(_MAX_BLOCK):
            try:
                plan = self.plans.get(ctl, rip, regs.rflags)
            except EmulationAbort as abort:
                if rip == regs.rip:
                    return InstEmulExit(rip, abort.insn[:MAX_INSN_LEN], InstEmulReason.FETCH_FAILED)
                break
            except (GuestFault, TranslationError):
                break  # the hardware raises or reports it itself when it gets there (#UD included)
            rip = (rip + plan.insn.length) & wrap
        if rip == regs.rip:
            return InstEmulExit(rip, b"", InstEmulReason.FETCH_FAILED)
        backend.stop_at(rip)
        return None

    def _on_io(self, event: BackendEvent) -> VmExit | None:
        assert type(event) is IoEvent
        return self._emulate(-1, event.port)

    def _on_hlt(self, event: BackendEvent) -> VmExit | None:
        return self._wait_for_interrupt()

    def _on_shutdown(self, event: BackendEvent) -> VmExit | None:
        assert type(event) is ShutdownEvent
        self.shutdown_detail = event.detail
        unsupported = ShutdownReason.UNSUPPORTED_DELIVERY
        return ShutdownExit(unsupported if event.unsupported else ShutdownReason.TRIPLE_FAULT)

    def _on_stopped(self, event: BackendEvent) -> VmExit | None:
        assert type(event) is StoppedEvent
        if event.stop_at is not None or event.timer:
            return None  # the kernel's own stop (a deadline, a fetch fault located): go on
        self._stop = False
        return _SUSPENDED

    _event_handlers = {
        NpfEvent: _on_npf,
        IoEvent: _on_io,
        HltEvent: _on_hlt,
        ShutdownEvent: _on_shutdown,
        StoppedEvent: _on_stopped,
    }

    # -- starting an instruction ----------------------------------------------------------------

    def _emulate(self, fault_page: int, fault_port: int) -> VmExit | None:
        backend = self.backend
        ctl = backend.get_control()
        regs = backend.get_regs()
        rip = regs.rip
        try:
            plan = self.plans.get(ctl, rip, regs.rflags)
        except GuestFault as fault:
            self._inject(fault)
            return None
        except EmulationAbort as abort:
            return InstEmulExit(rip, abort.insn[:MAX_INSN_LEN], abort.reason)
        except TranslationError:
            return InstEmulExit(rip, b"", InstEmulReason.TRANSLATION_FAILED)
        cur = plan.run
        if cur is None:
            return InstEmulExit(rip, plan.insn.raw, InstEmulReason.NOT_EMULATED)
        form = cur.form
        if form.port != (fault_port >= 0) and not (form.string and fault_page >= 0):
            # An I/O exit from an instruction without port I/O, or an NPF from IN/OUT: the code
            # changed under the exit (INS/OUTS may also fault on their memory operand).
            return InstEmulExit(rip, plan.insn.raw, InstEmulReason.GPA_MISMATCH)
        if cur.direct is not None and cur.memos and self.direct:
            ex = self._direct(cur, regs, fault_page)
            if ex is not None:
                return ex
        # The backend handed us a private copy of the registers: stage on it directly.
        cur.start(regs.gprs, regs.rflags, fault_page, fault_port)
        self._cur = cur
        if cur.rep and not regs.gprs[Gpr.RCX] & MASK[cur.insn.addr_size]:
            # REP with a zero count: no iteration, no access; the instruction only advances RIP (and,
            # with 32-bit addressing in 64-bit mode, clears upper halves as Intel CPUs do).
            x = cur.x
            if cur.insn.addr_size == 4 and plan.mode == 64:
                for reg in (Gpr.RCX, *cur.form.zero_count_clears):
                    x.set(reg, 4, x.gprs[reg])
            return self._complete(cur)
        return self._advance(cur, None)

    def _direct(self, cur: Run, regs: Regs, fault_page: int) -> MmioExit | None:
        """Start a `Direct` form (a MOV to or from its memory operand) as its last run went: when its one
        access is again the planned request to userspace (same offset and RFLAGS.AC, its translation
        unchanged, at the faulting page), the exit is made at once, without running the semantics; the
        fulfillment completes it (`_finish_direct`). None: go the general way."""
        a = cur.memos[0]
        gprs = regs.gprs
        rflags = regs.rflags
        if not (a.user and a.pages[0] == fault_page and a.off == cur.direct_ea(gprs) and a.ac == rflags & AC):
            return None
        for view, get, expected in a.groups:  # the translation stands (`holds`, inline)
            if get(view) != expected:
                return None
        # What `Run.start` does, as far as a Direct form uses it: the semantics never stage RAM, control
        # or vector state, and the run has one access, matched to the fault here.
        x = cur.x
        x.gprs = gprs
        x.rflags = rflags
        x.dirty = 0
        cur.loaded = True
        cur.consistent = False
        cur.direct_pending = True
        direct = cur.direct
        assert direct is not None
        if direct.load:
            data = 0
        else:
            data = cur.direct_data
            if data < 0:
                data = x.get(cur.direct_reg, cur.direct_size)
        ex = a.request
        if ex is None or ex.data != data:
            ex = a.request = mmio_request(a.pieces[0][1], a.size, not direct.load, data)
        self._cur = cur
        self._pending = ex
        if self._fastpath is not None and self.fast:
            self._learn(cur, a)
        return ex

    def _learn(self, cur: Run, a: Access) -> None:
        """Teach the native exit path the plan of `cur` with its access `a` (it just went the Python way)."""
        fastpath = self._fastpath
        runs = self._fast_runs
        generation = self.memory.generation
        if generation != self._fast_generation or len(runs) >= _FAST_RUNS:
            fastpath.clear()  # a new region may change where accesses go; or too many plans learned
            runs.clear()
            self._fast_generation = generation
        args = a.fast
        if args is None or args[0] is not cur:
            args = a.fast = (cur, self._learner.args(cur, a))
        handle: int = fastpath.learn(*args[1], self.backend.fast_key)  # type: ignore[attr-defined]
        cur.fast_handle = handle
        if handle >= 0:
            runs[handle] = (cur, a)

    def _finish_direct(self, cur: Run, value: int) -> None:
        """Complete a `Direct` form with the value userspace read (nothing for a store): what `_complete`
        does for an instruction that staged no RAM, control or vector state and matched its fault."""
        cur.direct_pending = False
        self._cur = None
        direct = cur.direct
        assert direct is not None
        x = cur.x
        if not cur.loaded:  # its exit came from the native path: the registers are in the backend
            regs = self.backend.get_regs()
            x.gprs = regs.gprs
            x.rflags = regs.rflags
            x.dirty = 0
            cur.loaded = True
        if direct.load:
            size = cur.direct_size
            if direct.signed and value & SIGN[size]:
                value -= SIGN[size] << 1
            x.set(cur.direct_reg, cur.insn.width, value)
        out = self._out
        out.gprs = x.gprs
        out.rip = x.next_rip
        out.rflags = x.rflags
        self.backend.set_regs(out, x.dirty | DIRTY_RIP)

    # -- driving an instruction -----------------------------------------------------------------

    def _advance(self, cur: Run, value: int | None) -> VmExit | None:
        """Run `cur` until it needs userspace (an exit is returned) or completes (None).

        `value` is None to start the semantics, else the data userspace has just supplied. Each request
        the semantics yields is performed; one served in the kernel sends its value straight back.
        """
        try:
            while True:
                if value is None and cur.rep and self._batching and cur.form.elements is not None:
                    batch = self._batcher.plan(cur)  # an iteration starts: as many as fit, in one request
                    if batch is not None:
                        cur.iterations = 0
                        self._flush(cur)
                        self._batch = batch
                        self._pending = batch.request
                        return batch.request
                gen = cur.gen
                try:
                    if value is None:
                        req = next(gen)
                    else:
                        pieces = cur.pieces
                        if pieces is not None:
                            if len(pieces) == 1:  # the whole access was this request
                                cur.pieces = None
                                if cur.is_write:
                                    value = 0
                            else:  # userspace has served one piece: finish the others
                                ex = self._resume_access(cur, value)
                                if ex is not None:
                                    return ex
                                value = cur.value
                        req = gen.send(value)
                    while True:
                        kind, a, b, size, data = req
                        if kind <= SYS_WRITE or kind & NO_AC:
                            ex = self._start_access(cur, kind, a, b, size, data)
                        elif kind <= PORT_OUT:
                            ex = self._port_access(cur, kind == PORT_IN, a, size, data)
                        elif kind == PORT_CHECK:
                            self._check_io(cur, a, size)
                            ex = None
                        else:
                            self._check_alignment(cur, a, b, size)
                            ex = None
                        if ex is not None:
                            cur.iterations = 0  # userspace runs now: the in-kernel work bound starts again
                            if cur.done is not None:
                                self._flush(cur)
                            return ex
                        req = gen.send(cur.value)
                except StopIteration:
                    pass
                if not cur.rep or self._rep_iteration_done(cur):
                    return self._complete(cur)
                # Stop between iterations when the budget is spent or userspace wants a consistent
                # state: RIP still points at the instruction, so the guest re-executes it.
                cur.iterations += 1
                if cur.consistent or cur.iterations >= self.rep_budget:
                    self._cur = None
                    self._flush(cur)
                    return None
                cur.gen = cur.form.fn(cur.x, cur.insn)
                value = None
        except GuestFault as fault:
            self._cur = None
            self._flush(cur)
            if cur.x.faulted_vec is not None:  # what the CPU changes even when the instruction faults
                self.backend.set_vector(cur.x.faulted_vec)
            self._inject(fault)
            return None
        except EmulationAbort as abort:
            self._cur = None
            self._flush(cur)
            return InstEmulExit(cur.rip, cur.insn.raw, abort.reason)
        except TranslationError:
            self._cur = None
            self._flush(cur)
            return InstEmulExit(cur.rip, cur.insn.raw, InstEmulReason.TRANSLATION_FAILED)

    def _finish_batch(self, cur: Run, batch: Batch, count: int, data: bytes) -> VmExit | None:
        """Complete `count` elements of a batched run, then go on with the instruction as after that many
        iterations (the next run may be another request at once)."""
        self._batcher.complete(cur, batch, count, data)
        x = cur.x
        if not x.gprs[Gpr.RCX] & MASK[cur.insn.addr_size]:
            return self._complete(cur)
        cur.done = (x.gprs[:], x.rflags, x.dirty)
        cur.iterations = 0
        if cur.consistent:  # between two iterations: a consistent state
            self._cur = None
            self._flush(cur)
            return None
        cur.gen = cur.form.fn(x, cur.insn)
        return self._advance(cur, None)

    def _io_permitted(self, cur: Run, port: int, size: int) -> bool:
        """`_check_io` as a question (batched runs leave a refused port to the one-by-one way)."""
        try:
            self._check_io(cur, port, size)
        except (GuestFault, EmulationAbort):
            return False
        return True

    def _rep_iteration_done(self, cur: Run) -> bool:
        """Count one REP iteration down and commit it; True when the instruction is finished.

        Its RAM writes and control or vector changes land now (the next iteration must see them); its
        registers are kept aside and reach the backend once, when the vCPU leaves the kernel (`_flush`).
        """
        x = cur.x
        count = (x.gprs[Gpr.RCX] - 1) & MASK[x.addr_size]
        x.set(Gpr.RCX, x.addr_size, count)
        done = count == 0
        if cur.form.rep_zf and not done:
            zf = bool(x.rflags & ZF)
            done = zf if cur.insn.rep == 0xF2 else not zf
        if done:
            return True
        self._commit_memory(cur)
        cur.done = (x.gprs[:], x.rflags, x.dirty)
        return False

    def _flush(self, cur: Run) -> None:
        """Write the registers of the REP iterations completed since the vCPU entered the kernel."""
        done = cur.done
        if done is not None:
            gprs, rflags, dirty = done
            self.backend.set_regs(Regs(gprs, 0, rflags), dirty & ~DIRTY_RIP)
            cur.done = None

    def _complete(self, cur: Run) -> VmExit | None:
        self._cur = None
        if cur.fault_page >= 0 and cur.accesses:
            # It made accesses but never touched the faulting page: the code or tables changed under us.
            # One that made none (a register form) cannot contradict the exit and is performed, as KVM's
            # emulator performs whatever is at RIP (the form rows and the oracles run register forms so).
            self._flush(cur)
            return InstEmulExit(cur.rip, cur.insn.raw, InstEmulReason.GPA_MISMATCH)
        x = cur.x
        if cur.deferred or x.new_ctl is not None or x.vec_dirty:
            self._commit_memory(cur)
        # The registers of earlier REP iterations are in x too (their dirty bits accumulate).
        cur.done = None
        out = self._out
        out.gprs = x.gprs
        out.rip = x.next_rip
        out.rflags = x.rflags
        self.backend.set_regs(out, x.dirty | DIRTY_RIP)
        return None

    def _commit_memory(self, cur: Run) -> None:
        """Let the staged RAM writes land and load staged control and vector state; the backend copies
        them, so staging may go on after."""
        deferred = cur.deferred
        if deferred:
            written = self.backend.ram_written
            for region, off, data, la in deferred:
                region.view[off : off + len(data)] = data
                written(la, region.gpa + off, len(data))
            cur.deferred = None
        x = cur.x
        if x.new_ctl is not None:
            self.backend.set_control(x.new_ctl)
            x.new_ctl = None
        if x.vec_dirty:
            assert x.vec is not None
            self.backend.set_vector(x.vec)
            x.vec_dirty = False

    # -- memory accesses ------------------------------------------------------------------------

    def _start_access(self, cur: Run, kind: int, seg: int, off: int, size: int, data: int) -> VmExit | None:
        """Translate and check an access (`kind` may carry NO_AC), then perform what it can in the kernel."""
        n = cur.accesses
        memos = cur.memos
        ac = cur.x.rflags & AC
        updates: Updates | None = None
        if n < len(memos):
            a = memos[n]
            if not (
                a.off == off
                and a.kind == kind
                and a.seg == seg
                and a.size == size
                and a.ac == ac
                and holds(a.groups)
            ):
                a, updates = self._resolve(cur, kind, seg, off, size, data, ac)
                if kind != TOUCH:
                    memos[n] = a
        else:
            a, updates = self._resolve(cur, kind, seg, off, size, data, ac)
            if n < PLANNED_ACCESSES and kind != TOUCH:
                memos.append(a)
        kind &= ~NO_AC
        fault_page = cur.fault_page
        if fault_page >= 0:
            if fault_page in a.pages:
                cur.fault_page = -1
            elif kind != TOUCH and not a.all_ram:
                # RAM before the faulting page is fine (ENTER pushes before it reads its display; RAM
                # writes are deferred to the commit), a device is not: that access would have been the
                # fault. A probe (TOUCH) transfers nothing: it may come first wherever it is (masked
                # stores probe their last byte before writing the first; the check at completion still
                # applies).
                raise EmulationAbort(
                    InstEmulReason.GPA_MISMATCH, f"access at {a.pieces[0][1]:#x} before the faulting page"
                )
        if updates:
            apply_updates(updates)
        cur.accesses = n + 1
        cur.value = 0
        if kind == TOUCH:
            return None
        pieces = a.pieces
        is_write = _WRITES[kind]
        cur.pieces = pieces
        cur.is_write = is_write
        if len(pieces) == 1 and pieces[0][3] is None:  # the common exit: one request to userspace
            cur.piece = 0
            data = data & MASK[size] if is_write else 0
            ex = a.request
            if ex is None or ex.data != data:  # exits are values: the last one of this access may repeat
                ex = a.request = mmio_request(pieces[0][1], size, is_write, data)
            self._pending = ex
            return ex
        cur.piece = 0
        cur.data = data
        cur.la = a.la
        return self._resume_access(cur, None)

    def _resolve(
        self, cur: Run, kind: int, seg: int, off: int, size: int, data: int, ac: int
    ) -> tuple[Access, Updates]:
        """Where an access goes: its linear address (with the segmentation checks), the page walk of
        every page it touches (before any is touched), and the pieces it splits into, by target."""
        ctl = cur.ctl
        plain = kind & ~NO_AC
        access = _ACCESS_BITS[plain]
        if plain == TOUCH and data:
            access = PFEC_W  # a probe for write permission (masked stores check before they write)
        if plain < SYS_READ:
            rflags = cur.x.rflags if not kind & NO_AC else cur.x.rflags & ~AC
            la = linear_address(ctl, cur.mode, seg, off, size, access, rflags)
            if ctl.cpl == 3:
                access |= PFEC_U
            ac_flag = bool(ac)
        else:  # implicit supervisor access to a system structure: linear, whatever the CPL
            la = off & (MASK[8] if ctl.efer & EFER_LMA else 0xFFFF_FFFF)
            ac_flag = False
        tlb = self.tlb
        gpa, updates, groups = tlb.walk(ctl, la, access, ac_flag)
        split = PAGE_SIZE - (la & PAGE_MASK)
        find = self.memory.find
        pieces: list[Piece]
        if split >= size:  # the common case: one page
            target = find(gpa)
            pages: tuple[int, ...] = (gpa >> PAGE_SHIFT,)
            all_ram = type(target) is RamRegion
            if all_ram or size in _WHOLE:
                pieces = [(0, gpa, size, target)]
            else:
                pieces = [(o, g, n, target) for o, g, n in split_access(gpa, size)]
        else:
            la2 = (la + split) & (MASK[8] if cur.mode == 64 else 0xFFFF_FFFF)
            gpa2, updates2, groups2 = tlb.walk(ctl, la2, access, ac_flag)
            updates = updates + updates2
            groups = groups + groups2
            pages = (gpa >> PAGE_SHIFT, gpa2 >> PAGE_SHIFT)
            pieces = []
            all_ram = True
            for start, g, n in ((0, gpa, split), (split, gpa2, size - split)):
                target = find(g)
                if type(target) is RamRegion:
                    pieces.append((start, g, n, target))
                else:
                    all_ram = False
                    pieces += [(start + o, g2, n2, target) for o, g2, n2 in split_access(g, n)]
        user = len(pieces) == 1 and pieces[0][3] is None
        return Access(kind, seg, off, size, ac, la, pages, pieces, all_ram, groups, None, user), updates

    def _resume_access(self, cur: Run, fulfilled: int | None) -> VmExit | None:
        """Perform the pieces of the current access from `cur.piece` on."""
        pieces = cur.pieces
        assert pieces is not None
        i = cur.piece
        is_write = cur.is_write
        if fulfilled is not None:
            if not is_write:
                cur.value |= fulfilled << (8 * pieces[i][0])
            i += 1
        data = cur.data
        while i < len(pieces):
            start, gpa, n, target = pieces[i]
            piece_data = (data >> (8 * start)) & ((1 << (8 * n)) - 1) if is_write else 0
            if type(target) is RamRegion:
                o = gpa - target.gpa
                if is_write:
                    if cur.deferred is None:
                        cur.deferred = []
                    cur.deferred.append((target, o, piece_data.to_bytes(n, "little"), cur.la + start))
                elif cur.deferred:
                    cur.value |= int.from_bytes(_overlay(cur.deferred, target, o, n), "little") << (8 * start)
                else:
                    cur.value |= int.from_bytes(target.view[o : o + n], "little") << (8 * start)
            elif type(target) is HandlerRegion:
                if is_write:
                    target.handler.write(gpa - target.gpa, n, piece_data)
                else:
                    cur.value |= (target.handler.read(gpa - target.gpa, n) & MASK[n]) << (8 * start)
            else:
                cur.piece = i
                ex = mmio_request(gpa, n, is_write, piece_data)
                self._pending = ex
                return ex
            i += 1
        cur.pieces = None
        return None

    def _check_alignment(self, cur: Run, seg: int, off: int, alignment: int) -> None:
        """#GP(0) unless the operand's linear address is a multiple of `alignment` (MOVAPS & co).

        It comes before the access's own checks: the host CPU raises #GP(0) for a misaligned MOVAPS at a
        non-canonical RSP-based address (#SS(0) only when it is aligned). Segment bases are multiples
        of 16 in 64-bit mode except FS/GS; outside it the base is added as the CPU does.
        """
        ctl = cur.ctl
        base = ctl.segs[seg].base if cur.mode != 64 or seg >= _FS else 0
        if (base + off) & (alignment - 1):
            raise GuestFault(GP, 0)

    # -- port accesses --------------------------------------------------------------------------

    def _check_io(self, cur: Run, port: int, size: int) -> None:
        """IOPL and the TSS I/O bitmap; #GP(0) before the instruction touches anything."""
        linear = self._linear
        try:
            check_io(cur.ctl, cur.x.rflags, port, size, lambda la, n: linear.read(cur.ctl, la, n))
        except Unsupported as e:
            raise EmulationAbort(InstEmulReason.NOT_EMULATED, f"I/O permission bitmap: {e}") from None

    def _port_access(self, cur: Run, is_in: bool, port: int, size: int, data: int) -> VmExit | None:
        if cur.fault_port >= 0:
            if port != cur.fault_port:
                raise EmulationAbort(InstEmulReason.GPA_MISMATCH, f"port {port:#x} is not the exiting port")
            cur.fault_port = -1
        cur.accesses += 1
        cur.value = 0
        hit = self.vm.ports.lookup(port)
        if hit is not None:
            base, device = hit
            if is_in:
                cur.value = device.read(port - base, size) & MASK[size]
            else:
                device.write(port - base, size, data)
            return None
        # Userspace answers; its data comes back through `_advance`'s value (pieces stays None).
        ex = inout_request(port, size, is_in, 0 if is_in else data)
        self._pending = ex
        return ex

    # -- exceptions -----------------------------------------------------------------------------

    def _inject(self, fault: GuestFault) -> None:
        self.backend.inject_exception(fault.vector, fault.error_code, fault.cr2)


def _overlay(deferred: list[tuple[RamRegion, int, bytes, int]], region: RamRegion, off: int, n: int) -> bytes:
    """RAM as the instruction in flight sees it: what it has written so far, over what is there."""
    buf = bytearray(region.view[off : off + n])
    for r, o, data, _la in deferred:
        if r is region and o < off + n and off < o + len(data):
            lo, hi = max(o, off), min(o + len(data), off + n)
            buf[lo - off : hi - off] = data[lo - o : hi - o]
    return bytes(buf)


__all__ = ["EntryError", "Vcpu", "VcpuBusy"]
