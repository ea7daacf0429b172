"""What an instruction's semantics sees: staged registers and the requests it may yield.

Semantics are generator functions. Each memory or port access is a request tuple yielded to the
Vcpu, which performs it (RAM, in-kernel handler, or an exit to userspace) and sends back the value
read (0 for writes). Registers are staged here and committed by the Vcpu only when the instruction
completes, so a fault or a discard leaves the guest's registers untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from vmmio.x86.cpuid import ALL_FEATURES, CpuidTable
from vmmio.x86.faults import UD, GuestFault
from vmmio.x86.insn import Insn
from vmmio.x86.regs import MASK
from vmmio.x86.state import Control, VectorState

# Request kinds (first element of a request tuple). Memory kinds come first (the Vcpu tests `<= SYS_WRITE`).
READ = 0  # (READ, seg, offset, size, 0)
WRITE = 1  # (WRITE, seg, offset, size, value)
RMW_READ = 2  # (RMW_READ, seg, offset, size, 0): a read checked for write permission
TOUCH = 3  # (TOUCH, seg, offset, size, w): translated and checked (as a write if w is not 0), nothing
# transferred (masked stores probe before they write; ENTER probes its final stack pointer, w = PFEC_W)
SYS_READ = 4  # (SYS_READ, 0, linear, size, 0): implicit supervisor read (descriptor tables, TSS)
SYS_WRITE = 5  # (SYS_WRITE, 0, linear, size, value): implicit supervisor write (accessed/busy bits)
PORT_IN = 6  # (PORT_IN, port, 0, size, 0)
PORT_OUT = 7  # (PORT_OUT, port, 0, size, value)
PORT_CHECK = 8  # (PORT_CHECK, port, 0, size, 0): I/O permission (IOPL, TSS bitmap), before any access
ALIGN_CHECK = 9  # (ALIGN_CHECK, seg, offset, alignment, 0): #GP(0) unless the linear address is aligned
# Flag on READ/WRITE/TOUCH: no alignment check (#AC) for this access. The CPU checks alignment for
# operands of up to 8 bytes only: not for 16/32/64-byte vector operands nor the pieces of masked ones.
NO_AC = 16

Request = tuple[int, int, int, int, int]
Steps = Generator[Request, int, None]
Operand = Generator[Request, int, int]  # a helper that may yield a request and returns a value


class Exec:
    """Staged state of one instruction (or one REP iteration).

    Beyond the GPRs, RIP and RFLAGS, an instruction may read the control state (`ctl`, as it was when
    the instruction started), change it (`control()`, a staged copy), read and change the vector
    registers (`vector()`, fetched on first use) and ask what the CPU has (`cpuid`). All of it is
    committed together when the instruction completes, and dropped if it faults or is discarded.
    """

    __slots__ = (
        "_vector_source",
        "addr_size",
        "cpuid",
        "ctl",
        "dirty",
        "faulted_vec",
        "gprs",
        "insn",
        "mode",
        "new_ctl",
        "next_rip",
        "rflags",
        "stack_size",
        "vec",
        "vec_dirty",
    )

    def __init__(
        self,
        insn: Insn,
        gprs: list[int],
        rflags: int,
        next_rip: int,
        stack_size: int,
        ctl: Control | None = None,
        cpuid: CpuidTable = ALL_FEATURES,
        vector_source: Callable[[], VectorState] = VectorState,
    ) -> None:
        self.insn = insn
        self.gprs = gprs
        self.rflags = rflags
        self.next_rip = next_rip
        self.addr_size = insn.addr_size
        self.stack_size = stack_size
        self.dirty = 0  # bit n: GPR n changed; bit 17: RFLAGS changed
        self.ctl = ctl if ctl is not None else Control()
        self.mode = insn.mode
        self.cpuid = cpuid
        self._vector_source = vector_source
        self.vec: VectorState | None = None
        self.vec_dirty = False
        self.new_ctl: Control | None = None
        # Vector state the instruction leaves even if it faults from now on: an MMX instruction sets the
        # x87 TOP to 0 before its memory access (the host CPU does, on #PF, #GP and #AC alike).
        self.faulted_vec: VectorState | None = None

    def restart(self, gprs: list[int], rflags: int, next_rip: int) -> None:
        """Stage a new run of the same instruction from these registers (a plan reuses its Exec)."""
        self.gprs = gprs
        self.rflags = rflags
        self.next_rip = next_rip
        self.dirty = 0
        self.vec = None
        self.vec_dirty = False
        self.new_ctl = None
        self.faulted_vec = None

    def require(self, feature: str) -> None:
        """#UD unless the guest's CPUID reports `feature`."""
        if not self.cpuid.has(feature):
            raise GuestFault(UD)

    def vector(self) -> VectorState:
        """The vector registers, fetched on first use; mutate and call `vector_changed()`."""
        vec = self.vec
        if vec is None:
            vec = self.vec = self._vector_source()
        return vec

    def vector_changed(self) -> None:
        self.vec_dirty = True

    def control(self) -> Control:
        """A staged copy of the control state to change; committed with the instruction."""
        new = self.new_ctl
        if new is None:
            new = self.new_ctl = self.ctl.copy()
        return new

    def get(self, n: int, width: int) -> int:
        """Register `n` at `width` bytes; byte registers 4-7 are AH..BH when there is no REX."""
        if width == 1 and 4 <= n < 8 and not self.insn.rex:
            return (self.gprs[n - 4] >> 8) & 0xFF
        return self.gprs[n] & MASK[width]

    def set(self, n: int, width: int, value: int) -> None:
        """Write as the CPU does: 32-bit writes zero-extend, 8- and 16-bit writes merge."""
        gprs = self.gprs
        if width >= 4:
            gprs[n] = value & MASK[width]
        elif width == 2:
            gprs[n] = (gprs[n] & ~0xFFFF) | (value & 0xFFFF)
        elif 4 <= n < 8 and not self.insn.rex:
            n -= 4
            gprs[n] = (gprs[n] & ~0xFF00) | ((value & 0xFF) << 8)
        else:
            gprs[n] = (gprs[n] & ~0xFF) | (value & 0xFF)
        self.dirty |= 1 << n

    def set_flags(self, rflags: int) -> None:
        self.rflags = rflags
        self.dirty |= 1 << 17

    def ea(self) -> int:
        """Offset of the instruction's memory operand within its segment."""
        mem = self.insn.mem
        assert mem is not None
        return mem.effective_address(self.gprs, self.next_rip)

    def load(self, width: int) -> Request:
        mem = self.insn.mem
        assert mem is not None
        return (READ, mem.seg, mem.effective_address(self.gprs, self.next_rip), width, 0)

    def load_for_update(self, width: int) -> Request:
        mem = self.insn.mem
        assert mem is not None
        return (RMW_READ, mem.seg, mem.effective_address(self.gprs, self.next_rip), width, 0)

    def store(self, width: int, value: int) -> Request:
        mem = self.insn.mem
        assert mem is not None
        return (WRITE, mem.seg, mem.effective_address(self.gprs, self.next_rip), width, value & MASK[width])

    def rm_read(self, width: int, for_update: bool = False) -> Operand:
        """The ModRM r/m operand: a register, or a read (checked for write when the result goes back)."""
        if self.insn.mem is None:
            return self.get(self.insn.rm, width)
        return (yield self.load_for_update(width) if for_update else self.load(width))

    def rm_write(self, width: int, value: int) -> Steps:
        """Write the ModRM r/m operand: a register, or a store."""
        if self.insn.mem is None:
            self.set(self.insn.rm, width, value)
        else:
            yield self.store(width, value)


Semantic = Callable[[Exec, Insn], Steps]


@dataclass(frozen=True, slots=True)
class Elements:
    """What one iteration of a string instruction moves, for batched REP (`vmmio.vmm.rep_batch`): an
    element read at seg:rSI (`source`) and/or written at ES:rDI (`destination`), whose other end, if
    not memory, is port DX (`port`) or rAX (`rax`: STOS stores it, LODS loads it)."""

    source: bool = False
    destination: bool = False
    port: bool = False
    rax: bool = False


@dataclass(frozen=True, slots=True)
class Direct:
    """A form whose whole effect with a memory operand is one access to it and, for a load, one register
    write: what its semantics does, in data the Vcpu can apply without running them (a repeated
    `mov eax, [status]` then costs no generator). `source` bytes are read (0: the operand width) and
    sign-extended when `signed`; the register is rAX when `rax` (the moffs forms), else ModRM.reg; a
    store writes the immediate when `imm`, else that register. The semantics stay the definition: a run
    that is not a planned userspace request goes through them (tests compare both ways)."""

    load: bool
    source: int = 0
    signed: bool = False
    rax: bool = False
    imm: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    """One emulated instruction form as registered by its semantics module."""

    fn: Semantic
    string: bool = False  # REP-able string instruction: one call is one iteration
    rep_zf: bool = False  # REPE/REPNE also test ZF (cmps, scas)
    mem_only: bool = False  # the register form (mod == 3) is a different instruction
    mnemonics: frozenset[str] = frozenset()  # if set, only these decoded mnemonics (mandatory prefixes)
    # REP with a zero count and 32-bit addressing in 64-bit mode: on Intel CPUs RCX and these pointer
    # registers still get their upper halves cleared (as a 32-bit write would), with no iteration run.
    zero_count_clears: tuple[int, ...] = ()
    names: tuple[str, ...] = ()  # the instructions the form covers, for the table (VEX/EVEX have no mnemonic)
    elements: Elements | None = None  # a string instruction that batched REP may run many iterations of
    port: bool = False  # does port I/O: the only forms an I/O exit can come from
    direct: Direct | None = None  # the Vcpu may perform it from a planned access (see Direct)
