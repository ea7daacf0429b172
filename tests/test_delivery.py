"""x86.delivery as a pure function: frames, targets and escalation, without an execution backend.

The backends' own tests run the same code through real guests (tests/test_backend_unicorn.py); these
pin the parts no guest there reaches: real-mode delivery and the escalation table.
"""

from __future__ import annotations

import struct

import pytest

from vmmio.memory import GuestMemory
from vmmio.x86.delivery import Delivered, LinearMemory, Shutdown, deliver_event
from vmmio.x86.faults import BP, DE, GP, NP, PF, TS, UD, double_fault
from vmmio.x86.paging import Walker
from vmmio.x86.regs import AC, IF, TF
from vmmio.x86.state import Control, Regs, Segment, long_mode_control


def memory() -> tuple[GuestMemory, LinearMemory]:
    mem = GuestMemory()
    mem.add_ram(0, 1 << 20)
    return mem, LinearMemory(Walker(mem), mem)


def real_mode(cs: int = 0x1000, ss: int = 0x2000, sp: int = 0x100) -> tuple[Regs, Control]:
    ctl = Control()  # CR0.PE clear: real mode
    ctl.segs[1] = Segment(selector=cs, base=cs << 4, type=11)
    ctl.segs[2] = Segment(selector=ss, base=ss << 4)
    ctl.idtr = (0, 0x3FF)
    regs = Regs(rip=0x1234, rflags=0x2 | IF | TF | AC | 0x1)
    regs.rsp = 0xABCD_0000 | sp
    return regs, ctl


def test_real_mode_delivery_through_the_ivt() -> None:
    mem, lin = memory()
    mem.write(13 * 4, struct.pack("<HH", 0x0040, 0x0700))  # vector 13 -> 0700:0040
    regs, ctl = real_mode()
    out = deliver_event(GP, 0, regs, ctl, lin)
    assert isinstance(out, Delivered)
    assert (out.cs.selector, out.cs.base, out.regs.rip) == (0x700, 0x7000, 0x40)
    assert out.regs.rsp == 0xABCD_0000 | 0xFA  # SP - 6, upper bits kept
    assert out.regs.rflags == 0x2 | 0x1  # IF, TF and AC cleared, the rest kept
    # FLAGS, CS, IP pushed in that order (IP lowest); no error code in real mode.
    frame = struct.unpack("<HHH", mem.read((0x2000 << 4) + 0xFA, 6))
    assert frame == (0x1234, 0x1000, (0x2 | IF | TF | AC | 0x1) & 0xFFFF)


def test_real_mode_vector_past_the_ivt_limit_escalates() -> None:
    _, lin = memory()
    regs, ctl = real_mode()
    ctl.idtr = (0, 4 * 8 - 1)  # vectors 0-7 only: #GP, then #DF, are out too
    out = deliver_event(UD + 6, None, regs, ctl, lin)  # vector 12
    assert isinstance(out, Shutdown) and not out.unsupported and "triple fault" in out.detail


@pytest.mark.parametrize(
    ("first", "second", "df"),
    [
        (DE, GP, True),
        (GP, NP, True),
        (TS, GP, True),
        (PF, PF, True),
        (PF, GP, True),
        (GP, PF, False),
        (BP, GP, False),
        (UD, GP, False),
        (DE, UD, False),
    ],
)
def test_double_fault_classes(first: int, second: int, df: bool) -> None:
    assert double_fault(first, second) is df


def test_64_bit_delivery_with_no_idt_entry_is_a_triple_fault() -> None:
    _, lin = memory()
    ctl = long_mode_control(0x1000, idtr=(0x8000, 0))
    ctl.cr0 &= ~(1 << 31)  # paging off keeps the walk trivial; the IDT limit is what fails
    out = deliver_event(GP, 0, Regs(rip=0x5000), ctl, lin)
    assert isinstance(out, Shutdown) and "while delivering #DF" in out.detail
