"""Where Unicorn is a wrong oracle: behaviours checked against the host CPU, kept out of the comparison.

Each entry names the trait of a case that triggers it, why Unicorn is wrong, and a minimal case. The
Unicorn test asserts each still reproduces (so an exclusion is dropped once Unicorn is fixed); the
native test asserts the host CPU agrees with vmmio on the same case (the host is the referee).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from oracles.gen import CODE, WINDOW, Access, Case
from oracles.gen_ctl import q4, q8, simple_case
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
    "rorx-riprel-imm": UnicornBug(
        "RORX with a RIP-relative operand: as for SHLD/SHRD, QEMU leaves the imm8 out of the instruction "
        "length when it adds RIP, and reads the operand one byte too low",
        replace(
            _case(
                "rorx eax, dword [rip+disp], 4 (the operand at the window)",
                "c4e37bf005" + "00" * 4 + "04",
                "R4",
                b"\x11\x22\x33\x44",
            ),
            code=bytes.fromhex("c4e37bf005") + (WINDOW - CODE - 10).to_bytes(4, "little") + b"\x04",
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


_TARGET = 0x30_0040  # in the code page (gen.CODE + 0x40)
_c = simple_case

# The stack, control-transfer, segment and system families (oracles/gen_ctl.py); the host CPU referees
# each minimal case (the LGDT and LTR ones run at CPL 0 only: the SDM referees them).
UNICORN_BUGS.update(
    {
        "near-66": UnicornBug(
            "QEMU gives near CALL/JMP/RET a 16-bit operand size with 66 in 64-bit mode (AMD's rule); Intel "
            "ignores 66 there, and the host CPU keeps the 64-bit target and return address",
            replace(_c("ret (66)", "branch", "66c3", q8(_TARGET), "R8@0", "near-66"), next_rip=_TARGET),
        ),
        "imm16-high": UnicornBug(
            "QEMU sign-extends the imm16 of RET/RETF imm16 (ret 0xf9f0 moves RSP down); it is unsigned, and "
            "the host CPU adds 0xf9f0",
            replace(_c("ret imm16", "branch", "c2f0f9", q8(_TARGET), "R8@0", "imm16-high"), next_rip=_TARGET),
        ),
        "far-load-rex.w": UnicornBug(
            "QEMU reads m16:32 for LSS/LFS/LGS with REX.W (AMD's rule); Intel reads m16:64, as the host CPU "
            "does, so QEMU takes bytes 4-5 of the offset for the selector",
            _c(
                "lfs rax, m16:64", "sreg", "480fb403", q8(0x1234) + b"\x2b\x00", "R8@0 R2@8", "far-load-rex.w"
            ),
        ),
        "enter16": UnicornBug(
            "QEMU's 16-bit ENTER writes the whole 64-bit frame pointer into RBP; the CPU writes BP only "
            "(SDM: BP <- FrameTemp[15:0]; the host keeps RBP's upper bits)",
            replace(
                _c("enter 0, 0 (16-bit)", "enter_leave", "66c8000000", b"", "W2@-2", "enter16"),
                gprs=(0, 0, 0, 0, WINDOW + 0x100, 0x12_3456_0000, *[0] * 10),
            ),
        ),
        "iret-vm": UnicornBug(
            "QEMU's IRETD (32-bit operand size) in IA-32e mode returns to virtual-8086 mode when the EFLAGS "
            "image has VM; IA-32e mode ignores VM there (the host CPU returns to the code segment named)",
            replace(
                _c(
                    "iretd",
                    "far",
                    "cf",
                    q4(_TARGET, 0x33, 0x20202, WINDOW, 0x2B),
                    "R4@0 R4@4 R4@8 R4@12 R4@16",
                    "iret-vm",
                ),
                next_rip=_TARGET,
                extra_flags=0x27_7300,
            ),
        ),
        "lgdt-66": UnicornBug(
            "QEMU loads a 24-bit base for LGDT/LIDT with 66 in 64-bit mode; the SDM fixes their operand at "
            "8+2 bytes there (66 has no effect). Privileged: no host CPU referee, the SDM decides",
            _c(
                "lgdt m (66)",
                "system",
                "660f0113",
                b"\x27\x00" + q8(0x12_3456_789A),
                "R2@0 R8@2",
                "lgdt-66",
                "kernel",
            ),
        ),
        "noncanonical": UnicornBug(
            "QEMU (Unicorn's 64-bit mode) branches to a non-canonical address and faults fetching there; the "
            "CPU raises #GP(0) at the branch (the host: at the JMP, RSP and RIP as before)",
            replace(
                _c("jmp m64", "branch", "ff23", q8(0x8000_0000_0000), "R8@0", "noncanonical"), expect="#GP"
            ),
        ),
        "compat-rsp": UnicornBug(
            "QEMU keeps RSP[63:32] on a far JMP from 64-bit code into compatibility mode; the SDM leaves the "
            "upper halves undefined after such a switch, and the host CPU (Intel) clears RSP's (vmmio too)",
            replace(
                _c("jmp far m16:32", "far", "ff2b", q4(_TARGET) + b"\x23\0", "R4@0 R2@4", "compat-rsp"),
                gprs=(0, 0, 0, WINDOW + 0x100, 0x1234_5678_0000_1000, *[0] * 11),
                next_rip=_TARGET,
            ),
        ),
        "lgdt-noncanonical": UnicornBug(
            "QEMU's LGDT/LIDT in 64-bit mode load a non-canonical base; the SDM says #GP(0). Privileged: no "
            "host CPU referee",
            replace(
                _c(
                    "lgdt m",
                    "system",
                    "0f0113",
                    b"\x27\0" + q8(1 << 47),
                    "R2@0 R8@2",
                    "lgdt-noncanonical",
                    "kernel",
                ),
                expect="#GP",
            ),
        ),
        "ltr-null": UnicornBug(
            "QEMU's LTR loads a null selector into TR; the SDM says #GP(0) (KVM agrees with vmmio). "
            "Privileged: no host CPU referee",
            replace(_c("ltr m16", "system", "0f001b", b"\0\0", "R2@0", "ltr-null", "kernel"), expect="#GP"),
        ),
    }
)

# gen_ctl tags a case with the key of the Unicorn bug it can show.
_TAGGED_BUGS = frozenset(
    (
        "near-66",
        "imm16-high",
        "far-load-rex.w",
        "enter16",
        "iret-vm",
        "lgdt-66",
        "noncanonical",
        "ltr-null",
        "compat-rsp",
        "lgdt-noncanonical",
    )
)


def unicorn_known_wrong(case: Case) -> str | None:
    """The UNICORN_BUGS key that makes Unicorn unusable as an oracle for this case, or None."""
    for key in sorted(_TAGGED_BUGS & case.tags):
        return key
    if case.env:
        return "null-seg-last" if "null-seg-last" in case.tags else None
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
    if "rip-relative" in case.tags and case.form.startswith("rorx"):
        return "rorx-riprel-imm"
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
