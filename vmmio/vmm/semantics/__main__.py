"""Print the table of emulated forms, straight from the registry (`python -m vmmio.vmm.semantics`)."""

from __future__ import annotations

from vmmio.vmm.semantics.registry import ANY_REG, ENCODING_BASE, FORMS
from vmmio.x86.insn import OpMap

_ESCAPE = {OpMap.ONE: "", OpMap.M0F: "0F ", OpMap.M0F38: "0F38 ", OpMap.M0F3A: "0F3A "}
_ENCODING = {base: "" if not base else f"{enc.name} " for enc, base in ENCODING_BASE.items()}


def rows() -> list[tuple[str, str, str]]:
    """(opcode text, semantic function, notes) for every registered form, in opcode order."""
    out = []
    for (space, opcode, reg), form in sorted(FORMS.items()):
        base = space & ~15
        text = f"{_ENCODING[base]}{_ESCAPE[OpMap(space - base)]}{opcode:02X}"
        text += "" if reg == ANY_REG else f" /{reg}"
        notes = []
        if form.names:
            notes.append("/".join(form.names))
        if form.string:
            notes.append("REP" + ("E/REPNE" if form.rep_zf else ""))
        if form.mem_only:
            notes.append("memory operand only")
        if form.mnemonics:
            notes.append("only " + "/".join(sorted(form.mnemonics)))
        fn = f"{form.fn.__module__.rsplit('.', 1)[-1]}.{form.fn.__name__}"
        out.append((text, fn, ", ".join(notes)))
    return out


def main() -> None:
    table = rows()
    width = max(len(text) for text, _, _ in table)
    print(f"{'opcode':{width}} {'semantics':30} notes")
    for text, fn, notes in table:
        print(f"{text:{width}} {fn:30} {notes}")
    print(f"\n{len(table)} opcode forms emulated")


if __name__ == "__main__":
    main()
