"""Batched REP: a run of string elements between RAM and one device as one request.

With `Capability.REP_BATCH` enabled, a REP MOVS/STOS/LODS/INS/OUTS whose iteration moves an element
between RAM (or rAX) and one userspace device presents the next run of elements as one
`MmioBatchExit`/`InoutBatchExit` instead of one exit per element. A run stops at the first page
boundary on either side, at RCX, and where the offset would wrap at the address size, so every element
passes the same checks as the first and the last (segment type and limit, canonical address, alignment,
one page walk per side, the I/O permission of one port): the run is planned only when those pass for
both ends, and otherwise the element goes the one-by-one way, which raises the fault exactly where the
CPU would. REPE/REPNE forms (CMPS, SCAS) are not batched: where they stop depends on the data, and
reading a device beyond that point would be a side effect the guest never asked for.

Completing k elements (userspace may complete fewer than asked) does what k iterations do: the elements
read land in RAM (or the last one in rAX), rSI/rDI move by k elements, RCX counts k down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmmio.abi import Device, InoutBatchExit, MmioBatchExit, reverse_elements
from vmmio.memory import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, GuestMemory, HandlerRegion, RamRegion, RangeMap
from vmmio.vmm.plan import Run
from vmmio.vmm.semantics.strings import source_segment
from vmmio.vmm.tlb import Tlb
from vmmio.x86.faults import PFEC_U, PFEC_W, GuestFault
from vmmio.x86.paging import TranslationError, Updates, apply_updates
from vmmio.x86.regs import AC, DF, MASK, Gpr, Seg
from vmmio.x86.segmentation import linear_address

_ES = int(Seg.ES)


@dataclass(slots=True)
class Batch:
    """A batched run waiting for its fulfillment, and what completing its elements changes."""

    request: MmioBatchExit | InoutBatchExit
    size: int
    down: bool  # RFLAGS.DF: elements at descending addresses
    steps: tuple[int, ...]  # the pointer registers that move (rSI, rDI)
    into: RamRegion | None  # RAM the elements read land in (MOVS from a device, INS), else None
    into_off: int  # the first element's offset in `into`
    into_la: int  # and its linear address
    to_rax: bool  # LODS: the last element read lands in rAX


@dataclass(slots=True)
class _End:
    """One memory end of the run: its first element, translated."""

    la: int
    gpa: int
    target: RamRegion | HandlerRegion | None  # None: userspace
    updates: Updates

    @property
    def ram(self) -> bool:
        return type(self.target) is RamRegion


class Batcher:
    """Plans and completes batched runs for one vCPU.

    `io_permitted(cur, port, size)` is the vCPU's IOPL/TSS-bitmap check without the fault, and
    `ram_written(la, gpa, size)` its backend's notice that the kernel wrote guest RAM.
    """

    def __init__(
        self,
        tlb: Tlb,
        memory: GuestMemory,
        ports: RangeMap[Device],
        io_permitted: Callable[[Run, int, int], bool],
        ram_written: Callable[[int, int, int], None],
    ) -> None:
        self._tlb = tlb
        self._memory = memory
        self._ports = ports
        self._io_permitted = io_permitted
        self._ram_written = ram_written

    def plan(self, cur: Run) -> Batch | None:
        """The next run of `cur`'s REP string instruction as one request, or None when it must go element
        by element (fewer than two elements fit, an end is not RAM or one userspace device, a check fails).
        Applies the page walks' A/D updates when it plans one: the accesses are then under way."""
        shape = cur.form.elements
        assert shape is not None
        insn, x = cur.insn, cur.x
        size = insn.width
        mask = MASK[insn.addr_size]
        down = bool(x.rflags & DF)
        n = min(x.gprs[Gpr.RCX] & mask, PAGE_SIZE // size)
        plan: list[tuple[int, int, int]] = []  # (segment, offset of the first element, access bits)
        if shape.source:
            plan.append((source_segment(insn), x.gprs[Gpr.RSI] & mask, 0))
        if shape.destination:
            plan.append((_ES, x.gprs[Gpr.RDI] & mask, PFEC_W))
        ends: list[_End] = []
        try:
            for seg, off, access in plan:
                n = min(n, off // size + 1 if down else (mask - off + 1) // size)  # before the offset wraps
                end = self._end(cur, seg, off, access)
                page_off = end.la & PAGE_MASK
                if page_off + size > PAGE_SIZE:
                    return None  # the first element crosses a page: one by one
                n = min(n, page_off // size + 1 if down else (PAGE_SIZE - page_off) // size)
                ends.append(end)
            if n < 2:
                return None
            last = -(n - 1) * size if down else (n - 1) * size
            for seg, off, access in plan:  # the segment checks of the last element
                linear_address(cur.ctl, cur.mode, seg, (off + last) & mask, size, access, x.rflags)
        except (GuestFault, TranslationError):
            return None  # the one-by-one way raises it where the CPU does
        batch = self._port_batch(cur, ends[0], n) if shape.port else self._mmio_batch(cur, ends, n)
        if batch is not None:
            for end in ends:
                apply_updates(end.updates)
            cur.fault_page = cur.fault_port = -1
            cur.accesses += 1
        return batch

    def _end(self, cur: Run, seg: int, off: int, access: int) -> _End:
        ctl, x = cur.ctl, cur.x
        la = linear_address(ctl, cur.mode, seg, off, cur.insn.width, access, x.rflags)
        if ctl.cpl == 3:
            access |= PFEC_U
        gpa, updates, _ = self._tlb.walk(ctl, la, access, bool(x.rflags & AC))
        return _End(la, gpa, self._memory.find(gpa), updates)

    def _batch(self, cur: Run, request: MmioBatchExit | InoutBatchExit, into: _End | None) -> Batch:
        shape = cur.form.elements
        assert shape is not None
        steps = tuple(r for r, used in ((Gpr.RSI, shape.source), (Gpr.RDI, shape.destination)) if used)
        region, off, la = None, 0, 0
        if into is not None:
            assert type(into.target) is RamRegion
            region, off, la = into.target, into.gpa - into.target.gpa, into.la
        to_rax = shape.rax and shape.source  # LODS loads rAX (STOS stores it: nothing comes back)
        return Batch(request, request.size, bool(cur.x.rflags & DF), steps, region, off, la, to_rax)

    def _port_batch(self, cur: Run, mem: _End, n: int) -> Batch | None:
        """INS into RAM, OUTS from RAM, with a port userspace serves."""
        x = cur.x
        size = cur.insn.width
        port = x.gprs[Gpr.RDX] & 0xFFFF
        if not mem.ram or self._ports.lookup(port) is not None or cur.fault_port not in (-1, port):
            return None
        if not self._io_permitted(cur, port, size):
            return None
        is_in = cur.form.elements is not None and cur.form.elements.destination
        data = b"" if is_in else _ram_elements(mem, n, size, bool(x.rflags & DF))
        return self._batch(cur, InoutBatchExit(port, size, n, is_in, data), mem if is_in else None)

    def _mmio_batch(self, cur: Run, ends: list[_End], n: int) -> Batch | None:
        """MOVS between RAM and a device (either way), STOS to a device, LODS from one."""
        shape = cur.form.elements
        assert shape is not None
        x = cur.x
        size = cur.insn.width
        down = bool(x.rflags & DF)
        src = ends[0] if shape.source else None
        dst = ends[-1] if shape.destination else None
        if dst is not None and dst.target is None and (src is None or src.ram):
            device, into = dst, None
            if src is None:  # STOS
                data = (x.gprs[Gpr.RAX] & MASK[size]).to_bytes(size, "little") * n
            else:
                data = _ram_elements(src, n, size, down)
        elif src is not None and src.target is None and (dst is None or dst.ram):
            device, into, data = src, dst, b""
        else:
            return None  # a handler, or a device at both ends: one by one
        if cur.fault_page not in (-1, device.gpa >> PAGE_SHIFT):
            return None
        request = MmioBatchExit(device.gpa, size, n, device is dst, down, data)
        return self._batch(cur, request, into)

    def complete(self, cur: Run, batch: Batch, count: int, data: bytes) -> None:
        """What `count` iterations do: elements read land in RAM or rAX, the pointers move, RCX counts."""
        x = cur.x
        size = batch.size
        region = batch.into
        if region is not None:
            off = batch.into_off
            if batch.down:
                low = off - (count - 1) * size
                region.view[low : off + size] = reverse_elements(data, size)
                self._ram_written(batch.into_la - (count - 1) * size, region.gpa + low, count * size)
            else:
                region.view[off : off + count * size] = data
                self._ram_written(batch.into_la, region.gpa + off, count * size)
        if batch.to_rax:
            x.set(Gpr.RAX, size, int.from_bytes(data[(count - 1) * size :], "little"))
        asz = cur.insn.addr_size
        delta = -count * size if batch.down else count * size
        for reg in batch.steps:
            x.set(reg, asz, x.gprs[reg] + delta)
        x.set(Gpr.RCX, asz, x.gprs[Gpr.RCX] - count)


def _ram_elements(end: _End, n: int, size: int, down: bool) -> bytes:
    """The n elements of RAM from `end`, in access order."""
    region = end.target
    assert type(region) is RamRegion
    off = end.gpa - region.gpa
    if not down:
        return bytes(region.view[off : off + n * size])
    return reverse_elements(bytes(region.view[off - (n - 1) * size : off + size]), size)
