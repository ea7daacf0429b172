"""Cases for the stack, control-transfer, segment and system forms (families stack_ops, branch, enter_leave,
sreg, far, system); gen.py holds what all families share.

Each case names the environment it runs in (`Case.env`):

- "user": CPL 3 in 64-bit mode with the GDT and selectors of a Linux x86-64 process (CS 0x33, SS 0x2B,
  DS/ES/FS/GS 0, no LDT): what the host CPU oracle runs in. The other executors install `ORACLE_GDT`
  (Linux's layout, with an LDT and an available TSS in slots the host leaves empty, which no user case
  names) and enter CPL 3 themselves.
- "kernel": CPL 0 (CS 0x10, SS 0x18) under the same GDT, for the privileged forms: Unicorn and KVM only.

Operands are placed as in gen.py (random ModRM/SIB shapes, prefixes, FS/GS overrides; registers solved
so that the access lands in the MMIO window), stacks in the window or the RAM area. Control transfers go
to the code page (whose filler each executor stops at) and say so in `next_rip`. Selectors come from pools
of valid and invalid ones, so faults (#GP/#NP/#SS with their error codes) are drawn as often as loads.

Not generated, with the reason: a fault in the middle of ENTER or a far CALL (the host leaves the first
pushes written, vmmio's kernel commits no RAM write of a faulting instruction), ENTER's final stack pointer
outside the stack's region (only the host has pages that are not present), TF set by POPF/IRET (the host
runner single-steps), AC set by IRET (see `_far`), far transfers to 16-bit offsets that succeed (they leave
the code page).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import assume
from hypothesis import strategies as st

from oracles.gen import (
    CODE,
    MASK64,
    PAGE,
    RAM,
    RAM_SIZE,
    WINDOW,
    WINDOW_SIZE,
    Access,
    Case,
    Prefixes,
    Rng,
    Shape,
    decode_shape,
    effective_address,
    first_mmio,
    offset,
    prefixes,
    solve,
    trim,
)
from vmmio.x86.regs import AC, ID, IF, IOPL, NT, RF, TF, VM

__all__ = [
    "CTL_SPECS",
    "GDT_BASE",
    "GDT_LIMIT",
    "HOST_SKIPS",
    "IDTR",
    "KERNEL_CS",
    "KERNEL_SS",
    "ORACLE_CR0",
    "ORACLE_GDT",
    "TR_SELECTOR",
    "USER_CS",
    "USER_SS",
    "CtlSpec",
    "ctl_case_for",
    "ctl_cases",
    "gdt_bytes",
    "q4",
    "q8",
    "simple_case",
]

RSP, RBP = 4, 5


def _desc(base: int, limit: int, type_: int, *, s: bool = True, dpl: int = 0, l: bool = False,
          db: bool = True, g: bool = True) -> int:  # fmt: skip
    lo = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    hi = (base >> 16) & 0xFF | type_ << 8 | s << 12 | dpl << 13 | 1 << 15 | (limit >> 16 & 0xF) << 16
    return (hi | l << 21 | db << 22 | g << 23 | (base >> 24 & 0xFF) << 24) << 32 | lo


# A Linux x86-64 process's GDT (arch/x86/include/asm/segment.h), accessed bits set as Linux sets them; the
# busy TSS at 0x40 as the host has it; an LDT at 0x50 (Linux's LDT slot, empty on the host) and an
# available TSS at 0x60 (a TLS slot, empty on the host) for LLDT/LTR. Selectors with index 0x50-0x6F
# behave the same on the host for the forms the user cases run (a system descriptor or an empty one: #GP
# or ZF = 0 alike), except far JMP/CALL to 0x60 (a task switch here): no user case names it.
USER_CS, USER32_CS, USER_SS = 0x33, 0x23, 0x2B
KERNEL_CS, KERNEL32_CS, KERNEL_SS = 0x10, 0x08, 0x18
TR_SELECTOR, LDT_SELECTOR, FREE_TSS = 0x40, 0x50, 0x60
CPUNODE = 0x78
LDT_BASE, TSS_BASE = 0x6000, 0x0
ORACLE_GDT = {
    0x08: _desc(0, 0xFFFFF, 0xB),
    0x10: _desc(0, 0xFFFFF, 0xB, l=True, db=False),
    0x18: _desc(0, 0xFFFFF, 0x3),
    0x20: _desc(0, 0xFFFFF, 0xB, dpl=3),
    0x28: _desc(0, 0xFFFFF, 0x3, dpl=3),
    0x30: _desc(0, 0xFFFFF, 0xB, dpl=3, l=True, db=False),
    0x40: _desc(TSS_BASE, 0x67, 0xB, s=False, db=False, g=False),
    0x50: _desc(LDT_BASE, 0x1F, 0x2, s=False, db=False, g=False),
    0x60: _desc(TSS_BASE, 0x67, 0x9, s=False, db=False, g=False),
    CPUNODE: _desc(0, 0, 0x1, dpl=3, g=False),  # read-only; Linux puts the CPU number in the limit
}
GDT_LIMIT = 0x7F
# Where every executor keeps it, and the IDTR they report (KVM delivers exceptions through it): the same
# on all, so that GDTR/IDTR compare exactly after LGDT/LIDT/SGDT/SIDT.
GDT_BASE = 0x800
IDTR = (0x8000, 32 * 16 - 1)
ORACLE_CR0 = 0x8005_0033  # PE MP ET NE WP AM PG, as Linux runs; only bits 15:0 are compared


def gdt_bytes() -> bytes:
    buf = bytearray(GDT_LIMIT + 1)
    for sel, d in ORACLE_GDT.items():
        buf[sel : sel + 8] = d.to_bytes(8, "little")
    return bytes(buf)


# Selector pools (with their RPL): loads that work at CPL 3, and ones that fault each way.
DATA_OK = (0, 3, USER_SS, 0x28, USER_CS, USER32_CS, CPUNODE | 3, 0x1, 0x2)
DATA_BAD = (KERNEL_SS | 3, KERNEL_SS, KERNEL_CS, 0x43, 0x53, 0x63, 0x6B, 0x80, 0x1003, 0xFFFF, 0x4, 0xF)
STACK_BAD = (0, 3, 0x28, USER_CS, CPUNODE | 3, KERNEL_SS, 0x80, 0x4)
FAR_OK = (USER_CS, USER32_CS, 0x30, 0x31)
FAR_BAD = (KERNEL_CS, KERNEL_CS | 3, USER_SS, 0, 3, 0x80, CPUNODE | 3, 0x43, 0x53, 0x0C)
RET_BAD = (KERNEL_CS, KERNEL_CS | 3, USER_SS, 0, 0x80, 0x30, 0x53)
SS_BAD = (0, 3, 0x28, USER_CS, 0x1B, 0x80)


@dataclass(frozen=True)
class CtlSpec:
    """One form: `name` (with {w} for the operand bits), family, opcode bytes, ModRM.reg for groups."""

    name: str
    family: str
    opcode: bytes
    group: int | None = None
    env: str = "user"


def _specs() -> list[CtlSpec]:
    S = CtlSpec
    out = [
        S("push r{w}", "stack_ops", b"\x50"),
        S("pop r{w}", "stack_ops", b"\x58"),
        S("push imm8", "stack_ops", b"\x6a"),
        S("push imm{i}", "stack_ops", b"\x68"),
        S("pushf{s}", "stack_ops", b"\x9c"),
        S("popf{s}", "stack_ops", b"\x9d"),
        S("call rel32", "branch", b"\xe8"),
        S("call r/m64", "branch", b"\xff", 2),
        S("jmp m64", "branch", b"\xff", 4),
        S("ret", "branch", b"\xc3"),
        S("ret imm16", "branch", b"\xc2"),
        S("enter imm16, imm8", "enter_leave", b"\xc8"),
        S("leave", "enter_leave", b"\xc9"),
        S("mov sreg, m16", "sreg", b"\x8e"),
        S("mov m16, sreg", "sreg", b"\x8c"),
        S("push fs/gs", "sreg", b"\x0f\xa0"),
        S("pop fs/gs", "sreg", b"\x0f\xa1"),
        S("lss/lfs/lgs r{w}, m16:{w}", "sreg", b"\x0f\xb2"),
        S("verr/verw m16", "sreg", b"\x0f\x00", 4),
        S("jmp far m16:{w}", "far", b"\xff", 5),
        S("call far m16:{w}", "far", b"\xff", 3),
        S("retf{s}", "far", b"\xcb"),
        S("retf{s} imm16", "far", b"\xca"),
        S("iret{s}", "far", b"\xcf"),
        S("sgdt/sidt m", "system", b"\x0f\x01", 0, "kernel"),
        S("lgdt/lidt m", "system", b"\x0f\x01", 2, "kernel"),
        S("smsw m16", "system", b"\x0f\x01", 4, "kernel"),
        S("lmsw m16", "system", b"\x0f\x01", 6, "kernel"),
        S("sldt/str m16", "system", b"\x0f\x00", 0, "kernel"),
        S("lldt m16", "system", b"\x0f\x00", 2, "kernel"),
        S("ltr m16", "system", b"\x0f\x00", 3, "kernel"),
        S("verr/verw m16 (CPL 0)", "system", b"\x0f\x00", 4, "kernel"),
    ]
    return out


CTL_SPECS = _specs()

# Families the host CPU oracle cannot run, and why.
HOST_SKIPS = {
    "system": "the privileged forms need CPL 0 (the host runs at CPL 3); of the others, SGDT/SIDT would "
    "show the host's own tables, and under UMIP (where the host has it) Linux emulates SGDT/SIDT/SMSW/SLDT/"
    "STR with made-up values: Unicorn and KVM run this family"
}


# --------------------------------------------------------------------------------------------------
# Building a case
# --------------------------------------------------------------------------------------------------


@dataclass
class _B:
    """Work in progress of one case."""

    rng: Rng
    env: str
    gprs: list[int]
    rflags: int
    fs_base: int
    gs_base: int
    seed: int
    known: dict[int, int] = field(default_factory=dict)  # registers the address solver must not change
    patches: list[tuple[int, bytes]] = field(default_factory=list)
    accesses: list[Access] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    next_rip: int = 0
    extra_flags: int = 0
    expect: str = ""

    def patch(self, addr: int, value: int, size: int) -> None:
        self.patches.append((addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")))

    def fix(self, reg: int, value: int) -> None:
        self.gprs[reg] = value & MASK64
        self.known[reg] = value & MASK64


def _start(draw: st.DrawFn, env: str) -> _B:
    rng = Rng(draw(st.integers(0, MASK64)))
    gprs = [rng.reg() for _ in range(16)]
    # IF as the host runner has it; IOPL 0. TF never (the host runner single-steps with it).
    return _B(rng, env, gprs, rng.rflags() | IF, rng.seg_base(), rng.seg_base(), rng.getrandbits(32))


def _finish(b: _B, spec: CtlSpec, form: str, code: bytes) -> Case:
    return Case(
        form=form,
        family=spec.family,
        code=code,
        gprs=tuple(v & MASK64 for v in b.gprs),
        rflags=b.rflags,
        fs_base=b.fs_base,
        gs_base=b.gs_base,
        seed=b.seed,
        patches=tuple(b.patches),
        fault_gpa=first_mmio(b.accesses),
        accesses=tuple(b.accesses),
        note="; ".join(b.notes),
        tags=frozenset(b.tags),
        expect=b.expect,
        env=spec.env,
        next_rip=b.next_rip,
        extra_flags=0 if b.expect else b.extra_flags,  # a fault leaves RFLAGS (the host: its TF, RF set)
    )


def _prefixes(draw: st.DrawFn, b: _B) -> Prefixes:
    p = prefixes(draw, b.rng, lock_ok=False)
    if p.null_after_fs_gs:
        b.tags.add("null-seg-last")  # oracles/known.py: Unicorn and KVM let the null prefix win
    return p


def _stack_osize(p: Prefixes) -> int:
    """Default-64 stack operations: 66 (without REX.W) makes them 16-bit."""
    return 2 if p.osz and not p.rex & 8 else 8


def _far_osize(p: Prefixes) -> int:
    """Far pointers, RETF, IRET: REX.W 8, 66 2, else 4."""
    return 8 if p.rex & 8 else 2 if p.osz else 4


def _slot(draw: st.DrawFn, b: _B, size: int, window: bool = True) -> int:
    """An address for `size` bytes in the window (or the RAM area), misaligned or page-crossing at times."""
    region, length = (WINDOW, WINDOW_SIZE) if window else (RAM, RAM_SIZE)
    return region + offset(draw, b.rng, size, length)


def _target(draw: st.DrawFn, b: _B) -> int:
    """A branch target in the code page, away from the instruction (the filler stops every executor)."""
    return CODE + b.rng.randrange(0x40, PAGE - 0x10)


def _noncanonical(b: _B) -> int:
    return b.rng.choice((0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 1 << 63))


def _memory(
    draw: st.DrawFn, b: _B, p: Prefixes, opcode: bytes, reg: int, target: int, imm: bytes = b""
) -> bytes:
    """The encoding of `opcode` with a ModRM memory operand at linear `target` (registers solved)."""
    rng = b.rng
    mod = draw(st.sampled_from((0, 0, 1, 1, 2)))
    rm = draw(st.sampled_from((0, 1, 2, 3, 4, 4, 5, 6, 7)))
    sib = None
    if rm == 4:
        base_field = draw(st.sampled_from((0, 3, 4, 5, 6)))
        sib = draw(st.integers(0, 3)) << 6 | draw(st.integers(0, 7)) << 3 | base_field
    no_base = mod == 0 and (rm == 5 or (sib is not None and sib & 7 == 5))
    disp_len = 1 if mod == 1 else 4 if mod == 2 or no_base else 0
    trim(p, len(p.encode()) + len(opcode) + 1 + (sib is not None) + disp_len + len(imm))
    bits = 32 if p.asz else 64
    disp = rng.randint(-128, 127) if mod == 1 else rng.disp32() if disp_len else 0
    shape = decode_shape(mod, rm, sib, p.rex, disp, bits)

    def encode(d: int) -> bytes:
        out = p.encode() + opcode + bytes([mod << 6 | (reg & 7) << 3 | rm])
        if sib is not None:
            out += bytes([sib])
        if disp_len:
            out += d.to_bytes(disp_len, "little", signed=True)
        return out + imm

    next_rip = CODE + len(encode(disp))
    seg = p.seg
    base = b.fs_base if seg == "fs" else b.gs_base if seg == "gs" else 0
    values = None
    for base_try in (base, 0):
        off = (target - base_try) & MASK64
        if bits == 32 and off >> 32:
            continue
        trial = Shape(shape.base, shape.index, shape.scale, shape.disp, shape.free_disp, bits)
        values = solve(rng, trial, off, b.known, b.gprs, next_rip)
        if values is not None:
            shape, base = trial, base_try
            break
    assume(values is not None)
    assert values is not None
    for r, v in values.items():
        b.gprs[r] = v & MASK64
    if seg == "fs":
        b.fs_base = base
    elif seg == "gs":
        b.gs_base = base
    ea = effective_address(shape, dict(enumerate(b.gprs)), next_rip)
    assert (base + ea) & MASK64 == target, (hex(base), hex(ea), hex(target))
    return encode(shape.disp)


def _opsize_name(w: int) -> str:
    return {2: "w", 4: "d", 8: "q"}[w]


def q8(*values: int) -> bytes:
    return b"".join((v & MASK64).to_bytes(8, "little") for v in values)


def q4(*values: int) -> bytes:
    return b"".join((v & 0xFFFF_FFFF).to_bytes(4, "little") for v in values)


def simple_case(
    name: str, family: str, code: str, slots: bytes, accesses: str, tags: str, env: str = "user"
) -> Case:
    """A hand-made case for the tables of known behaviours: `code` with RSP = RBX = WINDOW + 0x100 and
    `slots` there (the stack or the operand); `accesses` like "R8@0 W2@-2" (offsets from there)."""
    base = WINDOW + 0x100
    gprs = [0] * 16
    gprs[3] = gprs[4] = base
    plan = tuple(
        Access(base + int(a.split("@")[1]), int(a[1:].split("@")[0]), a[0] == "W") for a in accesses.split()
    )
    first = plan[0].addr if plan else base
    case = Case(name, family, bytes.fromhex(code), tuple(gprs), 0x202, 0, 0, 1, ((base, slots),), first, plan)
    return replace(case, env=env, tags=frozenset(tags.split()))


# --------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------


def _stack_ops(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)
    w = _stack_osize(p)
    op = spec.opcode[0]
    imm = b""
    if op in (0x50, 0x58):
        op += draw(st.integers(0, 7))
        name = f"{spec.name.split()[0]} r{8 * w}"
    elif op == 0x6A:
        imm = bytes([b.rng.sized(1)])
        name = spec.name
    elif op == 0x68:
        imm = b.rng.sized(2 if w == 2 else 4).to_bytes(2 if w == 2 else 4, "little")
        name = f"push imm{16 if w == 2 else 32}"
    else:
        name = spec.name.format(s={2: "", 8: "q"}[w])
    trim(p, len(p.encode()) + 1 + len(imm))
    code = p.encode() + bytes([op]) + imm
    push = op in (0x6A, 0x68, 0x9C) or 0x50 <= op < 0x58
    slot = _slot(draw, b, w)
    b.fix(RSP, slot + w if push else slot)
    if push:
        b.accesses = [Access(slot, w, True)]
    else:
        b.accesses = [Access(slot, w, False)]
        value = b.rng.sized(w)
        if op == 0x9D:
            value &= ~TF  # the host runner single-steps: a popped TF would trap one instruction later
            b.extra_flags = TF | IF | IOPL | NT | RF | AC | ID  # IF/IOPL must stay (CPL 3, IOPL 0)
        b.patch(slot, value, w)
    if op == 0x9C:
        b.tags.add("pushf")  # the host runner's TF is in the image it pushes
    return _finish(b, spec, name, code)


def _branch(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)  # 66 is ignored by near branches in 64-bit mode (Intel)
    if p.osz:
        b.tags.add("near-66")
    op = spec.opcode[0]
    target = _target(draw, b) if b.rng.random() < 0.9 else _noncanonical(b)
    canonical = target >> 47 in (0, (1 << 17) - 1)
    if not canonical:
        b.expect = "#GP"
        b.notes.append("non-canonical target")
        b.tags.add("noncanonical")
    else:
        b.next_rip = target
    if op == 0xE8:
        trim(p, len(p.encode()) + 5)
        length = len(p.encode()) + 5
        disp = target - (CODE + length)
        assume(-(1 << 31) <= disp < (1 << 31))
        code = p.encode() + b"\xe8" + disp.to_bytes(4, "little", signed=True)
        slot = _slot(draw, b, 8)
        b.fix(RSP, slot + 8)
        b.accesses = [Access(slot, 8, True)]
        return _finish(b, spec, spec.name, code)
    if op in (0xC3, 0xC2):
        imm = b"" if op == 0xC3 else b.rng.randrange(0x10000).to_bytes(2, "little")
        if imm and imm[1] & 0x80:
            b.tags.add("imm16-high")
        trim(p, len(p.encode()) + 1 + len(imm))
        code = p.encode() + bytes([op]) + imm
        slot = _slot(draw, b, 8)
        b.fix(RSP, slot)
        b.patch(slot, target, 8)
        b.accesses = [Access(slot, 8, False)]
        return _finish(b, spec, spec.name, code)
    # FF /2 (call) and FF /4 (jmp): a memory operand in the window, or (call) a register.
    call = spec.group == 2
    register = call and draw(st.sampled_from((False, False, True)))
    # A faulting CALL has pushed (the host keeps it): keep it where every executor shows it, the window.
    stack_in_window = not canonical or register or draw(st.booleans())
    slot = _slot(draw, b, 8, stack_in_window)
    if call:
        b.fix(RSP, slot + 8)
    if register:
        r = draw(st.integers(0, 15))
        assume(r != RSP)
        b.fix(r, target)
        trim(p, len(p.encode()) + 2)
        p.rex = p.rex | 0x41 if r >= 8 else p.rex & ~1
        code = p.encode() + b"\xff" + bytes([0xD0 | (r & 7)])
        b.accesses = [Access(slot, 8, True)]
        return _finish(b, spec, "call r64", code)
    operand = _slot(draw, b, 8)
    code = _memory(draw, b, p, b"\xff", spec.group or 0, operand)
    if p.rex & 4:
        b.tags.add("rex.r-group")
    b.patch(operand, target, 8)
    b.accesses = [Access(operand, 8, False)] + ([Access(slot, 8, True)] if call else [])
    if call:
        b.notes.append(f"stack in {'the window' if stack_in_window else 'RAM'}")
    return _finish(b, spec, "call m64" if call else spec.name, code)


def _enter_leave(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)
    op = spec.opcode[0]
    imm = b""
    if op == 0xC8:
        level = draw(st.sampled_from((0, 0, 1, 1, 2, 3, 4, 0x21, 0x40)))
        imm = b.rng.randrange(0x10000).to_bytes(2, "little") + bytes([level])
    trim(p, len(p.encode()) + 1 + len(imm))
    w = _stack_osize(p)
    code = p.encode() + bytes([op]) + imm
    if op == 0xC9:
        slot = _slot(draw, b, w)
        b.fix(RBP, slot)
        b.patch(slot, b.rng.sized(w), w)
        b.accesses = [Access(slot, w, False)]
        return _finish(b, spec, "leave" + ("" if w == 8 else " (16-bit)"), code)
    level &= 31
    copies = max(level - 1, 0)
    # The pushes below RSP, the display copied from below RBP: each in the window or the RAM area, one
    # of them at least in the window.
    window = copies == 0 or draw(st.booleans())
    top = _slot(draw, b, w * (level + 1) + 8, window) + w * (level + 1)
    b.fix(RSP, top)
    # The new top of stack is probed for a write: keep it in the same region (where every executor
    # has memory; only the host has pages that are not present).
    region = WINDOW if window else RAM
    alloc = b.rng.randrange(min(0x10000, top - w * (level + 1) - region + 1))
    imm = alloc.to_bytes(2, "little") + imm[2:]
    code = p.encode() + bytes([op]) + imm
    display = _slot(draw, b, w * copies + 8, not window or draw(st.booleans())) + w * copies
    b.fix(RBP, display)
    sp = top
    sp -= w
    b.accesses.append(Access(sp, w, True))
    frame = sp
    for k in range(1, level):
        src = (display - k * w) & MASK64
        b.patch(src, b.rng.sized(w), w)
        b.accesses.append(Access(src, w, False))
        sp -= w
        b.accesses.append(Access(sp, w, True))
    if level:
        sp -= w
        b.accesses.append(Access(sp, w, True))
    b.notes.append(f"level {level}, frame at {frame:#x}")
    if w == 2:
        b.tags.add("enter16")
    return _finish(b, spec, f"enter imm16, {level}" + ("" if w == 8 else " (16-bit)"), code)


def _selector(b: _B, good: tuple[int, ...], bad: tuple[int, ...], load: bool = True) -> int:
    """A selector from the good pool, or (40%) from the bad one: then the load faults (#GP: every bad
    selector here is refused for its type, privilege or table limit, none for its presence)."""
    if b.rng.random() < 0.6:
        selector = b.rng.choice(good)
        if 0 < selector < 4:
            # A null selector with an RPL: the host's kernel, returning to the runner's signal handler with
            # IRET, nulls the register (its hidden DPL 0 is below CPL 3), so the host shows selector 0.
            b.tags.add("null-rpl")
        return selector
    if load:
        b.expect = "#GP"
    return b.rng.choice(bad)


def _sreg(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)
    rng = b.rng
    op = spec.opcode
    if op == b"\x8e":  # MOV Sreg, m16
        sreg = draw(st.sampled_from((0, 2, 3, 3, 4, 5)))
        selector = _selector(b, (USER_SS,), STACK_BAD) if sreg == 2 else _selector(b, DATA_OK, DATA_BAD)
        operand = _slot(draw, b, 2)
        code = _memory(draw, b, p, op, sreg, operand)
        if p.rex & 4:
            b.tags.add("sreg-rex.r")  # REX.R on the Sreg field: ignored by the CPU
        b.patch(operand, selector | rng.getrandbits(16) << 16, 4)
        b.accesses = [Access(operand, 2, False)]
        if sreg == 2:
            b.tags.add("ss-shadow")  # MOV SS holds off the single-step trap for an instruction
        name = f"mov {['es', 'cs', 'ss', 'ds', 'fs', 'gs'][sreg]}, m16"
        return _finish(b, spec, name, code)
    if op == b"\x8c":  # MOV m16, Sreg
        sreg = draw(st.integers(0, 5))
        operand = _slot(draw, b, 2)
        code = _memory(draw, b, p, op, sreg, operand)
        if p.rex & 4:
            b.tags.add("sreg-rex.r")
        if p.rex & 8:
            b.tags.add("mov-sreg-rex.w")  # still a word store
        b.accesses = [Access(operand, 2, True)]
        return _finish(b, spec, f"mov m16, {['es', 'cs', 'ss', 'ds', 'fs', 'gs'][sreg]}", code)
    if op in (b"\x0f\xa0", b"\x0f\xa1"):  # PUSH/POP FS/GS
        gs = draw(st.booleans())
        trim(p, len(p.encode()) + 2)
        w = _stack_osize(p)
        code = p.encode() + bytes([0x0F, op[1] | (8 if gs else 0)])
        slot = _slot(draw, b, w)
        name = f"{'push' if op[1] == 0xA0 else 'pop'} {'gs' if gs else 'fs'}{'' if w == 8 else ' (16-bit)'}"
        if op[1] == 0xA0:
            b.fix(RSP, slot + w)
            b.accesses = [Access(slot, w, True)]
        else:
            b.fix(RSP, slot)
            b.patch(slot, _selector(b, DATA_OK, DATA_BAD) | rng.getrandbits(48) << 16, w)
            b.accesses = [Access(slot, 2, False)]  # a word, whatever the operand size (the host)
        return _finish(b, spec, name, code)
    if op == b"\x0f\xb2":  # LSS, LFS, LGS
        which = draw(st.sampled_from((0xB2, 0xB4, 0xB5)))
        reg = draw(st.integers(0, 7))
        w = _far_osize(p)
        operand = _slot(draw, b, w + 2)
        if which == 0xB2:
            selector = _selector(b, (USER_SS,), STACK_BAD)
        else:
            selector = _selector(b, DATA_OK, DATA_BAD)
        code = _memory(draw, b, p, bytes([0x0F, which]), reg, operand)
        b.patch(operand, rng.sized(w) | selector << (8 * w), w + 2)
        b.accesses = [Access(operand, w, False), Access(operand + w, 2, False)]  # offset, selector
        name = f"l{ {0xB2: 'ss', 0xB4: 'fs', 0xB5: 'gs'}[which] } r{8 * w}, m16:{8 * w}"
        if w == 8:
            b.tags.add("far-load-rex.w")
        return _finish(b, spec, name, code)
    return _verify(draw, b, spec, p)


def _verify(draw: st.DrawFn, b: _B, spec: CtlSpec, p: Prefixes) -> Case:
    write = draw(st.booleans())
    operand = _slot(draw, b, 2)
    code = _memory(draw, b, p, b"\x0f\x00", 5 if write else 4, operand)
    b.patch(operand, _selector(b, DATA_OK, (*DATA_BAD, 0x6F, 0x7F), load=False), 2)
    b.accesses = [Access(operand, 2, False)]
    return _finish(b, spec, ("verw" if write else "verr") + " m16" + spec.name[13:], code)


def _far(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)
    rng = b.rng
    op = spec.opcode[0]
    good = rng.random() < 0.6
    if op == 0xFF:  # JMP/CALL FAR m16:16/32/64
        call = spec.group == 3
        trim(p, len(p.encode()) + 1 + 1 + 1 + 4)
        w = _far_osize(p)
        good = good and w != 2  # a 16-bit offset leaves the code page
        selector = rng.choice(FAR_OK) if good else rng.choice(FAR_BAD)
        if selector & ~3 in (TR_SELECTOR, LDT_SELECTOR):
            b.tags.add("far-system")  # a system descriptor: #GP(selector) on the CPU
        target = _target(draw, b)
        operand = _slot(draw, b, w + 2)
        slot = _slot(draw, b, 2 * w, draw(st.booleans()))
        if call:
            b.fix(RSP, slot + 2 * w)
        code = _memory(draw, b, p, b"\xff", spec.group or 0, operand)
        if good and selector == USER32_CS and b.gprs[RSP] >> 32:
            b.tags.add("compat-rsp")  # into compatibility mode: the host CPU clears RSP[63:32]
        b.patch(operand, (target if good else rng.sized(w)) | selector << (8 * w), w + 2)
        b.accesses = [Access(operand, w, False), Access(operand + w, 2, False)]
        if good:
            b.next_rip = target
            if call:
                b.accesses += [Access(slot + w, w, True), Access(slot, w, True)]
        else:
            b.expect = "#GP"
        name = f"{'call' if call else 'jmp'} far m16:{8 * w}"
        return _finish(b, spec, name, code)
    imm = b"" if op != 0xCA else rng.randrange(0x10000).to_bytes(2, "little")
    if imm and imm[1] & 0x80:
        b.tags.add("imm16-high")
    trim(p, len(p.encode()) + 1 + len(imm))
    w = _far_osize(p)
    code = p.encode() + bytes([op]) + imm
    good = good and w != 2
    target = _target(draw, b)
    selector = rng.choice((USER_CS, USER32_CS)) if good else rng.choice(RET_BAD)
    iret = op == 0xCF
    slots = 5 if iret else 2
    base = _slot(draw, b, slots * w)
    b.fix(RSP, base)
    b.patch(base, target if good else rng.sized(w), w)
    b.patch(base + w, selector | rng.getrandbits(16) << 16, w)
    b.accesses = [Access(base, w, False), Access(base + w, w, False)]
    suffix = {2: "", 4: "d", 8: "q"}[w] if iret else {2: " (16-bit)", 4: "", 8: " (REX.W)"}[w]
    name = ("iret" if iret else "retf" + (" imm16" if imm else "")) + suffix
    if iret:
        # Never AC: a misaligned frame then livelocks the host (its IRET seems to check the SS:RSP pops
        # against the AC it has just loaded; Linux takes that #AC, raised with AC clear in the saved
        # flags, for a split lock and re-runs the instruction forever).
        image = rng.sized(w) & ~(TF | AC)
        if image & VM and w == 4:
            b.tags.add("iret-vm")
        b.patch(base + 2 * w, image, w)
        b.accesses.append(Access(base + 2 * w, w, False))
        b.extra_flags = TF | IF | IOPL | NT | RF | AC | ID
        ss = USER_SS if rng.random() < 0.8 else rng.choice(SS_BAD)
        b.patch(base + 3 * w, rng.sized(w), w)
        b.patch(base + 4 * w, ss | rng.getrandbits(16) << 16, w)
        if good:
            b.accesses += [Access(base + 3 * w, w, False), Access(base + 4 * w, w, False)]
            if ss != USER_SS:
                b.expect = "#GP"
        else:
            b.expect = "#GP"
    elif not good:
        b.expect = "#GP"
    if good and not b.expect:
        b.next_rip = target
    return _finish(b, spec, name, code)


def _system(draw: st.DrawFn, spec: CtlSpec) -> Case:
    b = _start(draw, spec.env)
    p = _prefixes(draw, b)
    rng = b.rng
    group = spec.group or 0
    opcode = spec.opcode
    if opcode == b"\x0f\x01" and group in (0, 2):  # SGDT/SIDT, LGDT/LIDT: 10 bytes in 64-bit mode
        reg = group + draw(st.integers(0, 1))
        operand = _slot(draw, b, 10)
        code = _memory(draw, b, p, opcode, reg, operand)
        load = group == 2
        if load:
            base = rng.getrandbits(47)
            base = base | (MASK64 << 47 & MASK64 if base >> 46 else 0)
            if rng.random() < 0.1:
                base = _noncanonical(b)
                b.expect = "#GP"
                b.tags.add("lgdt-noncanonical")
            b.patch(operand, rng.getrandbits(16) | base << 16, 10)
        b.accesses = [Access(operand, 2, not load), Access(operand + 2, 8, not load)]  # limit, base
        name = ["sgdt", "sidt", "lgdt", "lidt"][reg] + " m"
        if load and p.osz:
            b.tags.add("lgdt-66")
        return _finish(b, spec, name, code)
    operand = _slot(draw, b, 2)
    reg = group
    if opcode == b"\x0f\x00" and group in (0, 4):
        reg = group + draw(st.integers(0, 1))
    code = _memory(draw, b, p, opcode, reg, operand)
    store = (opcode, reg) in ((b"\x0f\x01", 4), (b"\x0f\x00", 0), (b"\x0f\x00", 1))
    if not store:
        if opcode == b"\x0f\x01":  # LMSW
            value = rng.getrandbits(16)
        elif reg == 2:  # LLDT
            value = rng.choice((LDT_SELECTOR, LDT_SELECTOR, 0, 3, TR_SELECTOR, USER_SS, 0x80, 0x54))
            b.expect = "" if value in (LDT_SELECTOR, 0, 3) else "#GP"
        elif reg == 3:  # LTR
            value = rng.choice((FREE_TSS, FREE_TSS, FREE_TSS | 3, TR_SELECTOR, 0, LDT_SELECTOR, 0x64, 0x80))
            b.expect = "" if value & ~3 == FREE_TSS else "#GP"
            if not value:
                b.tags.add("ltr-null")
            if value & 4:
                b.tags.add("ltr-ti")
        else:  # VERR/VERW at CPL 0
            value = _selector(b, (*DATA_OK, KERNEL_SS, KERNEL_CS), DATA_BAD, load=False)
        b.patch(operand, value | rng.getrandbits(16) << 16, 4)
    b.accesses = [Access(operand, 2, store)]
    names = {(1, 4): "smsw", (1, 6): "lmsw", (0, 0): "sldt", (0, 1): "str", (0, 2): "lldt", (0, 3): "ltr",
             (0, 4): "verr", (0, 5): "verw"}  # fmt: skip
    name = names[opcode[1], reg] + " m16" + (" (CPL 0)" if opcode[1] == 0 and reg in (4, 5) else "")
    return _finish(b, spec, name, code)


_BUILDERS = {
    "stack_ops": _stack_ops,
    "branch": _branch,
    "enter_leave": _enter_leave,
    "sreg": _sreg,
    "far": _far,
    "system": _system,
}


def ctl_case_for(spec: CtlSpec) -> st.SearchStrategy[Case]:
    build = _BUILDERS[spec.family]

    @st.composite
    def strategy(draw: st.DrawFn) -> Case:
        return build(draw, spec)

    return strategy()


def ctl_cases(family: str) -> st.SearchStrategy[Case]:
    """Cases of one gen_ctl family, the form drawn uniformly."""
    return st.sampled_from([s for s in CTL_SPECS if s.family == family]).flatmap(ctl_case_for)
