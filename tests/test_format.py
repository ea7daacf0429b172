"""Intel-syntax text (`vmmio.x86.format`) against iced-x86's Intel formatter, the oracle.

iced is configured for one fixed, unambiguous style (see `iced_formatter`): lower case, ``0x`` hex for
every number, no space after commas, a size keyword on every memory operand (``dword ptr [rbx+0x8]``),
RIP-relative operands as ``[rip+disp]``, no pseudo-op mnemonics (``cmpss xmm0,xmm1,0x0``, not
``cmpeqss``; ``fxch st,st(1)``, not ``fxch``) and branch targets as absolute addresses (both sides get the
instruction's address). Every instruction both decoders accept with the same length is compared as a
whole string; the only differences allowed are those in `KNOWN_DIFFERENCES`, each checked by undoing it
(so the rest of the text must still match exactly), and the counts are printed (`pytest -s`).

Spaces compared: every opcode of the one-byte, 0F, 0F38 and 0F3A maps with every ModRM byte and with a
set of prefixes (the decoder oracle's generators, reused), every VEX/EVEX opcode x pp x W x L with
register, SIB and disp8/disp32 operands, with and without a vvvv register (EVEX also with masking,
zeroing and broadcast/rounding), the decoder oracle's random VEX/EVEX/XOP cases and AMX tile forms, in
16/32/64-bit modes; and real code from the host's binaries (tests/oracles_real's corpus and sweep).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pytest
from iced_x86 import Code, Decoder, Formatter, FormatterSyntax, MemorySizeOptions
from oracles_real.corpus import all_sources, sweep, well_known_sources
from test_decode_oracles import _PREFIXES, _PREFIXES_64, _SOME_MODRM, MAPS, MODES, _tail, _vector_cases

from vmmio.x86 import tables as T
from vmmio.x86.decode import decode
from vmmio.x86.format import format_insn, format_mem
from vmmio.x86.insn import Encoding, Insn, MemOperand
from vmmio.x86.regs import NO_REG, RIP_REG, Seg

ADDRESS = 0x401000  # where generated instructions are placed (branch targets are absolute)


def iced_formatter() -> Formatter:
    """iced's Intel formatter set to the style `format_insn` prints."""
    f = Formatter(FormatterSyntax.INTEL)
    f.uppercase_hex = False
    f.hex_prefix = "0x"
    f.hex_suffix = ""
    f.small_hex_numbers_in_decimal = False  # 0x8, not 8: one notation for every number
    f.first_operand_char_index = 0  # one space after the mnemonic, not a column
    f.space_after_operand_separator = False
    f.show_branch_size = False  # no "short"/"near"
    f.branch_leading_zeros = False
    f.memory_size_options = MemorySizeOptions.ALWAYS  # the access size is what an MMIO trace is about
    f.rip_relative_addresses = True  # [rip+0x10]: the operand as encoded
    f.use_pseudo_ops = False  # the mnemonic the opcode encodes, the predicate as an immediate
    return f


ICED = iced_formatter()


@dataclass(frozen=True)
class Difference:
    """A deliberate difference: `undo(insn, ours)` rewrites our text into iced's spelling, or returns
    None when the difference does not apply."""

    tag: str
    reason: str
    undo: Callable[[Insn, str], str | None]


def _undo_far_pointer(insn: Insn, ours: str) -> str | None:
    head, sep, target = ours.partition(" far ")
    if not sep or ":" not in target or "[" in target:
        return None
    selector, offset = target.split(":")
    return f"{head} far {offset},{selector}"


# iced's names for forms whose Intel/AMD mnemonic the decoder reports: by mnemonic, or by
# (mnemonic, ModRM.reg) where iced names the reg values apart.
_ICED_NAMES: dict[str | tuple[str, int], str] = {
    ("prefetch", 0): "prefetch_exclusive",
    **{("prefetch", r): "prefetch_reserved" for r in (4, 5, 6, 7)},
    "getsec": "getsecq",
    "pcmpestrm": "pcmpestrm64",
    "pcmpestri": "pcmpestri64",
    "vpcmpestrm": "vpcmpestrm64",
    "vpcmpestri": "vpcmpestri64",
    "via_undoc": "undoc",
}


def _undo_mnemonic(insn: Insn, ours: str) -> str | None:
    name = insn.mnemonic if insn.encoding == Encoding.LEGACY else ours.split(" ")[0]
    theirs = _ICED_NAMES.get((name, insn.modrm >> 3 & 7)) or _ICED_NAMES.get(name)
    if theirs is None:
        return None
    words = ours.split(" ")
    i = words.index(name)
    return " ".join([*words[:i], theirs, *words[i + 1 :]])


def _undo_xbegin16(insn: Insn, ours: str) -> str | None:
    if insn.mnemonic != "xbegin" or insn.opsize != 2:
        return None
    return f"xbegin {ADDRESS + insn.length + insn.imm:#x}"


KNOWN_DIFFERENCES = (
    Difference(
        "far-pointer",
        "call/jmp ptr16:16/32 is written selector:offset (the SDM's and MASM's notation); iced writes "
        "offset,selector",
        _undo_far_pointer,
    ),
    Difference(
        "iced-mnemonic",
        "iced invents names for some forms (prefetch_exclusive for AMD's PREFETCH 0F 0D /0, getsecq, "
        "(v)pcmpestrm64/(v)pcmpestri64 for the REX.W/VEX.W1 forms, undoc for VIA's 0F A6 /6-7); the "
        "formatter prints the decoder's mnemonic, which is the vendor's",
        _undo_mnemonic,
    ),
    Difference(
        "xbegin-16",
        "XBEGIN with a 16-bit operand size: the fallback address is truncated to 16 bits (SDM Vol. 2, "
        "XBEGIN: 'IF OperandSize = 16 THEN fallbackRIP := fallbackRIP AND FFFFH'); iced does not truncate",
        _undo_xbegin16,
    ),
)


def _classify(insn: Insn, ours: str, theirs: str) -> str | None:
    """The tag of the documented difference that explains ours != theirs, or None."""
    for d in KNOWN_DIFFERENCES:
        undone = d.undo(insn, ours)
        if undone is not None and undone == theirs:
            return d.tag
    return None


@dataclass
class Tally:
    """Agreement counts of one comparison run, and the undocumented differences."""

    compared: int = 0
    identical: int = 0
    documented: Counter[str] = field(default_factory=Counter)
    undocumented: list[str] = field(default_factory=list)

    def add(self, insn: Insn, ours: str, theirs: str, where: str) -> None:
        self.compared += 1
        if ours == theirs:
            self.identical += 1
            return
        tag = _classify(insn, ours, theirs)
        if tag is None:
            self.undocumented.append(f"{where}: vmmio {ours!r}, iced {theirs!r}")
        else:
            self.documented[tag] += 1

    def report(self, what: str) -> str:
        docs = ", ".join(f"{t} {n}" for t, n in sorted(self.documented.items())) or "none"
        return (
            f"{what}: {self.compared} compared, {self.identical} identical, documented differences: "
            f"{docs}, undocumented: {len(self.undocumented)}"
        )

    def check(self, what: str, minimum: int) -> None:
        print(self.report(what))
        assert not self.undocumented, self.report(what) + "\n" + "\n".join(self.undocumented[:30])
        assert self.compared >= minimum, self.report(what)


def _compare(cases: Iterable[tuple[bytes, int]], what: str, minimum: int) -> Tally:
    tally = Tally()
    for code, mode in cases:
        ours = decode(code, mode)
        if not isinstance(ours, Insn):
            continue
        ins = Decoder(mode, code, ip=ADDRESS).decode()
        if ins.code == Code.INVALID or ins.len != ours.length:
            continue  # validity and length are the decoder tests' business
        where = f"{mode}-bit {code[: ours.length].hex(' ')}"
        tally.add(ours, format_insn(ours, address=ADDRESS), ICED.format(ins), where)
    tally.check(what, minimum)
    return tally


# ---------------------------------------------------------------------------------------------------
# What users see.


@pytest.mark.parametrize(
    ("hexbytes", "mode", "text"),
    [
        ("8b 43 08", 64, "mov eax,dword ptr [rbx+0x8]"),
        ("f3 a5", 64, "rep movsd dword ptr [rdi],dword ptr [rsi]"),
        ("f0 0f b1 0b", 64, "lock cmpxchg dword ptr [rbx],ecx"),
        ("66 0f 6f 00", 64, "movdqa xmm0,xmmword ptr [rax]"),
        ("c4 e2 7d 18 00", 64, "vbroadcastss ymm0,dword ptr [rax]"),
        ("62 f1 7c 48 10 44 24 01", 64, "vmovups zmm0,zmmword ptr [rsp+0x40]"),
        ("e9 fb 0f 00 00", 64, "jmp 0x402000"),  # rel32 from 0x401000 + 5
        ("88 24 c5 00 10 00 00", 32, "mov byte ptr [eax*8+0x1000],ah"),  # no REX: AH, and *8 with no base
        ("40 88 24 c5 00 10 00 00", 64, "mov byte ptr [rax*8+0x1000],spl"),  # REX: SPL
        ("64 89 0d 10 00 00 00", 32, "mov dword ptr fs:[0x10],ecx"),
        ("67 8b 07", 64, "mov eax,dword ptr [edi]"),
        ("66 ed", 32, "in ax,dx"),
        ("f3 6e", 16, "rep outsb dx,byte ptr [si]"),
        ("0f 22 d8", 64, "mov cr3,rax"),
        ("0f 23 f8", 32, "mov dr7,eax"),
        ("8e d8", 16, "mov ds,ax"),
        ("dc c1", 32, "fadd st(1),st"),
        ("0f fe c1", 64, "paddd mm0,mm1"),
        ("62 f1 7d 89 fe c2", 64, "vpaddd xmm0{k1}{z},xmm0,xmm2"),
        ("62 f1 7c 58 58 00", 64, "vaddps zmm0,zmm0,dword ptr [rax]{1to16}"),
        ("62 f1 74 78 58 c2", 64, "vaddps zmm0{rz-sae},zmm1,zmm2"),
        ("c5 f8 93 c1", 64, "kmovw eax,k1"),
        ("c4 e3 79 4a c1 20", 64, "vblendvps xmm0,xmm0,xmm1,xmm2"),
        ("f2 0f 38 f1 c3", 64, "crc32 eax,ebx"),
        ("f2 f0 0f c1 03", 64, "xacquire lock xadd dword ptr [rbx],eax"),
        ("f2 e8 00 00 00 00", 64, "bnd call 0x401006"),
        ("3e ff e0", 64, "notrack jmp rax"),
        ("2e 74 00", 32, "hint-not-taken je 0x401003"),
        ("66 c9", 32, "data16 leave"),
        ("48 8d 05 f9 ff ff ff", 64, "lea rax,[rip-0x7]"),
    ],
)
def test_examples(hexbytes: str, mode: int, text: str) -> None:
    code = bytes.fromhex(hexbytes)
    insn = decode(code, mode)
    assert isinstance(insn, Insn) and insn.length == len(code)
    assert format_insn(insn, address=ADDRESS) == text
    assert ICED.format(Decoder(mode, code, ip=ADDRESS).decode()) == text  # the oracle agrees


@pytest.mark.parametrize(
    ("hexbytes", "mode", "tag"),
    [
        ("9a 67 11 22 33", 16, "far-pointer"),
        ("0f 0d 00", 64, "iced-mnemonic"),
        ("c4 e3 f9 60 c1 21", 64, "iced-mnemonic"),
        ("c7 f8 fd 11", 16, "xbegin-16"),
    ],
)
def test_known_differences_are_real(hexbytes: str, mode: int, tag: str) -> None:
    """Each documented difference occurs, and undoing it gives iced's text exactly."""
    code = bytes.fromhex(hexbytes)
    insn = decode(code, mode)
    assert isinstance(insn, Insn)
    ours = format_insn(insn, address=ADDRESS)
    theirs = ICED.format(Decoder(mode, code, ip=ADDRESS).decode())
    assert ours != theirs and _classify(insn, ours, theirs) == tag


@pytest.mark.parametrize(
    ("hexbytes", "text"),
    [
        ("eb fe", "jmp $+0x0"),  # a jump to itself
        ("74 10", "je $+0x12"),
        ("e8 f0 ff ff ff", "call $-0xb"),
        ("0f 85 00 01 00 00", "jne $+0x106"),
        ("e2 fc", "loop $-0x2"),
    ],
)
def test_relative_target_without_address(hexbytes: str, text: str) -> None:
    """Without an address the target is printed relative to the instruction's first byte."""
    insn = decode(bytes.fromhex(hexbytes), 64)
    assert isinstance(insn, Insn)
    assert format_insn(insn) == text


def test_branch_target_wraps_like_the_instruction_pointer() -> None:
    insn = decode(bytes.fromhex("66 e9 00 10"), 32)  # 16-bit operand size: IP wraps at 64 KiB
    assert isinstance(insn, Insn)
    assert format_insn(insn, address=0xF000) == "data16 jmp 0x4"
    insn = decode(bytes.fromhex("e9 00 00 00 80"), 32)
    assert isinstance(insn, Insn)
    assert format_insn(insn, address=0x80000000) == "jmp 0x5"


@pytest.mark.parametrize(
    ("hexbytes", "text"),
    [
        ("c4 e2 78 00 00", "vex.0f38.00 [rax]"),  # VPSHUFB exists with 66 only
        ("62 f2 7c 48 00 40 01", "evex.0f38.00 [rax+0x1]"),  # likewise in EVEX (no tuple type: N = 1)
    ],
)
def test_encoding_without_a_form_prints_the_decoders_name(hexbytes: str, text: str) -> None:
    """VEX/EVEX/XOP bytes the decoder accepts (it knows the opcode space coarsely, see
    tests/test_decode_oracles.py) but no CPU defines: no row matches, so the text is the decoder's
    coarse name and the memory operand. The CPU raises #UD on these, iced calls them invalid."""
    code = bytes.fromhex(hexbytes)
    insn = decode(code, 64)
    assert isinstance(insn, Insn)
    assert Decoder(64, code).decode().code == Code.INVALID
    assert format_insn(insn) == text


def test_format_mem_keeps_its_contract() -> None:
    """`format_mem` (used by traces): no size keyword, the segment only when not `default_seg`."""
    fs = int(Seg.FS)
    ds = int(Seg.DS)
    assert format_mem(MemOperand(fs, 3, 1, 4, 0x10, 8)) == "fs:[rbx+rcx*4+0x10]"
    assert format_mem(MemOperand(ds, 3, NO_REG, 1, -8, 8)) == "[rbx-0x8]"
    assert format_mem(MemOperand(ds, RIP_REG, NO_REG, 1, 0x20, 8)) == "[rip+0x20]"
    assert format_mem(MemOperand(ds, NO_REG, NO_REG, 1, -4, 4)) == "[0xfffffffc]"
    assert format_mem(MemOperand(int(Seg.SS), 5, NO_REG, 1, 0, 8), default_seg=int(Seg.SS)) == "[rbp]"


# ---------------------------------------------------------------------------------------------------
# The tables: the operand column is for the formatter only.


def test_operand_column_does_not_reach_decoder_entries() -> None:
    """The legacy entries compiled from the rows without their operand column are the same objects'
    values: formatting data costs the decoder nothing."""
    stripped = "\n".join(line.split(" : ")[0] for line in T._LEGACY_ROWS.splitlines())
    forms = T._parse(stripped)
    assert [(f.opmap, f.opcode, f.mnemonic, f.pfx, f.reg, f.modrm, f.flags, f.imm) for f in forms] == [
        (f.opmap, f.opcode, f.mnemonic, f.pfx, f.reg, f.modrm, f.flags, f.imm) for f in T.ROWS
    ]
    assert all(len(e) == 9 for m in T.LEGACY.values() for t in m.values() for e in t if e is not None)


def test_every_legacy_row_has_parseable_operands() -> None:
    """Each row's operand codes format without error on an instruction decoded from that row."""
    seen = 0
    for mode, esc in itertools.product(MODES, MAPS):
        for op in range(256):
            code = bytes.fromhex(esc) + bytes((op, 0x44, 0x24, 0x10)) + bytes(12)
            insn = decode(code, mode)
            if isinstance(insn, Insn) and insn.encoding == Encoding.LEGACY:
                assert format_insn(insn).split()[0], code.hex()
                seen += 1
    assert seen > 1000


def test_vector_rows_name_only_opcodes_the_decoder_accepts() -> None:
    spaces = {
        int(Encoding.VEX): T.VEX_OPCODES,
        int(Encoding.EVEX): T.EVEX_OPCODES,
        int(Encoding.XOP): T.XOP_OPCODES,
    }
    missing = [k for k in T.vector_forms() if k[3] not in spaces[k[0]].get(k[1], frozenset())]
    assert not missing


# ---------------------------------------------------------------------------------------------------
# Generated instruction spaces.


def _legacy_cases(mode: int, esc: str) -> Iterator[tuple[bytes, int]]:
    """Every opcode with every ModRM, then with each prefix set and a ModRM per reg/mod shape."""
    prefix = bytes.fromhex(esc)
    for op, m in itertools.product(range(256), range(256)):
        yield prefix + bytes((op, m)) + _tail(m), mode
    for p in _PREFIXES + (_PREFIXES_64 if mode == 64 else []):
        for op in range(256):
            for m in _SOME_MODRM:
                yield bytes.fromhex(p + esc) + bytes((op, m)) + _tail(m), mode


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("esc", list(MAPS))
def test_generated_legacy_agrees_with_iced(mode: int, esc: str) -> None:
    _compare(_legacy_cases(mode, esc), f"{mode}-bit map {esc or 'one-byte'}", 1000)


@pytest.mark.parametrize("mode", MODES)
def test_3dnow_agrees_with_iced(mode: int) -> None:
    forms = (b"\xc1", b"\x40\x7f")
    cases = ((b"\x0f\x0f" + f + bytes((s,)) + bytes(8), mode) for f in forms for s in range(256))
    _compare(cases, f"{mode}-bit 3DNow!", 40)


_VECTOR_TAILS = [bytes.fromhex(x) for x in ("c1", "0c 88", "4c 24 10", "94 c8 00 01 00 00")]


def _vector_space(mode: int) -> Iterator[tuple[bytes, int]]:
    """Every VEX (C4) and EVEX opcode x pp x W x L with a register, SIB and disp8/disp32 operand, with
    vvvv = 5 and vvvv unused (1111b); an imm8 of 0x21 (is4 register 2); EVEX plain, {k3}{z}, and {k2}
    with EVEX.b."""
    imm = b"\x21" + bytes(8)
    vex = itertools.product((1, 2, 3), range(256), range(4), (0, 1), (0, 1), (0x28, 0x78), _VECTOR_TAILS)
    for vmap, op, pp, w, vl, vvvv, tail in vex:
        yield bytes((0xC4, 0xE0 | vmap, w << 7 | vvvv | vl << 2 | pp, op)) + tail + imm, mode
    evex = itertools.product((1, 2, 3, 5, 6), range(256), range(4), (0, 1), (0, 1, 2), (0x28, 0x78))
    for vmap, op, pp, w, vl, vvvv in evex:
        for tail, (z, aaa, b) in itertools.product(_VECTOR_TAILS, ((0, 0, 0), (1, 3, 0), (0, 2, 1))):
            p1 = w << 7 | vvvv | 0x04 | pp
            p2 = z << 7 | vl << 5 | b << 4 | 0x08 | aaa
            yield bytes((0x62, 0xF0 | vmap, p1, p2, op)) + tail + imm, mode
    if mode == 64:  # the high registers: R, X, B, R' and V' all set
        for vmap, op, pp, w in itertools.product((1, 2, 3), range(256), range(4), (0, 1)):
            yield bytes((0x62, 0x00 | vmap, w << 7 | 0x04 | pp, 0x40, op)) + b"\xc1" + imm, mode
            yield bytes((0xC4, 0x00 | vmap, w << 7 | pp, op)) + b"\xc1" + imm, mode


# AMX: tile operands must differ, and vvvv names a tile (the space above has neither).
_AMX = [
    bytes((0xC4, 0xE2, 0x70 | pp | (15 - v) << 3, op, m))
    for op, pp in itertools.product((0x5C, 0x5E, 0x6C), range(4))
    for v, m in ((1, 0xC2), (3, 0xEE), (7, 0xD5))
] + [bytes.fromhex(h) for h in ("c4e27b49c0", "c4e27849c0", "c4e2784900", "c4e27b4b0c88", "c4e27a4b0c20")]


@pytest.mark.parametrize("mode", MODES)
def test_generated_vector_agrees_with_iced(mode: int) -> None:
    amx = ((code + bytes(8), mode) for code in _AMX)
    cases = itertools.chain(_vector_space(mode), _vector_cases(mode), amx)
    _compare(cases, f"{mode}-bit VEX/EVEX/XOP", 5000)


# ---------------------------------------------------------------------------------------------------
# Real code.

REAL_INSNS = 200_000
REAL_FILES = 160


def test_real_code_agrees_with_iced() -> None:
    """Instructions swept from the host's binaries (python, libc, libm, libcrypto, kernel modules, ...),
    formatted with their real addresses."""
    sources = list(well_known_sources()) + [s for s in all_sources() if s.kind == "elf"][:REAL_FILES]
    if not sources:
        pytest.skip("no x86 ELF files found on this host")
    per_file = max(500, 2 * REAL_INSNS // len(sources))  # small files fall short; the loop stops at the total
    tally = Tally()
    used = 0
    for source in sources:
        used += 1
        for s in sweep(source.ranges(), per_file, windows=4):
            ours = decode(s.code, s.range.mode)
            if isinstance(ours, Insn) and ours.length == s.iced.len:
                tally.add(ours, format_insn(ours, address=s.address), ICED.format(s.iced), s.where())
        if tally.compared >= REAL_INSNS:
            break
    if tally.compared == 0:
        pytest.skip("no executable x86 code found in the host's binaries")
    tally.check(f"real code ({used} files)", min(REAL_INSNS, 1000))
