"""ADCX and ADOX (66 / F3 0F 38 F6, CPUID adx): unsigned add with carry in and out through CF (ADCX) or
OF (ADOX) alone, so two carry chains can interleave. 32-bit, or 64-bit with REX.W (the 66 of ADCX is a
mandatory prefix, not an operand-size override)."""

from __future__ import annotations

from vmmio.vmm.semantics.context import Exec, Steps
from vmmio.vmm.semantics.registry import emulates
from vmmio.x86 import flags
from vmmio.x86.insn import Insn, OpMap
from vmmio.x86.regs import CF, OF

_CARRY = {"adcx": CF, "adox": OF}


@emulates(OpMap.M0F38, (0xF6,), mnemonics=tuple(_CARRY))
def adcx_adox(x: Exec, i: Insn) -> Steps:
    x.require("adx")
    w = 8 if i.rex & 8 else 4
    b = yield from x.rm_read(w)
    res, fl = flags.add_with_flag(w, x.get(i.reg, w), b, _CARRY[i.mnemonic], x.rflags)
    x.set(i.reg, w, res)
    x.set_flags(fl)
