"""Print the table of emulated forms, straight from the registry (`python -m vmmio.vmm.semantics`)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Form
from vmmio.vmm.semantics.registry import ANY_REG, FORMS
from vmmio.x86.insn import Encoding, OpMap

_ESCAPE = {OpMap.ONE: "", OpMap.M0F: "0F ", OpMap.M0F38: "0F38 ", OpMap.M0F3A: "0F3A "}


def _opcode_text(where: int, opcode: int, reg: int) -> str:
    encoding, opmap = Encoding(where >> 4), OpMap(where & 15)
    text = ("" if encoding == Encoding.LEGACY else f"{encoding.name}.") + _ESCAPE[opmap]
    return f"{text}{opcode:02X}" + ("" if reg == ANY_REG else f" /{reg}")


def rows() -> list[tuple[str, str, str]]:
    """(opcode text, semantic function, notes) for every registered form, in opcode order."""
    out = []
    seen: set[tuple[int, int, int, Form]] = set()
    for (where, opcode, reg, _), form in sorted(FORMS.items(), key=lambda item: item[0]):
        if (where, opcode, reg, form) in seen:
            continue  # a form filed under each of its mnemonics is one row
        seen.add((where, opcode, reg, form))
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
        out.append((_opcode_text(where, opcode, reg), fn, ", ".join(notes)))
    return out


def main() -> None:
    table = rows()
    width = max(len(text) for text, _, _ in table)
    fn_width = max(len(fn) for _, fn, _ in table)
    print(f"{'opcode':{width}} {'semantics':{fn_width}} notes")
    for text, fn, notes in table:
        print(f"{text:{width}} {fn:{fn_width}} {notes}")
    print(f"\n{len(table)} opcode forms emulated")


if __name__ == "__main__":
    main()
