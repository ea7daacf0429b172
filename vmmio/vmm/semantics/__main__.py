"""Print the table of emulated forms, straight from the registry (`python -m vmmio.vmm.semantics`)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Form
from vmmio.vmm.semantics.registry import ANY_REG, FORMS, space
from vmmio.x86.insn import Encoding, OpMap

_ESCAPE = {
    space(OpMap.ONE): "",
    space(OpMap.M0F): "0F ",
    space(OpMap.M0F38): "0F38 ",
    space(OpMap.M0F3A): "0F3A ",
    space(OpMap.M0F38, Encoding.VEX): "VEX.0F38 ",
    space(OpMap.M0F3A, Encoding.VEX): "VEX.0F3A ",
}


def rows() -> list[tuple[str, str, str]]:
    """(opcode text, semantic function, notes) for every registered form, in opcode order."""
    out = []
    seen: set[tuple[int, int, int, Form]] = set()
    for (where, opcode, reg, _), form in sorted(FORMS.items(), key=lambda item: item[0]):
        if (where, opcode, reg, form) in seen:
            continue  # a form filed under each of its mnemonics is one row
        seen.add((where, opcode, reg, form))
        text = f"{_ESCAPE[where]}{opcode:02X}" + ("" if reg == ANY_REG else f" /{reg}")
        notes = []
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
    print(f"{'opcode':14} {'semantics':28} notes")
    for text, fn, notes in table:
        print(f"{text:14} {fn:28} {notes}")
    print(f"\n{len(table)} opcode forms emulated")


if __name__ == "__main__":
    main()
