"""The table of emulated forms, filled by `@emulates` next to each semantic function."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vmmio.vmm.semantics.context import Form, Semantic
from vmmio.x86.insn import Encoding, Insn, OpMap

ANY_REG = -1

FORMS: dict[tuple[int, int, int], Form] = {}

# VEX and EVEX reuse the legacy map numbers (0F, 0F38, 0F3A) for other instructions: their forms are
# keyed by the map number plus ENCODING_BASE[encoding], so one table holds every encoding.
ENCODING_BASE = {Encoding.LEGACY: 0, Encoding.VEX: 16, Encoding.EVEX: 32, Encoding.XOP: 48}


def emulates(
    opmap: OpMap,
    opcodes: Iterable[int],
    regs: Iterable[int] = (ANY_REG,),
    *,
    string: bool = False,
    rep_zf: bool = False,
    mem_only: bool = False,
    mnemonics: Iterable[str] = (),
    zero_count_clears: Iterable[int] = (),
    encoding: Encoding = Encoding.LEGACY,
    names: Iterable[str] = (),
) -> Callable[[Semantic], Semantic]:
    """Register a semantic for opcodes of `opmap` (and, for groups, the ModRM.reg values `regs`) in
    the given encoding's opcode space."""
    space = int(opmap) + ENCODING_BASE[encoding]

    def register(fn: Semantic) -> Semantic:
        form = Form(
            fn, string, rep_zf, mem_only, frozenset(mnemonics), tuple(zero_count_clears), tuple(names)
        )
        for op in opcodes:
            for reg in regs:
                key = (space, op, reg)
                if key in FORMS:
                    raise ValueError(f"form {key} registered twice")
                FORMS[key] = form
        return fn

    return register


def lookup(insn: Insn) -> Form | None:
    """The form emulating `insn`, or None when vmmio does not emulate it."""
    space = insn.opmap + ENCODING_BASE[insn.encoding] if insn.encoding else insn.opmap
    form = FORMS.get((space, insn.opcode, ANY_REG))
    if form is None and insn.reg >= 0:
        form = FORMS.get((space, insn.opcode, insn.reg & 7))
    if form is None:
        return None
    if form.mem_only and insn.mem is None:
        return None
    if form.mnemonics and insn.mnemonic not in form.mnemonics:
        return None
    return form
