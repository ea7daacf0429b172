"""Where Unicorn is a wrong oracle: behaviours checked against the host CPU, kept out of the comparison.

Each entry names the trait of a case that triggers it, why Unicorn is wrong, and a minimal case. The
Unicorn test asserts each still reproduces (so an exclusion is dropped once Unicorn is fixed); the
native test asserts the host CPU agrees with vmmio on the same case (the host is the referee).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from oracles.gen import CODE, WINDOW, Access, Case
from oracles.vector_state import UNICORN, Scope
from vmmio.x86.state import VectorState

__all__ = [
    "UNICORN_BUGS",
    "VECTOR_UNICORN_BUGS",
    "UnicornBug",
    "unicorn_known_wrong",
    "unicorn_scope",
    "unicorn_vector_known_wrong",
]


@dataclass(frozen=True)
class UnicornBug:
    reason: str
    case: Case


def _case(name: str, code: str, accesses: str, patch: bytes = b"", expect: str = "") -> Case:
    """`code` addresses [rbx] = WINDOW, or fs:[rbx] = WINDOW (fs_base 0x1000); `accesses` like "R1 W1"."""
    gprs = [0] * 16
    gprs[3] = WINDOW - 0x1000 if code.startswith("64") else WINDOW
    patches = ((WINDOW, patch),) if patch else ()
    plan = tuple(Access(WINDOW, int(a[1:]), a[0] == "W") for a in accesses.split())
    case = Case(name, "known", bytes.fromhex(code), tuple(gprs), 0x2, 0x1000, 0, 1, patches, WINDOW, plan)
    return replace(case, expect=expect, tags=frozenset({"lock"}) if code.startswith("f0") else frozenset())


UNICORN_BUGS: dict[str, UnicornBug] = {
    "null-seg-last": UnicornBug(
        "QEMU lets an ES/CS/SS/DS prefix that follows FS/GS cancel the FS/GS base; in 64-bit mode those are "
        "null prefixes and the host CPU keeps the FS/GS base",
        _case("mov eax, fs:[rbx] + trailing DS prefix", "643e8b03", "R4"),
    ),
    "test-alias": UnicornBug(
        "QEMU raises #UD for F6/F7 /1; the CPU executes it as TEST r/m, imm (the /0 form)",
        _case("test dword [rbx], 0x80 via /1", "f70b80000000", "R4"),
    ),
    "rex.r-mov-imm": UnicornBug(
        "QEMU includes REX.R in the C6/C7 opcode extension and raises #UD; the CPU ignores REX.R there",
        _case("mov dword [rbx], 1 with REX.R", "44c70301000000", "W4"),
    ),
    "lock-neg": UnicornBug(
        "QEMU computes the flags of LOCK NEG from the wrong value (lock neg byte 0x9b: SF set and PF clear; "
        "the CPU sets them from the result 0x65: SF clear, PF set)",
        _case("lock neg byte [rbx]", "f0f61b", "R1 W1", b"\x9b"),
    ),
    "lock-ud": UnicornBug(
        "QEMU does not enforce where LOCK is legal: it executes LOCK MOV/MOVZX/MOVSX/BT/TEST/PUSH/POP, the "
        "string forms and register-form XCHG instead of raising #UD, and LOCK BTS/BTR/BTC in register form "
        "abort the whole process (a TCG assertion), so no illegal-LOCK case is run on Unicorn",
        _case("lock mov [rbx], eax", "f08903", "", expect="#UD"),
    ),
    "rep-a32-zero-count": UnicornBug(
        "QEMU leaves RCX/RSI/RDI alone for a REP string instruction with 32-bit addressing and ECX = 0; "
        "Intel CPUs clear the upper half of RCX (and of RSI/RDI for MOVS, RDI for STOS) as KVM does",
        replace(
            _case("addr32 rep stosb with ECX = 0", "67f3aa", ""),
            gprs=(0, 0xFFFF_0000_0000_0000, 0, WINDOW, 0, 0, 0, 0xFFFF_0000_0000_0000 | WINDOW, *[0] * 8),
            rep=True,
            addr_size=4,
        ),
    ),
    # --- the rest of the integer instruction set
    "cmpxchg32-success": UnicornBug(
        "a 32-bit CMPXCHG whose compare succeeds: QEMU writes EAX back (clearing the upper half of RAX); the "
        "CPU writes only the destination and leaves RAX whole",
        replace(
            _case("cmpxchg [rbx], ecx with EAX equal to the operand", "0fb10b", "R4 W4", b"\x78\x56\x34\x12"),
            gprs=(0xFFFF_FFFF_1234_5678, 0, 0, WINDOW, *[0] * 12),
        ),
    ),
    "cmpxchg32-reg-dest": UnicornBug(
        "a register-form 32-bit CMPXCHG whose compare fails: QEMU writes the destination register back "
        "(clearing its upper half); the host CPU leaves it whole",
        replace(
            _case("cmpxchg edx, eax with EAX not equal to EDX", "0fb1c2", ""),
            gprs=(1, 0, 0xFFFF_FFFF_0000_0002, WINDOW, *[0] * 12),
            tags=frozenset({"reg-form"}),
        ),
    ),
    "shxd-riprel-imm": UnicornBug(
        "SHLD/SHRD with an imm8 count and a RIP-relative operand: QEMU leaves the imm8 out of the "
        "instruction length when it adds RIP, and accesses the operand one byte too low",
        replace(
            _case(
                "shld dword [rip+disp], eax, 4 (the operand at the window)",
                "0fa405" + "00" * 4 + "04",
                "R4 W4",
            ),
            code=b"\x0f\xa4\x05" + (WINDOW - CODE - 8).to_bytes(4, "little") + b"\x04",
            tags=frozenset({"rip-relative"}),
        ),
    ),
    "bsf-zero-source": UnicornBug(
        "BSF/BSR r32 with a zero source: QEMU writes the destination back as a 32-bit register (clearing the "
        "upper half of the 64-bit register); the Intel host writes nothing (the SDM calls the destination "
        "undefined, vmmio keeps the host's behaviour, as AMD documents it)",
        replace(
            _case("bsf eax, [rbx] with a zero dword there", "0fbc03", "R4", b"\0\0\0\0"),
            gprs=(0xFFFF_FFFF_FFFF_FFFF, 0, 0, WINDOW, *[0] * 12),
        ),
    ),
    "popcnt-66-rexw": UnicornBug(
        "POPCNT with both 66 and REX.W: QEMU takes the operand size from 66 (16 bits); REX.W wins on the CPU",
        _case("popcnt rax, [rbx] with 66 and REX.W", "66f3480fb803", "R8", bytes(range(1, 9))),
    ),
    "blsi-cf": UnicornBug(
        "BLSI sets CF when the source is not zero (SDM); QEMU sets it when the source is zero",
        _case("blsi eax, [rbx]", "c4e278f31b", "R4", b"\x10\0\0\0"),
    ),
    "bzhi-index": UnicornBug(
        "BZHI with an index of at least the operand size copies the source whole and sets CF (SDM "
        "pseudo-code, the host CPU); QEMU saturates the index at size - 1 (clearing the top bit) and sets "
        "CF for an index of size - 1 too",
        replace(
            _case("bzhi eax, [rbx], ecx with ECX = 40", "c4e270f503", "R4", b"\xff\xff\xff\xff"),
            gprs=(0, 40, 0, WINDOW, *[0] * 12),
        ),
    ),
    "no-adx": UnicornBug(
        "the engine's CPU model has no ADX: ADCX/ADOX raise #UD (vmmio's oracle CPU has the feature)",
        _case("adcx eax, [rbx]", "660f38f603", "R4"),
    ),
}


def unicorn_known_wrong(case: Case) -> str | None:
    """The UNICORN_BUGS key that makes Unicorn unusable as an oracle for this case, or None."""
    if case.expect == "#UD":
        return "lock-ud"
    if "null-seg-last" in case.tags:
        return "null-seg-last"
    if "misaligned" in case.tags:
        return "sse-alignment"
    if "mxcsr-reserved" in case.tags:
        return "ldmxcsr-reserved"
    if "vex" in case.tags and ("vvvv" in case.tags or "perturbed" in case.tags):
        return "vex-as-sse"
    if "test-alias" in case.tags:
        return "test-alias"
    if "rex.r-group" in case.tags and case.form.startswith("mov r/m"):
        return "rex.r-mov-imm"
    if "lock" in case.tags and case.form.startswith("neg"):
        return "lock-neg"
    if case.rep and case.addr_size == 4 and not case.gprs[1] & 0xFFFF_FFFF:
        return "rep-a32-zero-count"
    if "compare-equal" in case.tags and case.form.startswith("cmpxchg r/m32"):
        return "cmpxchg32-success"
    if "reg-form" in case.tags and case.form.startswith("cmpxchg r/m32"):
        return "cmpxchg32-reg-dest"
    if "zero-source" in case.tags and case.form.startswith(("bsf r32, r/m32", "bsr r32, r/m32")):
        return "bsf-zero-source"
    if case.form.startswith(("adcx", "adox")):
        return "no-adx"
    if "rip-relative" in case.tags and case.form.startswith(("shld", "shrd")) and "imm8" in case.form:
        return "shxd-riprel-imm"
    if "66-rex.w" in case.tags and case.form.startswith("popcnt"):
        return "popcnt-66-rexw"
    if case.form.startswith("blsi"):
        return "blsi-cf"
    if case.form.startswith("bzhi") and _vex_source(case) & 0xFF >= (63 if "r64" in case.form else 31):
        return "bzhi-index"
    return None


def _vex_source(case: Case) -> int:
    """The value of the register VEX.vvvv names in `case` (after the prefixes that may precede VEX)."""
    at = 0
    while case.code[at] in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67, 0xF0):
        at += 1
    return case.gprs[~case.code[at + 2] >> 3 & 0xF]


# --------------------------------------------------------------------------------------------------
# Vector moves (tests/oracles/gen_vector.py, tests/test_oracle_vector.py)
# --------------------------------------------------------------------------------------------------


def unicorn_vector_known_wrong(case: Case) -> str | None:
    """Why a vector case cannot be compared with raw Unicorn, or None.

    Not Unicorn's errors but what the raw engine cannot show: it runs at CPL 0 (RFLAGS.AC raises no
    #AC there) and maps only the window (an access past it is an engine error, not a #PF).
    """
    if "null-seg-last" in case.tags:
        return "null-seg-last"
    if "misaligned" in case.tags:
        return "sse-alignment"
    if "mxcsr-reserved" in case.tags:
        return "ldmxcsr-reserved"
    if "vex" in case.tags and ("vvvv" in case.tags or "perturbed" in case.tags):
        return "vex-as-sse"
    if case.rflags & 0x40000:
        return "ac-at-cpl0"
    if "past-end" in case.tags:
        return "past-end-unmapped"
    return None


def unicorn_scope(case: Case) -> Scope:
    """What of the vector state Unicorn is compared on: YMM0-15 (XMM only after a VEX.128 move, whose
    zeroing of bits 255:128 the engine does not do: VECTOR_UNICORN_BUGS["vex128-keeps-upper"])."""
    return _UNICORN_VEX if "vex" in case.tags else UNICORN


_UNICORN_VEX = replace(UNICORN, bits=128)


def _vcase(
    name: str, code: str, plan: str, vector: VectorState, patch: bytes = b"", rbx: int = WINDOW
) -> Case:
    """A vector case at CPL 3 (see oracles/vector_state.py): `code` addresses [rbx]; `plan` like "R16"."""
    gprs = [0] * 16
    gprs[3] = rbx
    patches = ((rbx, patch),) if patch else ()
    accesses = tuple(Access(rbx, int(a[1:]), a[0] == "W") for a in plan.split())
    case = Case(name, "known", bytes.fromhex(code), tuple(gprs), 0x2, 0, 0, 1, patches, rbx, accesses)
    return replace(case, vector=vector, tags=frozenset({"vex"} if code.startswith("c5") else ()))


def _vec(**regs: int) -> VectorState:
    """A vector state with XMM/YMM registers xmmN/ymmN = value and mmN = value, MMX bits 79:64 = 0x1234."""
    vec = VectorState()
    vec.mm_hi = [0x1234] * 8
    for name, value in regs.items():
        n = int(name.lstrip("xym"))
        if name.startswith("mm"):
            vec.mm[n] = value
        else:
            vec.zmm[n] = value
    return vec


VECTOR_UNICORN_BUGS: dict[str, UnicornBug] = {
    "sse-alignment": UnicornBug(
        "QEMU raises no #GP(0) for a misaligned operand of the aligned forms (MOVAPS, MOVDQA, MOVNT*, "
        "MOVSLDUP/MOVSHDUP m128, VMOVAPS...); the CPU does",
        _vcase("movaps xmm0, [rbx] at window + 8", "0f2803", "R16", _vec(), rbx=WINDOW + 8),
    ),
    "ldmxcsr-reserved": UnicornBug(
        "QEMU loads MXCSR values with reserved bits (31:16) set; the CPU raises #GP(0)",
        _vcase("ldmxcsr [rbx] = 0x11f80", "0fae13", "R4", _vec(), (0x11F80).to_bytes(4, "little")),
    ),
    "vex-as-sse": UnicornBug(
        "QEMU 5 has no AVX (Unicorn's CPUID says so) yet decodes the 128-bit VEX forms of SSE moves as the "
        "SSE forms: VEX.vvvv is ignored (VMOVSS xmm1, xmm2, xmm3 merges into xmm1, not xmm2), and a VEX.L or "
        "vvvv the form forbids raises nothing; cases using vvvv or perturbing a VEX field are not compared",
        _vcase("vmovss xmm1, xmm2, xmm3", "c5ea10cb", "", _vec(xmm1=0x11 << 64, xmm2=0x22 << 64, xmm3=0x33)),
    ),
    "vex128-keeps-upper": UnicornBug(
        "a VEX.128 write zeroes bits 255:128 of the YMM register (SDM vol. 1, 14.1.3); QEMU's SSE code path "
        "keeps them: after a VEX move Unicorn's registers are compared on their low 128 bits only",
        _vcase("vmovups xmm1, [rbx]", "c5f8100b", "R16", _vec(ymm1=(1 << 256) - 1)),
    ),
    "mmx-exponent": UnicornBug(
        "an MMX register write sets bits 79:64 of the x87 register to ones (SDM vol. 1, 9.5.1); QEMU leaves "
        "them: Unicorn's x87 registers are compared on their low 64 bits (the MMX registers) only",
        _vcase("movq mm1, [rbx]", "0f6f0b", "R8", _vec(mm1=5)),
    ),
}
"""Vector moves where Unicorn is wrong, refereed by the host CPU (tests/test_oracle_vector.py): the
first three keep cases out of the comparison (`unicorn_vector_known_wrong`), the last two narrow what of
the state is compared (`unicorn_scope`)."""
