"""Where KVM is not the hardware: the tables the KVM oracle judges a disagreement against.

Two tables, both keyed by a short name:

- `DOCUMENTED`: what `vmmio/backends/kvm.py` documents (and tests/test_backend_kvm.py pins down) about
  Linux's emulator behind the KVM vCPU. A disagreement that one of them explains completely is reported
  apart, never as a vmmio failure. Most cannot arise from the generated cases (see `exercised`); they are
  listed so that the KVM oracle recognises them by form as soon as the generator grows such forms.
- `KVM_DEVIATIONS`: behaviours this oracle found where KVM disagrees with vmmio *and the host CPU sides
  with vmmio* (the CPU wins). Each has the trait of a case that triggers it, the analysis and a minimal
  case; tests/test_oracle_kvm.py checks that each still reproduces on KVM and that the host CPU still
  agrees with vmmio on it. A random case with the trait that disagrees is counted as that deviation
  only when the host CPU confirms vmmio (where the host CPU oracle is usable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from oracles.gen import STATUS, WINDOW, Access, Case
from oracles.gen_ctl import q4, q8, simple_case
from oracles.outcome import Outcome, Request

from oracles_kvm.kvm_run import KvmOutcome
from vmmio.reference.kvm import KvmMmio
from vmmio.x86.regs import DF

__all__ = [
    "DOCUMENTED",
    "KVM_DEVIATIONS",
    "NOT_EMULATED_FAMILIES",
    "Documented",
    "KvmDeviation",
    "documented_deviation",
    "kvm_deviation",
    "kvm_unrunnable",
]


@dataclass(frozen=True)
class Documented:
    """A known way Linux's emulator (or the KvmVcpu wrapper) differs, documented in vmmio/backends/kvm.py."""

    reason: str
    exercised: str  # whether the generated cases can hit it, and why (not)
    explains: Callable[[Case, KvmOutcome, Outcome], bool]  # does it account for the whole difference?


@dataclass(frozen=True)
class KvmDeviation:
    """Linux's emulator disagrees with the host CPU (and vmmio agrees with the CPU)."""

    reason: str
    source: str  # where in Linux the behaviour comes from
    trait: Callable[[Case], bool]  # cases that can show it
    case: Case  # a minimal case that shows it
    # False: KVM never finishes such a case (it loops without an exit); the judge does not run them, and
    # the still-reproduces test runs the minimal case against a short deadline.
    runnable: bool = True
    # True: only the request sequence differs (same final state), which the host CPU cannot show.
    requests_only: bool = False


# --------------------------------------------------------------------------------------------------
# Documented behaviours of Linux's emulator
# --------------------------------------------------------------------------------------------------


def _runs(requests: list[Request]) -> list[tuple[bool, int, bytes]]:
    """Requests merged into runs of consecutive, address-contiguous accesses of one direction."""
    runs: list[tuple[bool, int, bytearray]] = []
    for r in requests:
        data = r.data.to_bytes(r.size, "little")
        if runs and runs[-1][0] == r.write and runs[-1][1] + len(runs[-1][2]) == r.gpa:
            runs[-1][2].extend(data)
        else:
            runs.append((r.write, r.gpa, bytearray(data)))
    return [(w, g, bytes(d)) for w, g, d in runs]


def _extra(kvm: list[Request], vmmio: list[Request]) -> list[Request] | None:
    """KVM's requests that vmmio did not make, if KVM's are vmmio's (in order) plus those; else None."""
    extra: list[Request] = []
    pos = 0
    for r in kvm:
        if pos < len(vmmio) and r == vmmio[pos]:
            pos += 1
        else:
            extra.append(r)
    return extra if pos == len(vmmio) else None


def _same_state(kvm: Outcome, vmmio: Outcome, memory: bool = True) -> bool:
    return (
        (kvm.gprs, kvm.rip, kvm.fault, kvm.error) == (vmmio.gprs, vmmio.rip, vmmio.fault, vmmio.error)
        and not (kvm.rflags ^ vmmio.rflags) & (STATUS | DF)
        and (not memory or (kvm.window, kvm.ram) == (vmmio.window, vmmio.ram))
    )


def _mnemonic(case: Case) -> str:
    words = case.form.split()
    return words[1] if words[0] in ("rep", "repe", "repne", "rep(f2)") and len(words) > 1 else words[0]


def _odd_pieces(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """Linux reported a 3/5/6/7-byte piece and the two sequences move the same bytes, cut differently."""
    odd = any(isinstance(x, KvmMmio) and x.length not in (1, 2, 4, 8) for x in kvm.raw)
    return odd and _same_state(kvm.outcome, vmmio) and _runs(kvm.outcome.requests) == _runs(vmmio.requests)


def _clflush(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """KVM's requests are vmmio's plus 1-byte reads (CLFLUSH fetches its operand)."""
    if not _mnemonic(case).startswith("clflush") or not _same_state(kvm.outcome, vmmio):
        return False
    extra = _extra(kvm.outcome.requests, vmmio.requests)
    return extra is not None and all(r.size == 1 and not r.write for r in extra)


def _string_io(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """INS/OUTS: same final state; the device saw the same bytes in other pieces or another order."""
    return _mnemonic(case).startswith(("ins", "outs")) and _same_state(kvm.outcome, vmmio)


def _split_store_fault(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """Both raise the same #PF; KVM made extra writes (the first page's part), nothing else differs."""
    if not vmmio.fault.startswith("#PF") or not _same_state(kvm.outcome, vmmio, memory=False):
        return False
    extra = _extra(kvm.outcome.requests, vmmio.requests)
    return bool(extra) and extra is not None and all(r.write for r in extra)


DOCUMENTED: dict[str, Documented] = {
    "odd-size-pieces": Documented(
        "Linux splits a page-crossing access at the page boundary into pieces of any size (3, 5, 6, 7 "
        "bytes); KvmVcpu presents each as naturally aligned 1/2/4/8-byte requests, which may cut the "
        "bytes differently from vmmio's own split (same bytes, same order). raw_exits keeps Linux's pieces",
        "yes: page-crossing operands in the window; the presentation has matched vmmio's split so far",
        _odd_pieces,
    ),
    "clflush-reads": Documented(
        "CLFLUSH of an MMIO address: Linux's emulator fetches the operand, a 1-byte device read the CPU "
        "and vmmio do not make (tests/test_backend_kvm.py::test_clflush_of_mmio_legitimately_differs)",
        "no: tests/oracles/gen.py has no cache-flush forms (no data to compare)",
        _clflush,
    ),
    "string-io-batching": Documented(
        "INS/OUTS: KVM reports string port I/O as one exit with a count, reads ahead for REP INS and "
        "writes the buffered data to MMIO as merged writes of up to 8 bytes "
        "(tests/test_backend_kvm.py::test_rep_ins_to_mmio_legitimately_differs)",
        "no: tests/oracles/gen.py has no port I/O forms",
        _string_io,
    ),
    "split-store-fault": Documented(
        "a page-crossing store whose second page faults: Linux writes the first page's part before it "
        "raises #PF; the CPU (and vmmio) write nothing",
        "no: every generated access is mapped (window, RAM area), so no store faults half way",
        _split_store_fault,
    ),
    "movsxd-r16-dword": Documented(
        "MOVSXD r16 (66 63): Linux reads a dword (SrcMem32). Not a deviation any more: the host CPU reads a "
        "dword too, and vmmio was changed to match (tests/test_oracle_native.py::"
        "test_regression_movsxd_r16_reads_a_dword); KVM and vmmio now agree",
        "yes: every MOVSXD r16 case; nothing to explain (kept for the record)",
        lambda case, kvm, vmmio: False,
    ),
}


# --- the rest of the integer instruction set

# Forms Linux's emulator has no handler for: it reports an emulation failure (KvmVcpu: an INST_EMUL exit,
# NOT_EMULATED), after whatever it read. Whole families of them are not run on KVM at all.
NOT_EMULATED = frozenset({"popcnt", "cmpxchg16b", "crc32", "adcx", "adox", "andn", "bextr", "blsi"})
NOT_EMULATED |= {"blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx"}
NOT_EMULATED_FAMILIES = {
    "crc32": "CRC32 (F2 0F 38 F0/F1): no handler in Linux's emulator",
    "adx": "ADCX/ADOX (0F 38 F6): no handler in Linux's emulator",
    "bmi": "the VEX-encoded BMI1/BMI2 forms: Linux's emulator decodes no VEX instruction",
}


def _not_emulated(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    mnemonic = case.form.split()[1] if case.form.startswith("lock ") else _mnemonic(case)
    return "NOT_EMULATED" in kvm.outcome.error and mnemonic in NOT_EMULATED


def _movbe_reads_first(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """Both raise #UD for MOVBE (the guest's CPUID lacks it); KVM read the operand first."""
    if _mnemonic(case) != "movbe" or kvm.outcome.fault != "#UD" or vmmio.fault != "#UD":
        return False
    extra = _extra(kvm.outcome.requests, vmmio.requests)
    return _same_state(kvm.outcome, vmmio) and extra is not None and all(not r.write for r in extra)


def _upper_half_cleared(kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """The only difference: KVM cleared the upper half of one register that vmmio left whole."""
    differ = [n for n in range(16) if kvm.outcome.gprs[n] != vmmio.gprs[n]]
    if len(differ) != 1 or kvm.outcome.gprs[differ[0]] != vmmio.gprs[differ[0]] & 0xFFFF_FFFF:
        return False
    same = replace(kvm.outcome, gprs=vmmio.gprs)
    return _same_state(same, vmmio) and kvm.outcome.requests == vmmio.requests


def _bsf_zero_upper(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """A 32-bit BSF/BSR with a zero source: the destination register's upper half cleared by KVM only."""
    in_form = "zero-source" in case.tags and case.form.endswith("r32, r/m32")
    return in_form and _upper_half_cleared(kvm, vmmio)


def _cmpxchg_reg_upper(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """Register-form CMPXCHG r32 run by the vCPU itself (no exit): the destination's upper half cleared."""
    in_form = case.form == "cmpxchg r/m32, r32" and "reg-form" in case.tags and not kvm.raw
    return in_form and _upper_half_cleared(kvm, vmmio)


DOCUMENTED |= {
    "not-emulated": Documented(
        "POPCNT and CMPXCHG16B (and CRC32, ADCX/ADOX and the VEX BMI forms, whose families are not run on "
        "KVM): Linux's emulator has no handler (CMPXCHG16B: it reads the 16 bytes, then gives up) and KVM "
        "reports an emulation failure, an INST_EMUL exit through KvmVcpu. The same for a VEX form with LOCK: "
        "the CPU's #UD is intercepted by KVM, whose emulator cannot decode VEX",
        "yes: POPCNT in the bitcount family, CMPXCHG16B in the atomic family, VEX forms in lock_ud",
        _not_emulated,
    ),
    "cmpxchg-reg-upper": Documented(
        "register-form CMPXCHG r32 whose compare fails, run by the KVM vCPU itself (no MMIO, no exit): the "
        "vCPU here writes the destination back as a 32-bit register, clearing its upper half, as the SDM's "
        "pseudo-code reads; the host CPU (Intel) leaves it whole, and vmmio follows the host",
        "yes: register forms in the atomic family",
        _cmpxchg_reg_upper,
    ),
    "movbe-reads-first": Documented(
        "MOVBE on a guest whose CPUID lacks it (KVM's supported CPUID here has no MOVBE): both raise #UD, "
        "but Linux's emulator reads the operand of the load form first (em_movbe checks the CPUID after the "
        "operand fetch); a CPU without MOVBE, and vmmio, raise #UD before any access",
        "yes: the load form of MOVBE in the extmove family",
        _movbe_reads_first,
    ),
    "bsf-zero-upper": Documented(
        "BSF/BSR r32 (or TZCNT/LZCNT, which are BSF/BSR on this guest's CPU) with a zero source: Intel "
        "leaves the destination undefined, the host CPU and vmmio leave it whole; Linux's emulator here "
        "sometimes writes it back as a 32-bit register, clearing the upper half, depending on what the vCPU "
        "executed before (a register-form BSF r64 just before is enough)",
        "yes: zero sources in the bitscan and bitcount families",
        _bsf_zero_upper,
    ),
}


def documented_deviation(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> str | None:
    """The DOCUMENTED key that explains KVM's whole difference from vmmio, or None."""
    for key, doc in DOCUMENTED.items():
        if doc.explains(case, kvm, vmmio):
            return key
    return None


# --------------------------------------------------------------------------------------------------
# Deviations found by this oracle (the host CPU sides with vmmio)
# --------------------------------------------------------------------------------------------------


def _case(name: str, code: str, accesses: str, fs_base: int = 0x1000) -> Case:
    """`code` addresses fs:[rbx] = WINDOW (rbx = WINDOW - fs_base); `accesses` like "R4"."""
    gprs = [0] * 16
    gprs[3] = WINDOW - fs_base
    plan = tuple(Access(WINDOW, int(a[1:]), a[0] == "W") for a in accesses.split())
    case = Case(name, "known", bytes.fromhex(code), tuple(gprs), 0x2, fs_base, 0, 1, (), WINDOW, plan)
    return replace(case, tags=frozenset({"null-seg-last"}))


KVM_DEVIATIONS: dict[str, KvmDeviation] = {
    "null-seg-last": KvmDeviation(
        "An ES/CS/SS/DS prefix after an FS/GS prefix: in 64-bit mode the CPU ignores the null prefix and "
        "keeps the FS/GS base (vmmio too). Linux's decoder lets the last segment prefix win, and ES/CS/SS/DS "
        "have base 0 in 64-bit mode, so the emulator recomputes the operand address without the FS/GS "
        "base. The CPU faulted on the right GPA, but the emulator then accesses another address: other "
        "RAM (read, or silently overwritten: seen corrupting the guest's page tables), another MMIO GPA, "
        "or an unmapped one (a #PF injected into the guest at the wrong address).",
        "arch/x86/kvm/emulate.c, x86_decode_insn: `case 0x26: case 0x2e: case 0x36: case 0x3e: "
        "ctxt->seg_override = (ctxt->b >> 3) & 3`; seg_base() is 0 below FS in X86EMUL_MODE_PROT64",
        lambda case: "null-seg-last" in case.tags,
        _case("mov eax, fs:[rbx] + trailing DS prefix", "643e8b03", "R4"),
    ),
}


def _form(*prefixes: str) -> Callable[[Case], bool]:
    return lambda case: case.form.startswith(prefixes)


_T = 0x30_0040  # a branch target in the code page


def _enter_nested(case: Case) -> bool:
    return case.form.startswith("enter imm16, ") and case.form.split(", ")[1][0] != "0"


# The stack, control-transfer, segment and system families (oracles/gen_ctl.py). The host CPU referees the
# CPL 3 ones; the privileged ones (env "kernel") have only the SDM, cited in each reason.
KVM_DEVIATIONS.update(
    {
        "popf-nt": KvmDeviation(
            "POPF at CPL 3 leaves NT alone in Linux's emulator; the CPU loads it from the image (SDM POPF: "
            "all non-reserved flags but IF, IOPL, VIP, VIF, VM and RF; the host CPU sets NT)",
            "arch/x86/kvm/emulate.c, emulate_popf(): the flags it lets POPF change",
            _form("popf"),
            replace(simple_case("popfq", "stack_ops", "9d", q8(0x4202), "R8@0", ""), extra_flags=0x24_7300),
        ),
        "enter-nested": KvmDeviation(
            "ENTER with a nesting level: Linux's emulator gives up (an emulation failure: "
            "KVM_EXIT_INTERNAL_ERROR, an INST_EMUL exit here); the CPU copies the frame pointers (the host "
            "CPU does)",
            "arch/x86/kvm/emulate.c, em_enter(): only nesting level 0",
            _enter_nested,
            replace(
                simple_case("enter imm16, 1", "enter_leave", "c8000001", b"", "W8@-8 W8@-16", ""),
                gprs=(0, 0, 0, 0, 0x4000_0100, 0x20_0080, *[0] * 10),
            ),
        ),
        "enter16": KvmDeviation(
            "ENTER with a 16-bit operand size: Linux's emulator pushes rBP with 8 bytes (the stack size), so "
            "RSP, RBP and the stack are off; the CPU pushes BP, a word (the host CPU does)",
            "arch/x86/kvm/emulate.c, em_enter(): the push of rBP",
            lambda case: case.form.startswith("enter") and case.form.endswith("(16-bit)"),
            simple_case("enter imm16, 0 (16-bit)", "enter_leave", "66c8000000", b"", "W2@-2", "enter16"),
        ),
        "verr-verw": KvmDeviation(
            "VERR/VERW: Linux's emulator has no such instructions: #UD injected at CPL 3, an emulation "
            "failure at CPL 0; the CPU sets ZF (the host CPU does)",
            "arch/x86/kvm/emulate.c, the 0F 00 group table: no entries for /4 and /5",
            _form("verr", "verw"),
            simple_case("verr m16", "sreg", "0f0023", b"+\0", "R2@0", ""),
        ),
        "sreg-rex.r": KvmDeviation(
            "MOV to or from a segment register with REX.R: Linux's emulator takes REX.R into the Sreg "
            "number and raises #UD; the CPU ignores REX.R there (the host CPU loads/stores the Sreg)",
            "arch/x86/kvm/emulate.c, em_mov_rm_sreg() / em_mov_sreg_rm(): the ModRM.reg they check",
            lambda case: "sreg-rex.r" in case.tags,
            simple_case("mov m16, ds (REX.R)", "sreg", "448c1b", b"", "W2@0", "sreg-rex.r"),
        ),
        "retf-pop": KvmDeviation(
            "RET far in 64-bit mode with a 32/64-bit operand size: Linux's emulator moves RSP one slot too "
            "far (RSP + 12 for a 32-bit RETF); the CPU pops EIP and CS (RSP + 8; the host CPU does)",
            "arch/x86/kvm/emulate.c, em_ret_far()",
            lambda case: case.form.startswith("retf") and "(16-bit)" not in case.form,
            replace(simple_case("retf", "far", "cb", q4(_T, 0x33), "R4@0 R4@4", ""), next_rip=_T),
        ),
        "far-system": KvmDeviation(
            "JMP/CALL far to a system descriptor (an LDT, a busy TSS): Linux's emulator gives up on any "
            "system descriptor (an emulation failure, an INST_EMUL exit here); the CPU raises #GP(selector) "
            "for these (the host CPU does). vmmio raises it too, and exits INST_EMUL for what would switch "
            "tasks or pass a gate",
            "arch/x86/kvm/emulate.c, __load_segment_descriptor(): X86EMUL_UNHANDLEABLE for a system "
            "descriptor loaded by a far CALL/JMP",
            lambda case: "far-system" in case.tags,
            replace(
                simple_case("jmp far m16:32", "far", "ff2b", q4(_T) + b"\x53\0", "R4@0 R2@4", "far-system"),
                expect="#GP",
            ),
        ),
        "compat-rsp": KvmDeviation(
            "A far JMP from 64-bit code into compatibility mode: Linux's emulator keeps RSP[63:32]; the SDM "
            "leaves the upper halves undefined after such a switch, and the host CPU (Intel) clears RSP's "
            "(vmmio too)",
            "arch/x86/kvm/emulate.c, em_jmp_far(): RSP is not touched",
            lambda case: "compat-rsp" in case.tags,
            replace(
                simple_case("jmp far m16:32", "far", "ff2b", q4(_T) + b"\x23\0", "R4@0 R2@4", "compat-rsp"),
                gprs=(0, 0, 0, 0x4000_0100, 0x1234_5678_0000_1000, *[0] * 11),
                next_rip=_T,
            ),
        ),
        "call-far-push": KvmDeviation(
            "CALL far with its frame in MMIO: Linux's emulator keeps only the last MMIO write of an "
            "instruction (each access starts a new fragment list, and writes complete after the "
            "instruction), so the push of CS is lost; the CPU writes CS, then the return address (the host "
            "CPU does)",
            "arch/x86/kvm/x86.c, emulator_read_write(): `vcpu->mmio_nr_fragments = 0` on every access",
            _form("call far m16:"),
            replace(
                simple_case(
                    "call far m16:64", "far", "48ff1b", q8(_T) + b"3\0", "R8@0 R2@8 W8@-8 W8@-16", ""
                ),
                next_rip=_T,
            ),
        ),
        "call-noncanonical": KvmDeviation(
            "CALL to a non-canonical target: Linux's emulator raises #GP(0) before the push; the host CPU "
            "has stored the return address when it raises #GP(0) (vmmio makes the same MMIO write)",
            "arch/x86/kvm/emulate.c, em_call_near_abs() / em_call(): the target is checked first",
            lambda case: "noncanonical" in case.tags and case.form.startswith("call"),
            replace(
                simple_case("call m64", "branch", "ff13", q8(1 << 47), "R8@0 W8@-8", "noncanonical"),
                expect="#GP",
            ),
        ),
        "iret-protected": KvmDeviation(
            "IRET in protected or long mode: Linux's emulator implements only the real-mode IRET (an "
            "emulation failure otherwise); the host CPU returns",
            "arch/x86/kvm/emulate.c, em_iret()",
            _form("iret"),
            replace(
                simple_case(
                    "iretq",
                    "far",
                    "48cf",
                    q8(_T, 0x33, 0x202, 0x4000_0200, 0x2B),
                    "R8@0 R8@8 R8@16 R8@24 R8@32",
                    "",
                ),
                next_rip=_T,
            ),
        ),
        "desc-table-mmio": KvmDeviation(
            "SGDT/SIDT/LGDT/LIDT with an MMIO operand: Linux's emulator reads and writes these operands as "
            "guest memory directly and cannot reach a device: it re-runs the instruction forever (LGDT/LIDT "
            "with an MMIO read each time, SGDT/SIDT without any exit). SDM: the operand is ordinary memory",
            "arch/x86/kvm/emulate.c, emulate_store_desc_ptr() / em_lgdt_lidt(): segmented_*_std",
            _form("sgdt", "sidt", "lgdt", "lidt"),
            simple_case("sgdt m", "system", "0f0103", b"", "W2@0 W8@2", "", "kernel"),
            runnable=False,
        ),
        "sldt-str-width": KvmDeviation(
            "SLDT/STR to memory: Linux's emulator reads the destination first and writes the operand size (8 "
            "bytes with REX.W); SDM: a 16-bit store whatever the operand size",
            "arch/x86/kvm/emulate.c, em_sldt() / em_str() (DstMem, without Mov)",
            _form("sldt", "str"),
            simple_case("str m16", "system", "480f000b", b"", "W2@0", "", "kernel"),
        ),
        "ltr-ti": KvmDeviation(
            "LTR of a selector with TI set (the LDT): Linux's emulator raises #GP(0); SDM LTR: #GP(selector)",
            "arch/x86/kvm/emulate.c, __load_segment_descriptor() for TR",
            lambda case: "ltr-ti" in case.tags,
            replace(
                simple_case("ltr m16", "system", "0f001b", b"\x64\0", "R2@0", "ltr-ti", "kernel"),
                expect="#GP",
            ),
        ),
        "mov-sreg-width": KvmDeviation(
            "MOV m16, Sreg with REX.W: Linux's emulator stores 8 bytes (the operand size); the CPU stores "
            "the word, whatever the operand size (the host CPU writes 2 bytes)",
            "arch/x86/kvm/emulate.c, em_mov_rm_sreg(): the destination size",
            lambda case: "mov-sreg-rex.w" in case.tags,
            simple_case("mov m16, ds (REX.W)", "sreg", "488c1b", b"", "W2@0", "mov-sreg-rex.w"),
        ),
        "far-pointer-read": KvmDeviation(
            "A far pointer (LSS/LFS/LGS, far JMP/CALL through memory): Linux's emulator reads offset and "
            "selector as one operand (m16:16 as one 4-byte request, a page-crossing one in pieces across "
            "both fields); vmmio reads the offset, then the selector, as the SDM's pseudo-code has them. "
            "Same bytes, same final state (the host CPU agrees with both); which bus transactions the CPU "
            "makes the host cannot show",
            "arch/x86/kvm/emulate.c, the SrcMemFAddr operand",
            lambda case: "m16:" in case.form,  # listed last: the far-transfer deviations above come first
            simple_case("lfs ax, m16:16", "sreg", "660fb403", b"\x34\x12+\0", "R2@0 R2@2", ""),
            requests_only=True,
        ),
    }
)


def kvm_unrunnable(case: Case) -> str | None:
    """The KVM_DEVIATIONS key of a deviation KVM never finishes (whose trait this case has), or None."""
    for key, dev in KVM_DEVIATIONS.items():
        if not dev.runnable and dev.trait(case):
            return key
    return None


def kvm_deviation(case: Case) -> str | None:
    """The KVM_DEVIATIONS key whose trait this case has (a disagreement may be that deviation), or None."""
    for key, dev in KVM_DEVIATIONS.items():
        if dev.trait(case):
            return key
    return None


# --------------------------------------------------------------------------------------------------
# Vector moves (tests/test_oracle_vector.py)
# --------------------------------------------------------------------------------------------------


def kvm_vector_not_comparable(case: Case) -> str | None:
    """Why a vector case says nothing on KVM, or None: the KVM oracle's guest runs at CPL 0 (RFLAGS.AC
    raises no #AC there) and every GPA past the window is an MMIO hole (no #PF)."""
    if "null-seg-last" in case.tags:
        return "null-seg-last"  # KVM_DEVIATIONS["null-seg-last"]
    if case.rflags & 0x40000:
        return "ac-at-cpl0"
    if "past-end" in case.tags:
        return "past-end-is-mmio"
    return None


def kvm_vector_deviation(case: Case, kvm: KvmOutcome, vmmio: Outcome | None = None) -> str | None:
    """The VECTOR_DOCUMENTED key that explains KVM's difference from vmmio on a vector case, or None."""
    for key, doc in VECTOR_DOCUMENTED.items():
        if doc.explains(case, kvm, vmmio if vmmio is not None else kvm.outcome):
            return key
    return None


def _vector_not_emulated(case: Case, kvm: KvmOutcome, _vmmio: Outcome) -> bool:
    return "InstEmulExit" in kvm.outcome.error


def _fragments(case: Case, kvm: KvmOutcome, vmmio: Outcome) -> bool:
    """Same state, same bytes in the same order, cut differently: Linux's 8-byte fragments."""
    wide = any(isinstance(x, KvmMmio) and x.length == 8 and x.gpa % 8 for x in kvm.raw)
    return wide and _same_state(kvm.outcome, vmmio) and _runs(kvm.outcome.requests) == _runs(vmmio.requests)


VECTOR_DOCUMENTED: dict[str, Documented] = {
    "vector-not-emulated": Documented(
        "Linux's emulator has no semantics for this vector move (an emulation failure: "
        "KVM_EXIT_INTERNAL_ERROR, which KvmVcpu reports as InstEmulExit(NOT_EMULATED)); vmmio emulates it",
        "yes: the forms Linux's emulator lacks, whenever their operand is in the window",
        _vector_not_emulated,
    ),
    "wide-access-fragments": Documented(
        "Linux's emulator cuts an access wider than 8 bytes into 8-byte fragments from its first byte "
        "(a misaligned MOVUPS at +0x13: 8 bytes at +0x13, then at +0x1b); vmmio cuts it into naturally "
        "aligned pieces (1, 4, 8, 2, 1 bytes there). The same bytes in the same order; KvmVcpu presents "
        "each 8-byte fragment as one request, as vmmio presents any 8-byte access",
        "yes: misaligned 16-byte operands of the SSE moves Linux emulates",
        _fragments,
    ),
}
