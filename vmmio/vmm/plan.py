"""Per-instruction plans: what an exit at one RIP derives from its instruction, kept for the next exit.

A device driver faults on the same few instructions over and over (a status poll, a register write).
Fetching the bytes through the guest's paging, decoding them, finding the semantics and checking CS
costs more than emulating the access, so the result is kept as a `Plan` keyed by what determines it:
the RIP and the control state (the backend's `Control` object, new whenever CR0/CR3/CR4/EFER, the CPL
or a segment changes; every plan is dropped then). On the next exit at that RIP the plan is used after
two checks that make it exactly what fetching again would give: the code page still translates to the
same frame (`Tlb`, which compares the paging-structure entries), and the instruction's bytes in RAM are
still the ones decoded (self-modifying code, or another vCPU's store). An instruction whose bytes cross
a page is planned afresh on every exit (its second page would need its own checks): it is rare.

Each plan carries the state of one run of its instruction (`Run`, with the `Exec` its semantics stage
on), reused from one exit to the next: a vCPU has at most one instruction in flight. The run also keeps
where its first accesses went (`Access`): when the next run asks for the same access (kind, segment,
offset, size, RFLAGS.AC) its linear address, pages and targets are the same, once the pages are checked
as above, so the segmentation checks, the walk and the region look-up are skipped too. Plans and
accesses are dropped together when a region is added to guest memory.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmmio.abi import InstEmulReason, MmioExit
from vmmio.backends.base import Backend
from vmmio.memory import PAGE_MASK, PAGE_SIZE, GuestMemory, HandlerRegion, RamRegion
from vmmio.vmm.abort import EmulationAbort
from vmmio.vmm.semantics import lookup
from vmmio.vmm.semantics.context import Exec, Form, Steps
from vmmio.vmm.tlb import Groups, Tlb
from vmmio.x86.decode import decode_cached
from vmmio.x86.faults import GP, PFEC_I, PFEC_U, UD, GuestFault
from vmmio.x86.insn import MAX_INSN_LEN, DecodeError, DecodeStatus, Insn, MemOperand
from vmmio.x86.paging import apply_updates
from vmmio.x86.regs import MASK, NO_REG, RIP_REG, Gpr, Seg
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import Control

PLAN_LIMIT = 4096  # plans per vCPU; cleared whole when full (the GC pause bound, as for decode caches)
_CS, _SS = int(Seg.CS), int(Seg.SS)


PLANNED_ACCESSES = 4  # accesses remembered per run: what one instruction (not a REP run) makes

# A piece of one access: (byte offset within the access, gpa, size, RAM region / handler / None).
Piece = tuple[int, int, int, RamRegion | HandlerRegion | None]


@dataclass(slots=True, eq=False)
class Access:
    """Where a memory access of a run went, for the next run to reuse (see the module docstring)."""

    kind: int  # request kind, with NO_AC
    seg: int
    off: int
    size: int
    ac: int  # RFLAGS.AC when it was made
    la: int
    pages: tuple[int, ...]  # guest-physical page numbers of its bytes (one, or two across a page)
    pieces: list[Piece]
    all_ram: bool
    groups: Groups  # the page-table entries its translations depend on
    request: MmioExit | None = None  # the last exit it made, when it was one request to userspace
    user: bool = False  # it is one request to userspace: one piece, no RAM, no in-kernel handler
    fast: Any = None  # (run, what the native exit path learns from it with that run's plan): vmm.fast


class Run:
    """The instruction of a plan between its fault and its completion: the vCPU's in-flight state."""

    __slots__ = (
        "accesses",
        "consistent",
        "ctl",
        "data",
        "deferred",
        "direct",
        "direct_data",
        "direct_ea",
        "direct_pending",
        "direct_reg",
        "direct_size",
        "done",
        "fast_handle",
        "fault_page",
        "fault_port",
        "form",
        "gen",
        "insn",
        "is_write",
        "iterations",
        "la",
        "loaded",
        "memos",
        "mode",
        "piece",
        "pieces",
        "plan",
        "rep",
        "rip",
        "value",
        "x",
    )

    def __init__(self, plan: Plan, form: Form) -> None:
        self.plan = plan
        self.insn = plan.insn
        self.form = form
        self.rep = form.string and bool(plan.insn.rep)  # a REP string instruction: one call per iteration
        self.ctl = plan.ctl
        self.mode = plan.mode
        self.rip = plan.rip  # RIP of the instruction
        self.x = plan.x
        self.gen: Steps = form.fn(self.x, self.insn)  # replaced by `start`
        self.fault_page = -1  # page of the faulting GPA not yet matched by an access, or -1
        self.fault_port = -1  # port of an I/O exit not yet matched, or -1
        self.iterations = 0  # REP iterations completed in the kernel since the last exit
        self.accesses = 0  # accesses performed so far (for the faulting-GPA check)
        self.memos: list[Access] = []  # where this plan's first accesses went, by their number
        self.consistent = False  # userspace asked to stop at the next consistent state
        # The access in progress: its pieces, the next piece, the value assembled so far, write data.
        self.pieces: list[Piece] | None = None
        self.piece = 0
        self.value = 0
        self.data = 0
        self.is_write = False
        self.la = 0  # linear address of the access in progress
        # RAM writes of the instruction (or REP iteration) in flight: (region, offset, bytes, linear
        # address). They land when it commits, so a fault or a Discard leaves RAM as it was.
        self.deferred: list[tuple[RamRegion, int, bytes, int]] | None = None
        # Registers as the last completed REP iteration left them (GPRs, RFLAGS, dirty mask), not yet
        # written to the backend: they are written once, when the vCPU next leaves the kernel.
        self.done: tuple[list[int], int, int] | None = None
        # A `Direct` form with a memory operand: its register, access size and (a store of the immediate)
        # data, and whether its one request is the one pending (the semantics were not started).
        insn = self.insn
        direct = form.direct if insn.mem is not None and not insn.mem.vsib else None
        self.direct = direct
        self.direct_reg = -1 if direct is None else (Gpr.RAX if direct.rax else insn.reg)
        self.direct_size = insn.width if direct is None or not direct.source else direct.source
        self.direct_data = insn.imm & MASK[insn.width] if direct is not None and direct.imm else -1
        self.direct_pending = False
        self.direct_ea = _ea_of(insn.mem, plan.next_rip) if direct is not None else _no_ea
        self.fast_handle = -1  # its plan as the native exit path learned it (vmmio.vmm.fast), or -1
        self.loaded = True  # `x` holds the registers of the run (False: a native exit, still in the backend)

    def start(self, gprs: list[int], rflags: int, fault_page: int, fault_port: int) -> None:
        """Begin a run from these registers (a private copy: the semantics stage on it)."""
        x = self.x
        x.restart(gprs, rflags, self.plan.next_rip)
        self.gen = self.form.fn(x, self.insn)
        self.fault_page = fault_page
        self.fault_port = fault_port
        self.iterations = 0
        self.accesses = 0
        self.consistent = False
        self.pieces = None
        self.deferred = None
        self.done = None
        self.direct_pending = False
        self.loaded = True


@dataclass(slots=True, eq=False)
class Plan:
    """The instruction at `rip` under control state `ctl`, ready to run."""

    ctl: Control
    rip: int
    la: int  # linear address of its first byte
    access: int  # the fetch's page-walk access bits
    gpa: int  # where its first byte is
    groups: Groups  # the page-table entries that translation depends on
    mem: mmap.mmap  # the RAM holding its bytes...
    off: int  # ...from this offset...
    end: int  # ...to this one (exclusive), where they must still equal `insn.raw`
    insn: Insn
    form: Form | None  # its semantics; None when vmmio does not emulate it
    mode: int  # code size: 16, 32 or 64
    next_rip: int
    x: Exec  # the staged state its runs reuse (one instruction is in flight per vCPU at a time)
    run: Run | None = None  # its run; None when vmmio does not emulate it


def _no_ea(gprs: list[int]) -> int:
    return -1


def _ea_of(mem: MemOperand | None, next_rip: int) -> Callable[[list[int]], int]:
    """`mem.effective_address(gprs, next_rip)` as a function of the registers, specialised for the
    operand's shape (most device accesses are [base + disp] or a constant address)."""
    assert mem is not None
    mask = MASK[mem.addr_size]
    base, index, scale, disp = mem.base, mem.index, mem.scale, mem.disp
    if index == NO_REG:
        if base == RIP_REG or base < 0:
            const = ((next_rip if base == RIP_REG else 0) + disp) & mask
            return lambda gprs: const
        return lambda gprs: (gprs[base] + disp) & mask
    if 0 <= base != RIP_REG:
        return lambda gprs: (gprs[base] + gprs[index] * scale + disp) & mask
    return lambda gprs: mem.effective_address(gprs, next_rip)


class Plans:
    """The plans of one vCPU (see the module docstring)."""

    def __init__(self, memory: GuestMemory, tlb: Tlb, backend: Backend) -> None:
        self._memory = memory
        self._tlb = tlb
        self._backend = backend  # what CPUID reports and where vector state comes from, for Exec
        self._ctl: Control | None = None
        self._generation = -1  # of guest memory's regions
        self._plans: dict[int, Plan] = {}
        # (bytes, mode) -> (instruction, semantics): survives control changes, as decoding does not
        # depend on them.
        self._decoded: dict[tuple[bytes, int], tuple[Insn, Form | None]] = {}
        self.built = 0  # plans built (misses), for tests and benchmarks

    def get(self, ctl: Control, rip: int, rflags: int) -> Plan:
        """The plan of the instruction at CS:RIP. Raises what fetching it raises: GuestFault (#GP, #PF,
        #UD for bytes that decode to nothing), EmulationAbort (FETCH_FAILED), TranslationError."""
        if ctl is not self._ctl or self._memory.generation != self._generation:
            self._plans.clear()
            self._ctl = ctl
            self._generation = self._memory.generation
        plan = self._plans.get(rip)
        if plan is not None and plan.mem[plan.off : plan.end] == plan.insn.raw:
            for view, get, expected in plan.groups:  # the code page's translation (`holds`, inline)
                if get(view) != expected:
                    break
            else:
                return plan
        return self._build(ctl, rip, rflags)

    def forget(self) -> None:
        """Drop every plan (the vCPU's state was loaded from outside)."""
        self._plans.clear()
        self._ctl = None

    def _build(self, ctl: Control, rip: int, rflags: int) -> Plan:
        mode = ctl.code_size
        access = PFEC_I | (PFEC_U if ctl.cpl == 3 else 0)
        la = linear_address(ctl, mode, _CS, rip, 1, PFEC_I, rflags)
        gpa, updates, groups = self._tlb.walk(ctl, la, access, False)
        if updates:
            apply_updates(updates)
        first = min(MAX_INSN_LEN, PAGE_SIZE - (la & PAGE_MASK))
        region = self._memory.find(gpa)
        if type(region) is not RamRegion:
            raise EmulationAbort(InstEmulReason.FETCH_FAILED, f"code at {gpa:#x} is not RAM")
        off = gpa - region.gpa
        code = region.mem[off : off + first]
        if first < MAX_INSN_LEN:
            decoded = decode_cached(code, mode)
            if type(decoded) is DecodeError and decoded.status is DecodeStatus.TRUNCATED:
                code += self._second_page(ctl, la, first, access, mode, code)
        insn, form = self._decode(code, mode)
        if mode != 64:
            linear_address(ctl, mode, _CS, rip, insn.length, PFEC_I, rflags)  # CS limit
        stack = 8 if mode == 64 else (4 if ctl.segs[_SS].db else 2)
        next_rip = (rip + insn.length) & (MASK[8] if mode == 64 else 0xFFFF_FFFF)
        backend = self._backend
        x = Exec(insn, [], 0, next_rip, stack, ctl, backend.cpuid, backend.get_vector)
        end = off + insn.length
        plan = Plan(ctl, rip, la, access, gpa, groups, region.mem, off, end, insn, form, mode, next_rip, x)
        if form is not None:
            plan.run = Run(plan, form)
        self.built += 1
        if insn.length <= first:  # within one page: the checks in `get` cover it
            plans = self._plans
            if len(plans) >= PLAN_LIMIT:
                plans.clear()
            plans[rip] = plan
        return plan

    def _second_page(self, ctl: Control, la: int, first: int, access: int, mode: int, code: bytes) -> bytes:
        """The bytes of an instruction that runs on into the next page."""
        la2 = (la + first) & (MASK[8] if mode == 64 else 0xFFFF_FFFF)
        gpa2, updates, _ = self._tlb.walk(ctl, la2, access, False)
        apply_updates(updates)
        region2 = self._memory.ram_at(gpa2, MAX_INSN_LEN - first)
        if region2 is None:
            raise EmulationAbort(InstEmulReason.FETCH_FAILED, f"code at {gpa2:#x} is not RAM", code)
        off2 = gpa2 - region2.gpa
        return bytes(region2.view[off2 : off2 + MAX_INSN_LEN - first])

    def _decode(self, code: bytes, mode: int) -> tuple[Insn, Form | None]:
        """Decode `code` and find its semantics; remember both for the next plan of these bytes."""
        decoded = self._decoded.get((code, mode))
        if decoded is not None:
            return decoded
        result = decode_cached(code, mode)
        if type(result) is DecodeError:
            status = result.status
            if status is DecodeStatus.TOO_LONG:
                raise GuestFault(GP, 0)
            if status is DecodeStatus.TRUNCATED:
                raise EmulationAbort(InstEmulReason.FETCH_FAILED, "runs past fetchable code", code)
            raise GuestFault(UD)
        assert type(result) is Insn
        decoded = (result, lookup(result))
        if len(self._decoded) >= PLAN_LIMIT:
            self._decoded.clear()
        self._decoded[code, mode] = decoded
        return decoded
