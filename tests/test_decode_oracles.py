"""The decoder against independent decoders: iced-x86 for validity, length, mnemonic, immediates, memory
operands and operand size over whole opcode maps and random bytes; capstone as a second opinion on lengths
of the forms the emulator runs.

iced-x86 runs with DecoderOptions.NONE, which rejects what an Intel CPU rejects (LOCK on a non-lockable
form or a register destination, 66h/F2/F3/REX before VEX, reserved EVEX bits, CR1/CR5-7, ...).
NO_INVALID_CHECK would accept those, which is not what the CPU does; AMD would honour 66h on 64-bit near
branches (AMD CPUs do, Intel CPUs ignore it; this decoder follows Intel, as iced's default does); MPX,
CYRIX, JMPE, MOV_TR, ... decode encodings that current CPUs treat as NOPs or #UD.

For legacy encodings no disagreement with iced remains in the swept space. Two kinds of difference are
accepted, each checked rather than skipped (see `compare`):

1. Input that runs out. iced's path for an undefined opcode asks for a ModRM byte it does not use, so an
   undefined opcode at the very end of the input is "no more bytes" for iced but UNDEFINED here. And an
   instruction that needs more than 15 bytes is #GP on the CPU whether or not the input holds them
   (TOO_LONG here), while iced reports "no more bytes" when the input ends first. Both are checked by
   decoding the input padded with zeros: iced must then call it invalid.
2. VEX/EVEX/XOP: this decoder knows which opcode bytes exist in each map and which take an immediate, not
   which pp/L/W/mod/vvvv combinations are defined, so an encoding iced calls invalid may decode here (with
   the length the CPU would give it). Harmless for a VMM: the CPU raises #UD on such bytes before any
   memory access, so they never reach MMIO emulation. Everything iced decodes must decode here, with the
   same length and the same memory operand (EVEX disp8*N and VSIB vector indexes included).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import capstone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iced_x86 import (
    Code,
    Decoder,
    DecoderError,
    Instruction,
    Mnemonic,
    OpKind,
    Register,
    Register_,
    RegisterInfo,
)

from vmmio.x86.decode import decode
from vmmio.x86.format import format_insn
from vmmio.x86.insn import DecodeError, DecodeStatus, Encoding, Insn, OpMap
from vmmio.x86.regs import NO_REG, RIP_REG, VEC_REG, XMM_REG, YMM_REG, ZMM_REG, Seg

MODES = (16, 32, 64)
MAPS = {"": OpMap.ONE, "0f": OpMap.M0F, "0f38": OpMap.M0F38, "0f3a": OpMap.M0F3A}
PAD = bytes(16)

_REGISTER_NAMES = {
    v: k.lower() for k, v in vars(Register).items() if not k.startswith("_") and isinstance(v, int)
}
_ICED_MNEMONIC = {
    v: k.lower() for k, v in vars(Mnemonic).items() if not k.startswith("_") and isinstance(v, int)
}
# iced names that differ from the Intel mnemonic this decoder reports.
_MNEMONIC_ALIASES = {
    ("reservednop", "nop"),
    ("getsecq", "getsec"),
    ("undoc", "via_undoc"),
    ("pcmpestrm64", "pcmpestrm"),
    ("pcmpestri64", "pcmpestri"),
}

# Forms the emulator runs (moves, ALU, bit ops, stack, strings): their operand size is compared too.
EMULATED: set[tuple[OpMap, int]] = {
    (OpMap.ONE, op)
    for op in itertools.chain(
        *(range(base, base + 4) for base in range(0x00, 0x40, 8)),
        range(0x50, 0x60),
        (0x68, 0x6A, 0x80, 0x81, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8F),
        range(0xA0, 0xB0),
        (0xC6, 0xC7, 0xF6, 0xF7, 0xFE, 0xFF),
    )
} | {
    (OpMap.M0F, op)
    for op in itertools.chain(
        (0xA3, 0xAB, 0xB0, 0xB1, 0xB3, 0xB6, 0xB7, 0xBA, 0xBB, 0xBE, 0xBF, 0xC0, 0xC1, 0xC3),
        range(0x40, 0x50),
    )
}


def _iced(code: bytes, mode: int) -> tuple[Decoder, Instruction]:
    dec = Decoder(mode, code)
    return dec, dec.decode()


def iced_outcome(code: bytes, mode: int) -> str | int:
    """ "truncated", "invalid" or the length."""
    dec, ins = _iced(code, mode)
    if dec.last_error == DecoderError.NO_MORE_BYTES:
        return "truncated"
    if ins.code == Code.INVALID:
        return "invalid"
    return int(ins.len)


def _reg(reg: Register_) -> int:
    if reg == Register.NONE:
        return NO_REG
    if reg in (Register.RIP, Register.EIP):
        return RIP_REG
    if Register.XMM0 <= reg <= Register.ZMM31:
        info = RegisterInfo(reg)  # a VSIB index
        return {16: XMM_REG, 32: YMM_REG, 64: ZMM_REG}[info.size] + int(info.number)
    return int(RegisterInfo(reg).number)


def _mem_mismatch(code: bytes, mode: int, insn: Insn) -> str | None:
    """Compare the memory operand and, for emulated forms, the operand size with iced's."""
    ins = _iced(code, mode)[1]
    has_mem = any(ins.op_kind(k) == OpKind.MEMORY for k in range(ins.op_count))
    if insn.mem is None and insn.modrm < 0:
        has_mem = False  # implicit memory (xlat, string ops, maskmovq): not a ModRM/moffs operand
    if (insn.mem is not None) != has_mem:
        return f"memory operand: ours {insn.mem}, iced {'yes' if has_mem else 'none'}"
    if insn.mem is not None:
        m = insn.mem
        base, index = ins.memory_base, ins.memory_index
        if base != Register.NONE and base not in (Register.RIP, Register.EIP):
            asz = RegisterInfo(base).size
        elif index != Register.NONE and _reg(index) < VEC_REG:
            asz = RegisterInfo(index).size
        elif base in (Register.RIP, Register.EIP):
            asz = 8 if base == Register.RIP else 4
        else:
            asz = ins.memory_displ_size
        mask = (1 << (8 * m.addr_size)) - 1
        disp = m.disp + (insn.length if m.base == RIP_REG else 0)
        seg = int(ins.memory_segment) - int(Register.ES)
        if insn.mode == 64 and seg < int(Seg.FS):
            # iced reports the ES/CS/SS/DS prefix as written; the CPU ignores it in 64-bit mode and keeps
            # the default segment (SS for RSP/RBP-based operands), which decides #SS versus #GP.
            stack = base in (Register.RSP, Register.RBP, Register.ESP, Register.EBP)
            seg = int(Seg.SS) if stack else int(Seg.DS)
        theirs = (
            _reg(base),
            _reg(index),
            ins.memory_index_scale if index != Register.NONE else 1,
            ins.memory_displacement & mask,
            seg,
            asz,
        )
        ours = (m.base, m.index, m.scale, disp & mask, m.seg, m.addr_size)
        if ours != theirs:
            return f"memory operand (base, index, scale, disp, seg, asz): ours {ours}, iced {theirs}"
    if (insn.opmap, insn.opcode) in EMULATED:
        osz = ins.op_code().operand_size
        if osz and osz != insn.opsize * 8:
            return f"operand size: ours {insn.opsize * 8}, iced {osz}"
    return None


def _imm_mismatch(code: bytes, mode: int, insn: Insn) -> str | None:
    dec, ins = _iced(code, mode)
    offs = dec.get_constant_offsets(ins)
    far = insn.mnemonic in ("call", "jmp") and insn.imm_size and offs.has_immediate2
    if insn.opmap == OpMap.M3DNOW or far:
        return None  # 3DNow! suffix and far pointers: iced splits these differently; lengths still agree
    size = offs.immediate_size if offs.has_immediate else 0
    if insn.imm_size != size:
        return f"immediate size: ours {insn.imm_size}, iced {size}"
    if size:
        start = offs.immediate_offset
        value = int.from_bytes(code[start : start + size], "little", signed=True)
        if value != insn.imm:
            return f"immediate: ours {insn.imm}, iced bytes {value}"
    return None


def compare(code: bytes, mode: int, deep: bool = True) -> str | None:
    """None when the decoder agrees with iced-x86 (up to the rules in the module docstring)."""
    ours = decode(code, mode)
    theirs = iced_outcome(code, mode)
    if isinstance(ours, Insn):
        if isinstance(theirs, int):
            if ours.length != theirs:
                return f"length: ours {ours.length}, iced {theirs}"
            if not deep:
                return None
            if ours.encoding != Encoding.LEGACY:
                return _mem_mismatch(code, mode, ours)  # VSIB index, EVEX disp8*N
            ins = _iced(code, mode)[1]
            name = _ICED_MNEMONIC[ins.mnemonic]
            if name != ours.mnemonic and (name, ours.mnemonic) not in _MNEMONIC_ALIASES:
                return f"mnemonic: ours {ours.mnemonic}, iced {name}"
            return _imm_mismatch(code, mode, ours) or _mem_mismatch(code, mode, ours)
        if ours.encoding != Encoding.LEGACY:
            return None  # rule 2
        return f"ours {ours.mnemonic}/{ours.length}, iced {theirs}"
    status = ours.status
    if status == DecodeStatus.BAD_LOCK and 0xF0 not in code:
        return "BAD_LOCK without a LOCK prefix"
    if status == DecodeStatus.TRUNCATED:
        if theirs == "truncated":
            return None
        padded = decode(code + PAD, mode)
        if isinstance(padded, DecodeError) and theirs == "invalid":
            return None  # we needed more bytes to see what iced saw: still invalid
        if isinstance(padded, Insn) and padded.encoding != Encoding.LEGACY and theirs == "invalid":
            return None  # rule 2
        return f"ours truncated, iced {theirs}"
    if theirs == "invalid":
        return None
    if theirs == "truncated" and iced_outcome(code + PAD, mode) == "invalid":
        return None  # rule 1
    return f"ours {status.name}, iced {theirs}"


def _run(cases: Iterator[tuple[bytes, int]], deep: bool = True) -> None:
    failures = []
    for code, mode in cases:
        problem = compare(code, mode, deep)
        if problem:
            failures.append(f"{mode}-bit {code.hex(' ')}: {problem}")
            if len(failures) >= 20:
                break
    assert not failures, "\n".join(failures)


def _tail(modrm: int) -> bytes:
    """Bytes after a ModRM: a SIB (varied with the ModRM so every shape shows up) and distinct disp/imm."""
    return bytes([(modrm * 37 + 0x25) & 0xFF]) + bytes(range(0x11, 0xFF, 0x11))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("esc", list(MAPS))
def test_every_opcode_every_modrm(mode: int, esc: str) -> None:
    prefix = bytes.fromhex(esc)
    _run((prefix + bytes((op, m)) + _tail(m), mode) for op in range(256) for m in range(256))


_PREFIXES = ["66", "67", "f2", "f3", "f0", "66 f2", "f3 66", "2e", "26 65", "f0 66"]
_PREFIXES_64 = ["48", "41", "44", "42", "4f", "66 48", "48 66", "40", "f0 48", "f3 48", "48 2e"]
# Every reg field with memory forms (mod 0/1/2; rm 0, 4 = SIB, 5 = disp32/RIP, 6) and a register form.
_SOME_MODRM = [r << 3 | x for r in range(8) for x in ((0x04, 0x85, 0xC1) if r % 2 else (0x00, 0x45, 0xC6))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("esc", list(MAPS))
def test_every_opcode_with_prefixes(mode: int, esc: str) -> None:
    prefixes = _PREFIXES + (_PREFIXES_64 if mode == 64 else [])
    cases = (
        (bytes.fromhex(p + esc) + bytes((op, m)) + _tail(m), mode)
        for p in prefixes
        for op in range(256)
        for m in _SOME_MODRM
    )
    _run(cases)


@pytest.mark.parametrize("mode", MODES)
def test_3dnow_suffixes(mode: int) -> None:
    forms = [bytes.fromhex(x) for x in ("c1", "00", "40 7f", "04 88", "80 00 01 00 00")]
    _run((b"\x0f\x0f" + f + bytes((s,)) + bytes(8), mode) for f in forms for s in range(256))


def _vector_cases(mode: int) -> Iterator[tuple[bytes, int]]:
    modrms = [bytes.fromhex(x) for x in ("00", "04 88", "05 00 10 00 00", "44 24 10", "80 00 01 00 00", "c1")]
    tail = bytes(range(0x11, 0x99, 0x11))
    rng = random.Random(mode)
    for vmap in range(8):  # VEX map 0 and 4-7 are undefined
        for op in range(256):
            pp, l, w = rng.randrange(4), rng.randrange(2), rng.randrange(2)
            for m in modrms:
                b2 = w << 7 | 0x78 | l << 2 | pp
                yield bytes((0xC4, 0xE0 | vmap, b2, op)) + m + tail, mode
                yield bytes((0xC4, 0x60 | vmap, b2 ^ 0x80, op)) + m + tail, mode  # R/X/B flipped
    for op in range(256):
        for pp in range(4):
            for m in modrms:
                yield bytes((0xC5, 0xF8 | pp | rng.randrange(2) << 2, op)) + m + tail, mode
    for vmap in range(8):
        for op in range(256):
            for m in modrms:
                p1 = rng.randrange(2) << 7 | 0x7C | rng.randrange(4)
                p2 = rng.randrange(3) << 5 | rng.randrange(2) << 4 | 0x08 | rng.randrange(8)
                yield bytes((0x62, 0xF0 | vmap, p1, p2, op)) + m + tail, mode
    for vmap in range(8, 12):
        for op in range(256):
            for m in modrms:
                yield (
                    bytes((0x8F, 0xE0 | vmap, rng.randrange(2) << 7 | 0x78 | rng.randrange(2) << 2, op))
                    + m
                    + tail,
                    mode,
                )
    # Prefixes in front of VEX/EVEX/XOP: allowed (segment, 67) or #UD (66, F2, F3, F0, REX).
    for pfx in ("67", "2e", "66", "f2", "f3", "f0", "40", "4c"):
        for lead in ("c5 f8 10", "c4 e2 79 18", "62 f1 7c 48 10", "8f e8 78 c2"):
            for m in modrms:
                yield bytes.fromhex(pfx + lead) + m + tail, mode


@pytest.mark.parametrize("mode", MODES)
def test_vex_evex_xop_lengths_and_memory_operands(mode: int) -> None:
    _run(_vector_cases(mode))


def _run_counting(cases: list[tuple[bytes, int]]) -> int:
    """`_run`, returning how many cases iced decoded (so were compared field by field)."""
    _run(iter(cases))
    return sum(isinstance(iced_outcome(code, mode), int) for code, mode in cases)


@pytest.mark.parametrize("mode", (32, 64))
def test_evex_compressed_displacement(mode: int) -> None:
    """Every EVEX opcode with each mandatory prefix, W, vector length and EVEX.b, with a disp8 memory
    operand: the displacement must be disp8*N as iced computes it from the form's tuple type
    (SDM Vol. 2, 2.7.5). A SIB form and a plain one, so VSIB forms are covered too."""
    rng = random.Random(mode)
    forms = [bytes.fromhex(m) for m in ("44 24 f0", "48 7f")]  # [rsp+xmm4*1-16*N] / [rax+127*N]
    cases = []
    for vmap in (1, 2, 3, 5, 6):
        for op, pp, w, vl, b in itertools.product(range(256), range(4), range(2), range(3), range(2)):
            p2 = vl << 5 | b << 4 | 0x08 | rng.randrange(2)
            cases.append(
                (bytes((0x62, 0xF0 | vmap, w << 7 | 0x7C | pp, p2, op)) + rng.choice(forms) + PAD, mode)
            )
    compared = _run_counting(cases)
    assert compared > 2000, compared  # about 1,000 EVEX (map, pp, W) forms exist with a memory operand


@pytest.mark.parametrize("mode", MODES)
def test_vsib_index(mode: int) -> None:
    """Gathers and scatters (VEX and EVEX): the SIB index is a vector register, index 100b included,
    extended by X and (EVEX) V'; without a SIB byte or with 16-bit addressing the form is #UD."""
    leads = []
    for op in (0x90, 0x91, 0x92, 0x93):
        for x, w, vl in itertools.product(range(2), range(2), range(2)):
            leads.append(bytes((0xC4, 0xE2 ^ x << 6, w << 7 | 0x78 | vl << 2 | 1, op)))
    for op in (0x90, 0x91, 0x92, 0x93, 0xA0, 0xA1, 0xA2, 0xA3, 0xC6, 0xC7):
        for x, vp, w, vl in itertools.product(range(2), range(2), range(2), range(3)):
            p2 = (2 if op >= 0xC6 else vl) << 5 | (vp ^ 1) << 3 | 1  # V' is stored inverted; k1
            leads.append(bytes((0x62, 0xF2 ^ x << 6, w << 7 | 0x7D, p2, op)))
    # SIB index 4 (no index outside VSIB), 7, with each mod and scale; no SIB (#UD); ModRM.reg varied.
    forms = [
        "0c 20",
        "0c e5 00 01 00 00",
        "4c 60 08",
        "8c a1 00 01 00 00",
        "14 38",
        "08",
        "54 24 f0",
        "0c 26",
    ]
    cases = [
        (bytes.fromhex(p + lead.hex() + m) + PAD, mode) for p in ("", "67") for lead in leads for m in forms
    ]
    compared = _run_counting(cases)
    assert compared > 300, compared
    named = 0
    for code, _ in cases:
        ours, ins = decode(code, mode), _iced(code, mode)[1]
        if isinstance(ours, Insn) and ours.mem is not None and ours.mem.vsib and ins.code != Code.INVALID:
            theirs = _REGISTER_NAMES[ins.memory_index]
            assert theirs in format_insn(ours), f"{code.hex(' ')}: {format_insn(ours)}, iced index {theirs}"
            named += 1
    assert named > 300, named


_PREFIX_BYTES = [0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, *range(0x40, 0x50)]
_ESCAPES = [
    b"",
    b"",
    b"\x0f",
    b"\x0f\x38",
    b"\x0f\x3a",
    b"\xc4",
    b"\xc5",
    b"\x62",
    b"\x8f",
    b"\x0f\x0f",
    b"\xd9",
]


@settings(
    max_examples=3000,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(MODES),
    prefixes=st.lists(st.sampled_from(_PREFIX_BYTES), max_size=15).map(bytes),
    escape=st.sampled_from(_ESCAPES),
    body=st.binary(max_size=16),
)
def test_random_bytes(mode: int, prefixes: bytes, escape: bytes, body: bytes) -> None:
    code = prefixes + escape + body
    problem = compare(code, mode)
    assert problem is None, f"{mode}-bit {code.hex(' ')}: {problem}"


def test_random_instruction_streams() -> None:
    """Many more random strings than hypothesis runs, checked on status and length only."""
    rng = random.Random(20240601)
    cases = []
    for _ in range(60000):
        pfx = bytes(rng.choice(_PREFIX_BYTES) for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 4, 14))))
        body = rng.choice(_ESCAPES) + rng.randbytes(rng.choice((1, 4, 8, 16, 16)))
        cases.append((pfx + body, rng.choice(MODES)))
    _run(iter(cases), deep=False)


_CS_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}


@pytest.mark.parametrize("mode", MODES)
def test_capstone_agrees_on_emulated_forms(mode: int) -> None:
    """Second opinion: capstone decodes the emulated forms with the same length (its validity checks are
    looser than the CPU's, so only forms we accept are compared)."""
    md = capstone.Cs(capstone.CS_ARCH_X86, _CS_MODES[mode])
    failures = []
    pfxs = ["", "66", "67", "f3", "2e"] + (["48", "41", "4c"] if mode == 64 else [])
    for opmap, op in sorted(EMULATED):
        esc = "0f" if opmap == OpMap.M0F else ""
        for p in pfxs:
            for m in range(0, 256, 3):
                code = bytes.fromhex(p + esc) + bytes((op, m)) + _tail(m)
                ours = decode(code, mode)
                if not isinstance(ours, Insn):
                    continue
                got = list(md.disasm(code, 0, 1))
                if not got or got[0].size != ours.length:
                    failures.append(f"{mode}-bit {code.hex(' ')}: ours {ours.length}, capstone {got[:1]}")
    assert not failures[:20], "\n".join(failures[:20])
