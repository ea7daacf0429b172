"""The cheap exit path gives what the general one gives.

A `Direct` form (MOV and its zero/sign-extending loads to or from memory) that faults again as its last
run did is performed from its planned access without running its semantics. Each row runs the same
sequence of faults on two vCPUs, one with the direct path and one without (`vcpu.direct = False`), and
compares every exit, the registers, RAM and the injected exceptions after each step. The sequences
repeat the instruction (the direct path) and change what a plan depends on in between: the registers of
the address, RFLAGS.AC, the page tables, the faulting GPA, the target (RAM, an in-kernel device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from harness import CODE, DATA, KDEV, MMIO, Guest

from vmmio.abi import Discard, FulfillMmio, MmioExit, VmEntry, VmExit
from vmmio.machine import Machine
from vmmio.x86.pagetables import RW, P
from vmmio.x86.regs import AC, RFLAGS_FIXED1, Gpr

RAX, RBX, RCX, RSP = Gpr.RAX, Gpr.RBX, Gpr.RCX, Gpr.RSP
VA = 0x8_0000_0000  # a 4 KiB-mapped window above the identity map

Step = Callable[[Guest], None]


class Kdev:
    def read(self, offset: int, size: int) -> int:
        return 0xA0A0_A0A0_A0A0_A0A0 + offset

    def write(self, offset: int, size: int, value: int) -> None:
        pass


def _answer(ex: VmExit, n: int) -> VmEntry:
    assert isinstance(ex, MmioExit), ex
    if ex.is_write:
        return ex.fulfill()
    return ex.fulfill((0x80F1_E2D3_C4B5_A697 * (n + 3)) & ((1 << (8 * ex.size)) - 1))


def run(code: str, gprs: dict[int, int], steps: list[tuple[int, Step | None]], direct: bool) -> list[object]:
    """For each step: apply its change, fault at its GPA, answer every exit; what the guest saw."""
    g = Guest(bytes.fromhex(code), gprs)
    g.vm.add_mmio_device(KDEV, 0x1000, Kdev())
    g.pt.map(VA, MMIO, 0x1000, P | RW)
    g.pt.map(VA + 0x1000, DATA, 0x1000, P | RW)
    g.write_tables()
    g.vcpu.direct = direct
    seen: list[object] = []
    for n, (gpa, change) in enumerate(steps):
        regs = g.regs
        regs.rip = CODE
        if change is not None:
            change(g)
        g.fault(gpa)
        ex = g.vcpu.run()
        exits = [ex]
        while isinstance(ex, MmioExit):
            ex = g.vcpu.run(_answer(ex, n))
            exits.append(ex)
        r = g.regs
        seen.append((exits, (*r.gprs, r.rip, r.rflags), g.vm.memory.read(DATA, 16), list(g.backend.injected)))
    return seen


def set_reg(reg: int, value: int) -> Step:
    def change(g: Guest) -> None:
        g.regs.gprs[reg] = value

    return change


def set_rflags(value: int) -> Step:
    def change(g: Guest) -> None:
        g.regs.rflags = value

    return change


def remap(page: int) -> Step:
    """Point the window's first page somewhere else (a page-table write, as a guest would make)."""

    def change(g: Guest) -> None:
        g.pt.map(VA, page, 0x1000, P | RW)
        g.write_tables()

    return change


@dataclass(frozen=True)
class Row:
    name: str
    code: str
    gprs: dict[int, int]
    steps: list[tuple[int, Step | None]]


AGAIN: list[tuple[int, Step | None]] = [(MMIO, None)] * 3

ROWS = [
    Row("mov eax,[rbx]", "8b03", {RBX: MMIO}, AGAIN),
    Row("mov rax,[rbx+8]", "488b4308", {RBX: MMIO, RAX: -1 & (2**64 - 1)}, AGAIN),
    Row("mov ax,[rbx] merges", "668b03", {RBX: MMIO, RAX: 0x1111_2222_3333_4444}, AGAIN),
    Row("mov al,[rbx] merges", "8a03", {RBX: MMIO, RAX: 0x1111_2222_3333_4444}, AGAIN),
    Row("mov ah,[rbx]", "8a23", {RBX: MMIO, RAX: 0x1111_2222_3333_4444}, AGAIN),
    Row("mov spl,[rbx] (REX)", "408a23", {RBX: MMIO, RSP: 0x1111_2222_3333_4444}, AGAIN),
    Row("mov [rbx],ecx", "890b", {RBX: MMIO, RCX: 0xDEAD_BEEF_CAFE_F00D}, AGAIN),
    Row("mov [rbx],bh", "883b", {RBX: MMIO + 0x10}, [(MMIO, None)] * 3),
    Row("mov [rbx+rcx*4],eax", "89048b", {RBX: MMIO, RCX: 2, RAX: 7}, AGAIN),
    Row("mov dword [rbx],imm", "c703ffffff7f", {RBX: MMIO}, AGAIN),
    Row("mov qword [rbx],imm (sign-extended)", "48c703feffffff", {RBX: MMIO}, AGAIN),
    Row("mov byte [rbx],imm", "c60380", {RBX: MMIO}, AGAIN),
    Row("mov eax,[rip+disp]", "8b05" + (MMIO - CODE - 6).to_bytes(4, "little").hex(), {}, AGAIN),
    Row("mov eax,[moffs]", "a1" + MMIO.to_bytes(8, "little").hex(), {}, AGAIN),
    Row("mov [moffs],ax", "66a3" + MMIO.to_bytes(8, "little").hex(), {RAX: 0xBEEF}, AGAIN),
    Row("movzx eax,byte [rbx]", "0fb603", {RBX: MMIO, RAX: -1 & (2**64 - 1)}, AGAIN),
    Row("movzx eax,word [rbx]", "0fb703", {RBX: MMIO}, AGAIN),
    Row("movsx rax,byte [rbx]", "480fbe03", {RBX: MMIO}, AGAIN),
    Row("movsx ax,word [rbx]", "660fbf03", {RBX: MMIO, RAX: 0x5555_5555_5555_5555}, AGAIN),
    Row("movsxd rax,[rbx]", "486303", {RBX: MMIO}, AGAIN),
    Row(
        "the address register moves",
        "8b03",
        {RBX: MMIO},
        [
            (MMIO, None),
            (MMIO, None),
            (MMIO + 8, set_reg(RBX, MMIO + 8)),
            (MMIO + 8, None),
            (MMIO, set_reg(RBX, MMIO)),
        ],
    ),
    Row(
        "the address moves to RAM, then to an in-kernel device",
        "8b03",
        {RBX: MMIO},
        [
            (MMIO, None),
            (MMIO, None),
            (DATA, set_reg(RBX, DATA)),
            (KDEV, set_reg(RBX, KDEV)),
            (MMIO, set_reg(RBX, MMIO)),
        ],
    ),
    Row(
        "RFLAGS.AC set (CPL 0: no #AC)",
        "8b4301",
        {RBX: MMIO},
        [(MMIO, None), (MMIO, None), (MMIO, set_rflags(RFLAGS_FIXED1 | AC)), (MMIO, None)],
    ),
    Row(
        "the page tables change under the plan",
        "8b03",
        {RBX: VA},
        [
            (MMIO, None),
            (MMIO, None),
            (DATA, remap(DATA)),
            (MMIO + 0x1000, remap(MMIO + 0x1000)),
            (MMIO + 0x1000, None),
        ],
    ),
    Row(
        "the fault is somewhere else: GPA mismatch",
        "8b03",
        {RBX: MMIO},
        [(MMIO, None), (MMIO, None), (MMIO + 0x2000, None), (MMIO, None)],
    ),
    Row("a store crossing a page is split", "8903", {RBX: MMIO + 0xFFE, RAX: 0x11223344}, [(MMIO, None)] * 3),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_direct_and_general_paths_agree(row: Row) -> None:
    assert run(row.code, row.gprs, row.steps, direct=True) == run(row.code, row.gprs, row.steps, direct=False)


@pytest.mark.parametrize(
    ("code", "gprs"),
    [("8b03", {RBX: MMIO}), ("890b", {RBX: MMIO}), ("0fbf03", {RBX: MMIO}), ("c60380", {RBX: MMIO})],
)
def test_a_repeated_access_goes_the_direct_way(code: str, gprs: dict[int, int]) -> None:
    g = Guest(bytes.fromhex(code), gprs)
    taken = []
    for n in range(4):
        g.regs.rip = CODE
        g.fault(MMIO)
        ex = g.vcpu.run()
        cur = g.vcpu._cur  # the in-flight run: a direct one made its request without the semantics
        taken.append(cur is not None and cur.direct_pending)
        g.vcpu.run(_answer(ex, n))
    assert taken == [False, True, True, True]  # the first run plans the access


def test_discard_and_exit_consistent_on_a_direct_request() -> None:
    g = Guest(bytes.fromhex("8b03"), {RBX: MMIO, RAX: 5})
    for _ in range(2):
        g.regs.rip = CODE
        g.fault(MMIO)
        ex = g.vcpu.run()
        g.vcpu.run(_answer(ex, 0))
    g.regs.rip = CODE
    g.regs.gprs[RAX] = 5
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert g.vcpu._cur is not None and g.vcpu._cur.direct_pending
    g.vcpu.run(Discard())
    assert (g.regs.rip, g.regs.gprs[RAX], g.vcpu.pending) == (CODE, 5, None)
    g.fault(MMIO)
    ex = g.vcpu.run()
    assert g.vcpu._cur is not None and g.vcpu._cur.direct_pending
    suspended = g.vcpu.run(FulfillMmio(MMIO, 4, False, 0x77, exit_consistent=True))
    assert type(suspended).__name__ == "SuspendedExit"
    assert (g.regs.rip, g.regs.gprs[RAX]) == (CODE + 2, 0x77)


def test_machine_answers_a_repeated_request_with_the_same_answer() -> None:
    m = Machine()
    ex = MmioExit(0xD001_0000, 4, False, 0)
    first = m.service(ex)
    assert m.service(ex) is first  # the device read the same value: the same immutable answer
    m.testdev.data[0] = 0x42
    second = m.service(ex)
    assert second == ex.fulfill(0x42) and second is not first
    write = MmioExit(0xD001_0004, 2, True, 0xBEEF)
    assert m.service(write) is m.service(write)
    assert m.testdev.data[4:6] == b"\xef\xbe"
    assert len(m.testdev.trace) == 5  # every request still reached the device
