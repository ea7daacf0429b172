"""The vCPU: the instruction-emulation state machine behind `run(entry) -> exit`.

On a fault the Vcpu fetches and decodes the instruction at CS:RIP and runs its semantics. Each access
the semantics yields is translated, split at page boundaries and into naturally aligned pieces of at
most 8 bytes, and performed: RAM and in-kernel handlers directly, anything else as an exit to
userspace. The instruction's progress stays here until userspace fulfills the request on the next
entry; registers are committed only when the instruction (or one REP iteration) completes.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmmio.abi import (
    AbiError,
    Default,
    Discard,
    EntryError,
    HltExit,
    InoutExit,
    InstEmulExit,
    InstEmulReason,
    MmioExit,
    ShutdownExit,
    ShutdownReason,
    SuspendedExit,
    VmEntry,
    VmExit,
    fulfillment_data,
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
from vmmio.vmm.semantics import lookup
from vmmio.vmm.semantics.context import (
    NO_AC,
    PORT_CHECK,
    PORT_IN,
    PORT_OUT,
    SYS_READ,
    SYS_WRITE,
    TOUCH,
    Exec,
    Form,
    Steps,
)
from vmmio.vmm.vm import Vm
from vmmio.x86.cpuid import CpuidTable
from vmmio.x86.decode import decode_cached
from vmmio.x86.delivery import LinearMemory, Unsupported
from vmmio.x86.faults import GP, PFEC_I, PFEC_U, PFEC_W, UD, GuestFault
from vmmio.x86.insn import MAX_INSN_LEN, DecodeError, DecodeStatus, Insn
from vmmio.x86.ioperm import check_io
from vmmio.x86.paging import TranslationError, apply_updates
from vmmio.x86.regs import AC, IF, MASK, ZF, Gpr, Seg
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import DIRTY_ALL, DIRTY_RIP, EFER_LMA, Control, Regs, VectorState

DECODE_CACHE_LIMIT = 4096  # instructions with their semantics; the GC pause bound (see x86.decode)

# Page-fault error-code bits each request kind checks (RMW reads are checked for write).
_ACCESS_BITS = (0, PFEC_W, PFEC_W, 0, 0, PFEC_W)  # by request kind, READ .. SYS_WRITE
_WRITES = (False, True, False, False, False, True)
_CS, _FS = int(Seg.CS), int(Seg.FS)
_WHOLE = frozenset((1, 2, 4, 8))  # device accesses of these sizes stay one request
_MAX_BLOCK = 4096  # instructions decoded ahead to find where a fetch fault really is
_HLT = HltExit()
_SUSPENDED = SuspendedExit()


# A piece of one access: (byte offset within the access, gpa, size, RAM region / handler / None).
Piece = tuple[int, int, int, RamRegion | HandlerRegion | None]


@dataclass(slots=True)
class _Inflight:
    """An instruction between its fault and its completion."""

    insn: Insn
    form: Form
    ctl: Control
    mode: int
    rip: int  # RIP of the instruction
    x: Exec
    gen: Steps
    fault_page: int  # page of the faulting GPA not yet matched by an access, or -1
    fault_port: int  # port of an I/O exit not yet matched, or -1
    iterations: int = 0  # REP iterations completed in the kernel since the last exit
    accesses: int = 0  # accesses performed so far (for the faulting-GPA check)
    consistent: bool = False  # userspace asked to stop at the next consistent state
    # The access in progress: its pieces, the next piece, the value assembled so far, write data.
    pieces: list[Piece] | None = None
    piece: int = 0
    value: int = 0
    data: int = 0
    is_write: bool = False
    la: int = 0  # linear address of the access in progress
    # RAM writes of the instruction (or REP iteration) in flight: (region, offset, bytes, linear address).
    # They land when it commits, so a fault or a Discard leaves RAM as it was.
    deferred: list[tuple[RamRegion, int, bytes, int]] | None = None


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
        self._cur: _Inflight | None = None
        self._pending: MmioExit | InoutExit | None = None
        # (instruction bytes, mode) -> (decoded instruction, its semantics or None).
        self._decoded: dict[tuple[bytes, int], tuple[Insn, Form | None]] = {}

    @property
    def pending(self) -> MmioExit | InoutExit | None:
        """The request userspace must fulfill on the next entry, if any."""
        return self._pending

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
        if entry is None:
            entry = Default()
        pending = self._pending
        if pending is None:
            if type(entry) is not Default:
                raise EntryError(f"{type(entry).__name__} entry, but no request is pending")
        elif type(entry) is Discard:
            self._pending = None
            self._cur = None
        else:
            try:
                value = fulfillment_data(pending, entry)
            except AbiError as err:
                raise EntryError(str(err)) from None
            self._pending = None
            cur = self._cur
            assert cur is not None
            # The request stays in effect for the rest of the instruction, whatever later entries say.
            cur.consistent = cur.consistent or entry.exit_consistent
            ex = self._advance(cur, value)
            if ex is not None:
                return ex
            if cur.consistent:
                return _SUSPENDED
        if entry.exit_consistent:
            return _SUSPENDED
        return self._run_guest()

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
        mode = ctl.code_size
        wrap = MASK[8] if mode == 64 else 0xFFFF_FFFF
        rip = regs.rip
        for _ in range(_MAX_BLOCK):
            try:
                code = self._fetch(ctl, rip, regs.rflags, mode)
            except EmulationAbort as abort:
                if rip == regs.rip:
                    return InstEmulExit(rip, abort.insn[:MAX_INSN_LEN], InstEmulReason.FETCH_FAILED)
                break
            except (GuestFault, TranslationError):
                break  # the hardware raises or reports it itself when it gets there
            result = decode_cached(code, mode)
            if type(result) is not Insn:
                break
            rip = (rip + result.length) & wrap
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
        mode = ctl.code_size
        code = b""
        try:
            code = self._fetch(ctl, regs.rip, regs.rflags, mode)
            decoded = self._decoded.get((code, mode))
            if decoded is None:
                decoded = self._decode(code, mode)
            insn, form = decoded
            if mode != 64:
                linear_address(ctl, mode, _CS, regs.rip, insn.length, PFEC_I, regs.rflags)  # CS limit
            if form is None:
                return InstEmulExit(regs.rip, insn.raw, InstEmulReason.NOT_EMULATED)
            if form.port != (fault_port >= 0) and not (form.string and fault_page >= 0):
                # An I/O exit from an instruction without port I/O, or an NPF from IN/OUT: the code
                # changed under the exit (INS/OUTS may also fault on their memory operand).
                return InstEmulExit(regs.rip, insn.raw, InstEmulReason.GPA_MISMATCH)
            stack = 8 if mode == 64 else (4 if ctl.segs[Seg.SS].db else 2)
            # The backend handed us a private copy of the registers: stage on it directly.
            next_rip = (regs.rip + insn.length) & (MASK[8] if mode == 64 else 0xFFFF_FFFF)
            x = Exec(insn, regs.gprs, regs.rflags, next_rip, stack, ctl, backend.cpuid, backend.get_vector)
            cur = _Inflight(insn, form, ctl, mode, regs.rip, x, form.fn(x, insn), fault_page, fault_port)
        except GuestFault as fault:
            self._inject(fault)
            return None
        except EmulationAbort as abort:
            return InstEmulExit(regs.rip, (code or abort.insn)[:MAX_INSN_LEN], abort.reason)
        except TranslationError:
            return InstEmulExit(regs.rip, code[:MAX_INSN_LEN], InstEmulReason.TRANSLATION_FAILED)
        self._cur = cur
        if form.string and insn.rep and not x.gprs[Gpr.RCX] & MASK[insn.addr_size]:
            # REP with a zero count: no iteration, no access; the instruction only advances RIP (and,
            # with 32-bit addressing in 64-bit mode, clears upper halves as Intel CPUs do).
            if insn.addr_size == 4 and mode == 64:
                for reg in (Gpr.RCX, *form.zero_count_clears):
                    x.set(reg, 4, x.gprs[reg])
            cur.fault_page = -1  # completed whatever the exit said, as KVM's emulator does
            return self._complete(cur)
        return self._advance(cur, None)

    def _decode(self, code: bytes, mode: int) -> tuple[Insn, Form | None]:
        """Decode `code` and find its semantics; remember both for the next fault at this code."""
        result = decode_cached(code, mode)
        if type(result) is DecodeError:
            status = result.status
            if status is DecodeStatus.TOO_LONG:
                raise GuestFault(GP, 0)
            if status is DecodeStatus.TRUNCATED:
                raise EmulationAbort(InstEmulReason.FETCH_FAILED, "instruction runs past fetchable code")
            raise GuestFault(UD)
        assert type(result) is Insn
        decoded = (result, lookup(result))
        if len(self._decoded) >= DECODE_CACHE_LIMIT:
            self._decoded.clear()
        self._decoded[code, mode] = decoded
        return decoded

    def _fetch(self, ctl: Control, rip: int, rflags: int, mode: int) -> bytes:
        """Up to 15 instruction bytes at CS:RIP: the first page always, the next only if needed."""
        access = PFEC_I | (PFEC_U if ctl.cpl == 3 else 0)
        la = linear_address(ctl, mode, _CS, rip, 1, PFEC_I, rflags)
        walker = self.walker
        gpa, updates = walker.walk(ctl, la, access, False)
        if updates:
            apply_updates(updates)
        first = min(MAX_INSN_LEN, PAGE_SIZE - (la & PAGE_MASK))
        region = self.memory.find(gpa)
        if type(region) is not RamRegion:
            raise EmulationAbort(InstEmulReason.FETCH_FAILED, f"code at {gpa:#x} is not RAM")
        off = gpa - region.gpa
        code = region.mem[off : off + first]
        if first < MAX_INSN_LEN:
            decoded = decode_cached(code, mode)
            if type(decoded) is DecodeError and decoded.status is DecodeStatus.TRUNCATED:
                la2 = (la + first) & (MASK[8] if mode == 64 else 0xFFFF_FFFF)
                gpa2 = walker.translate(ctl, la2, access, False)
                region2 = self.memory.ram_at(gpa2, MAX_INSN_LEN - first)
                if region2 is None:
                    raise EmulationAbort(InstEmulReason.FETCH_FAILED, f"code at {gpa2:#x} is not RAM", code)
                off2 = gpa2 - region2.gpa
                code += bytes(region2.view[off2 : off2 + MAX_INSN_LEN - first])
        return code

    # -- driving an instruction -----------------------------------------------------------------

    def _advance(self, cur: _Inflight, value: int | None) -> VmExit | None:
        """Run `cur` until it needs userspace (an exit is returned) or completes (None)."""
        try:
            while True:
                ex = self._drive(cur, value)
                if ex is not None:
                    cur.iterations = 0  # userspace runs now: the in-kernel work bound starts again
                    return ex
                if not (cur.form.string and cur.insn.rep):
                    return self._complete(cur)
                if self._rep_iteration_done(cur):
                    return self._complete(cur)
                # Stop between iterations when the budget is spent or userspace wants a consistent
                # state: RIP still points at the instruction, so the guest re-executes it.
                cur.iterations += 1
                if cur.consistent or cur.iterations >= self.rep_budget:
                    self._cur = None
                    return None
                cur.gen = cur.form.fn(cur.x, cur.insn)
                value = None
        except GuestFault as fault:
            self._cur = None
            if cur.x.faulted_vec is not None:  # what the CPU changes even when the instruction faults
                self.backend.set_vector(cur.x.faulted_vec)
            self._inject(fault)
            return None
        except EmulationAbort as abort:
            self._cur = None
            return InstEmulExit(cur.rip, cur.insn.raw, abort.reason)
        except TranslationError:
            self._cur = None
            return InstEmulExit(cur.rip, cur.insn.raw, InstEmulReason.TRANSLATION_FAILED)

    def _rep_iteration_done(self, cur: _Inflight) -> bool:
        """Count one REP iteration down and commit it; True when the instruction is finished."""
        x = cur.x
        count = (x.gprs[Gpr.RCX] - 1) & MASK[x.addr_size]
        x.set(Gpr.RCX, x.addr_size, count)
        done = count == 0
        if cur.form.rep_zf and not done:
            zf = bool(x.rflags & ZF)
            done = zf if cur.insn.rep == 0xF2 else not zf
        if done:
            return True
        self._commit(cur, rip=False)
        return False

    def _complete(self, cur: _Inflight) -> VmExit | None:
        self._cur = None
        if cur.fault_page >= 0 and cur.accesses:
            # It made accesses but never touched the faulting page: the code or tables changed under us.
            # One that made none (a register form) cannot contradict the exit and is performed, as KVM's
            # emulator performs whatever is at RIP (the form rows and the oracles run register forms so).
            return InstEmulExit(cur.rip, cur.insn.raw, InstEmulReason.GPA_MISMATCH)
        self._commit(cur, rip=True)
        return None

    def _commit(self, cur: _Inflight, rip: bool) -> None:
        """Write the staged registers and RAM back; the backend copies them, so staging may go on after."""
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
        dirty = x.dirty
        if rip:
            dirty |= DIRTY_RIP
        if dirty:
            self.backend.set_regs(Regs(x.gprs, x.next_rip, x.rflags), dirty)
        x.dirty = 0

    def _drive(self, cur: _Inflight, value: int | None) -> VmExit | None:
        """Feed the semantics and perform what it asks, until it ends (None) or needs userspace.

        `value` is None to start the semantics, else the data userspace has just supplied.
        """
        gen = cur.gen
        try:
            if value is None:
                req = next(gen)
            else:
                if cur.pieces is not None:
                    # A memory access userspace has served one piece of: finish its other pieces.
                    ex = self._resume_access(cur, value)
                    if ex is not None:
                        return ex
                    value = cur.value
                req = gen.send(value)
            while True:
                kind, a, b, size, data = req
                if kind <= SYS_WRITE:
                    ex = self._start_access(cur, kind, a, b, size, data)
                elif kind <= PORT_OUT:
                    ex = self._port_access(cur, kind == PORT_IN, a, size, data)
                elif kind == PORT_CHECK:
                    self._check_io(cur, a, size)
                    ex = None
                elif kind & NO_AC:
                    ex = self._start_access(cur, kind ^ NO_AC, a, b, size, data, False)
                else:
                    self._check_alignment(cur, a, b, size)
                    ex = None
                if ex is not None:
                    return ex
                req = gen.send(cur.value)
        except StopIteration:
            return None

    # -- memory accesses ------------------------------------------------------------------------

    def _start_access(
        self, cur: _Inflight, kind: int, seg: int, off: int, size: int, data: int, check_ac: bool = True
    ) -> VmExit | None:
        ctl = cur.ctl
        access = _ACCESS_BITS[kind]
        if kind == TOUCH and data:
            access = PFEC_W  # a probe for write permission (masked stores check before they write)
        if kind < SYS_READ:
            rflags = cur.x.rflags if check_ac else cur.x.rflags & ~AC
            la = linear_address(ctl, cur.mode, seg, off, size, access, rflags)
            if ctl.cpl == 3:
                access |= PFEC_U
            ac_flag = bool(cur.x.rflags & AC)
        else:  # implicit supervisor access to a system structure: linear, whatever the CPL
            la = off & (MASK[8] if ctl.efer & EFER_LMA else 0xFFFF_FFFF)
            ac_flag = False
        walker = self.walker
        # Translate every page of the access before touching any of them.
        gpa, updates = walker.walk(ctl, la, access, ac_flag)
        split = PAGE_SIZE - (la & PAGE_MASK)
        find = self.memory.find
        fault_page = cur.fault_page
        pieces: list[Piece]
        if split >= size:  # the common case: one page
            target = find(gpa)
            matched = fault_page < 0 or gpa >> PAGE_SHIFT == fault_page
            all_ram = type(target) is RamRegion
            if all_ram or size in _WHOLE:
                pieces = [(0, gpa, size, target)]
            else:
                pieces = [(o, g, n, target) for o, g, n in split_access(gpa, size)]
        else:
            la2 = (la + split) & (MASK[8] if cur.mode == 64 else 0xFFFF_FFFF)
            gpa2, updates2 = walker.walk(ctl, la2, access, ac_flag)
            updates = updates + updates2
            pieces = []
            matched = fault_page < 0
            all_ram = True
            for start, g, n in ((0, gpa, split), (split, gpa2, size - split)):
                matched = matched or g >> PAGE_SHIFT == fault_page
                target = find(g)
                if type(target) is RamRegion:
                    pieces.append((start, g, n, target))
                else:
                    all_ram = False
                    pieces += [(start + o, g2, n2, target) for o, g2, n2 in split_access(g, n)]
        # RAM before the faulting page is fine (ENTER pushes before it reads its display; RAM writes are
        # deferred to the commit), a device is not: that access would have been the fault. A probe (TOUCH)
        # transfers nothing: it may come first wherever it is (masked stores probe their last byte before
        # writing the first; the check at completion still applies).
        if not matched and kind != TOUCH and not all_ram:
            raise EmulationAbort(InstEmulReason.GPA_MISMATCH, f"access at {gpa:#x} before the faulting page")
        if matched:
            cur.fault_page = -1
        if updates:
            apply_updates(updates)
        cur.accesses += 1
        cur.value = 0
        if kind == TOUCH:
            return None
        cur.pieces = pieces
        cur.piece = 0
        cur.data = data
        cur.is_write = _WRITES[kind]
        cur.la = la
        return self._resume_access(cur, None)

    def _resume_access(self, cur: _Inflight, fulfilled: int | None) -> VmExit | None:
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
                ex = MmioExit(gpa, n, is_write, piece_data)
                self._pending = ex
                return ex
            i += 1
        cur.pieces = None
        return None

    def _check_alignment(self, cur: _Inflight, seg: int, off: int, alignment: int) -> None:
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

    def _check_io(self, cur: _Inflight, port: int, size: int) -> None:
        """IOPL and the TSS I/O bitmap; #GP(0) before the instruction touches anything."""
        linear = self._linear
        try:
            check_io(cur.ctl, cur.x.rflags, port, size, lambda la, n: linear.read(cur.ctl, la, n))
        except Unsupported as e:
            raise EmulationAbort(InstEmulReason.NOT_EMULATED, f"I/O permission bitmap: {e}") from None

    def _port_access(self, cur: _Inflight, is_in: bool, port: int, size: int, data: int) -> VmExit | None:
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
        # Userspace answers; its data comes back through `_drive`'s value (pieces stays None).
        ex = InoutExit(port, size, is_in, 0 if is_in else data)
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
