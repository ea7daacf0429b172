"""Print the table of emulated forms, straight from the registry (`python -m vmmio.vmm.semantics`)."""

from __future__ import annotations

from vmmio.vmm.semantics.registry import ANY_REG, FORMS
from vmmio.x86.insn import OpMap

_ESCAPE = {OpMap.ONE: "", OpMap.M0F: "0F "}


def rows() -> list[tuple[str, str, str]]:
    """(opcode text, semantic function, notes) for every registered form, in opcode order."""
    out = []
    for (opmap, opcode, reg), form in sorted(FORMS.items()):
        text = f"{_ESCAPE[OpMap(opmap)]}{opcode:02X}" + ("" if reg == ANY_REG else f" /{reg}")
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
    width = max(len(fn) for _, fn, _ in table)
    print(f"{'opcode':10} {'semantics':{width}} notes")
    for text, fn, notes in table:
        print(f"{text:10} {fn:{width}} {notes}")
    print(f"\n{len(table)} opcode forms emulated")


if __name__ == "__main__":
    main()
