"""The table of emulated forms, filled by `@emulates` next to each semantic function."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vmmio.vmm.semantics.context import Form, Semantic
from vmmio.x86.insn import Encoding, Insn, OpMap

ANY_REG = -1
ANY_MNEMONIC = ""

# (opcode space, opcode, ModRM.reg or ANY_REG, mnemonic or ANY_MNEMONIC) -> form. The opcode space is the
# map, plus 16 times the encoding for VEX/EVEX/XOP (their opcode bytes mean other instructions). A form
# restricted to mnemonics is filed under each of them, so that forms told apart only by a mandatory
# prefix (MOVBE and CRC32 share 0F 38 F0) can live on one opcode.
FORMS: dict[tuple[int, int, int, str], Form] = {}


def space(opmap: int, encoding: int = Encoding.LEGACY) -> int:
    """The opcode space of `opmap` under `encoding` (the first element of a FORMS key)."""
    return int(opmap) | int(encoding) << 4


def emulates(
    opmap: OpMap,
    opcodes: Iterable[int],
    regs: Iterable[int] = (ANY_REG,),
    *,
    encoding: Encoding = Encoding.LEGACY,
    string: bool = False,
    rep_zf: bool = False,
    mem_only: bool = False,
    mnemonics: Iterable[str] = (),
    zero_count_clears: Iterable[int] = (),
    names: Iterable[str] = (),
    port: bool = False,
) -> Callable[[Semantic], Semantic]:
    """Register a semantic for opcodes of `opmap` under `encoding` (and, for groups, the ModRM.reg
    values `regs`). `names` lists the instructions covered, for the table, where no mnemonic does."""

    def register(fn: Semantic) -> Semantic:
        form = Form(
            fn,
            string,
            rep_zf,
            mem_only,
            frozenset(mnemonics),
            tuple(zero_count_clears),
            tuple(names),
            port,
        )
        for op in opcodes:
            for reg in regs:
                for mnemonic in sorted(form.mnemonics) or [ANY_MNEMONIC]:
                    key = (space(opmap, encoding), op, reg, mnemonic)
                    if key in FORMS:
                        raise ValueError(f"form {key} registered twice")
                    FORMS[key] = form
        return fn

    return register


def lookup(insn: Insn) -> Form | None:
    """The form emulating `insn`, or None when vmmio does not emulate it."""
    s = space(insn.opmap, insn.encoding)
    op = insn.opcode
    reg = insn.reg & 7 if insn.reg >= 0 else ANY_REG
    get = FORMS.get
    form = get((s, op, ANY_REG, ANY_MNEMONIC)) or get((s, op, reg, ANY_MNEMONIC))
    if form is None:
        form = get((s, op, ANY_REG, insn.mnemonic)) or get((s, op, reg, insn.mnemonic))
    if form is None or (form.mem_only and insn.mem is None):
        return None
    return form
