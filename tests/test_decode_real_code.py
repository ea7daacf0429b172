"""The decoder on real machine code: instructions from the host's binaries and libraries (and a Debian
kernel image and modules where installed), with iced-x86's linear sweep as the instruction boundaries.

Synthetic encodings (tests/test_decode_oracles.py) cover every opcode and prefix shape; real code checks
the same fields on what compilers actually emit and in the proportions they emit it, and is where an
oracle's own habits (objdump's prefix display, capstone's gaps) show up. For every swept instruction
vmmio's length must match iced's, `lookup` must not raise, and for memory operands the operand size,
address size, segment, base, index, scale and displacement must match; objdump and capstone check
lengths and memory operands on a smaller sample. Disagreements already judged are listed in
oracles_real/known.py; the decoder bugs the sweep found have regression tests at the end.
"""

from __future__ import annotations

import pytest
from iced_x86 import Decoder, RegisterInfo
from oracles_real.check import Checked, check_iced, check_listing
from oracles_real.corpus import Source, all_sources, kernel_sources, spread, sweep, well_known_sources
from oracles_real.elf import CodeRange
from oracles_real.listings import capstone_listing, objdump_available, objdump_chunks, objdump_listing

from vmmio.x86.decode import decode
from vmmio.x86.insn import Insn
from vmmio.x86.regs import vector_name

# Budget: about 15 s in all on the reference machine (2 cores).
WELL_KNOWN_MEM = 10000  # memory-operand instructions per well-known file (all instructions around them too)
SPREAD_FILES = 300
SPREAD_INSNS = 1000
TEXT_WELL_KNOWN = 4000  # instructions per well-known file cross-checked with objdump and capstone
TEXT_SPREAD_FILES = 40
TEXT_SPREAD_INSNS = 1500

WELL_KNOWN = well_known_sources()
_KNOWN_PATHS = {s.path for s in WELL_KNOWN}
# all_sources() takes the corpus parts in turn, so its first files are a spread over all of them.
SPREAD = [s for s in all_sources() if s.kind == "elf" and s.path not in _KNOWN_PATHS][:SPREAD_FILES]
TEXT_SPREAD = spread(tuple(SPREAD), TEXT_SPREAD_FILES)


def _ids(sources: list[Source] | tuple[Source, ...]) -> list[str]:
    return [s.name for s in sources]


def _fail_on_new(checked: list[Checked], what: str) -> None:
    lines = [c.report(f) for c in checked for f in c.new()]
    assert not lines, f"{len(lines)} new disagreement(s) in {what}:\n" + "\n".join(lines[:25])


@pytest.mark.parametrize("source", WELL_KNOWN, ids=_ids(WELL_KNOWN))
def test_well_known_binaries_agree_with_iced(source: Source) -> None:
    """The first memory-operand instructions of four windows spread over each code section, and every
    instruction between them."""
    ranges = source.ranges()
    if not ranges:
        pytest.skip(f"{source.path}: no executable x86 code found")
    checked = [check_iced(s) for s in sweep(ranges, WELL_KNOWN_MEM, windows=4, count_memory=True)]
    _fail_on_new(checked, source.path)
    mem = sum(isinstance(c.ours, Insn) and c.ours.mem is not None for c in checked)
    assert mem >= min(WELL_KNOWN_MEM // 2, len(checked) // 20), f"{mem} memory operands in {len(checked)}"


def test_spread_of_binaries_agrees_with_iced() -> None:
    """A few hundred instructions from each of many files (executables, libraries, kernel modules)."""
    if not SPREAD:
        pytest.skip("no ELF files found")
    checked = []
    for source in SPREAD:
        checked += [check_iced(s) for s in sweep(source.ranges(), SPREAD_INSNS, windows=2)]
    _fail_on_new(checked, f"{len(SPREAD)} files")
    assert len(checked) > SPREAD_INSNS * len(SPREAD) // 4


def _text_oracles(source: Source, count: int) -> None:
    """One contiguous run per file (from the start of its largest code section) through objdump and
    capstone, joined with iced's sweep by address."""
    ranges = source.ranges()
    if not ranges:
        pytest.skip(f"{source.path}: no executable x86 code found")
    r = max(ranges, key=lambda r: len(r.data))
    checked = [check_iced(s) for s in sweep([r], count)]
    assert checked
    lo, hi = checked[0].sample.offset, checked[-1].sample.offset + checked[-1].sample.iced.len
    listings = {"objdump": objdump_listing(r, lo, hi), "capstone": capstone_listing(r, lo, hi)}
    for oracle, listing in listings.items():
        compared, _mem, unaligned = check_listing(checked, oracle, listing)
        assert compared >= 0.9 * len(checked), f"{oracle} aligned with iced on {compared}/{len(checked)}"
        assert unaligned <= 0.1 * len(checked)
    _fail_on_new(checked, f"{source.path} (objdump, capstone)")


@pytest.mark.skipif(not objdump_available(), reason="objdump not installed")
@pytest.mark.parametrize("source", WELL_KNOWN, ids=_ids(WELL_KNOWN))
def test_well_known_binaries_agree_with_objdump_and_capstone(source: Source) -> None:
    _text_oracles(source, TEXT_WELL_KNOWN)


@pytest.mark.skipif(not objdump_available(), reason="objdump not installed")
@pytest.mark.parametrize("source", TEXT_SPREAD, ids=_ids(TEXT_SPREAD))
def test_spread_agrees_with_objdump_and_capstone(source: Source) -> None:
    _text_oracles(source, TEXT_SPREAD_INSNS)


def test_kernel_image_is_swept() -> None:
    """Says so when no Debian kernel is installed (`apt-get install linux-image-amd64`): the corpus then
    lacks kernel code (modules and vmlinux), the richest source of MMIO-style accesses."""
    if not kernel_sources():
        pytest.skip("no /boot/vmlinuz-*: kernel image not part of the corpus")
    vmlinux = kernel_sources()[0].ranges()
    assert any(r.section == ".text" and len(r.data) > 1 << 20 for r in vmlinux), "vmlinux not extracted"


@pytest.mark.skipif(not objdump_available(), reason="objdump not installed")
@pytest.mark.parametrize(
    ("hexbytes", "tag"),
    [
        ("0f ff 68 51", "capstone-ud0-ud1-modrm"),  # libcrypto.so.3
        ("0f b9 cc", "capstone-ud0-ud1-modrm"),  # static calls in kernel modules
        ("64 2e de 1c 13", "capstone-null-segment-prefix"),  # libcrypto.so.3
        ("26 4e 46 3a ce", "objdump-rex-split"),  # libcrypto.so.3
        ("67 48 41 78 a2", "objdump-rex-split"),  # libcrypto.so.3
        ("43 4d 33 85 45 f9 02 7f", "objdump-rex-split"),  # libcrypto.so.3
        ("9b d9 7c 24 02", "objdump-fwait-merge"),  # libm.so.6
    ],
)
def test_known_disagreements_are_recognised(hexbytes: str, tag: str) -> None:
    """The judged disagreements, on bytes found in real code, are classified as such (and nothing else
    about them disagrees). An oracle that stops disagreeing after an upgrade passes too."""
    code = bytes.fromhex(hexbytes) + b"\x90" * 4
    r = CodeRange("-", "known disagreement", "-", 64, 0x1000, 0, code, raw=True)
    checked = list(map(check_iced, sweep([r], 2)))
    check_listing(checked, "objdump", objdump_chunks(64, [(r.address, code)]))
    check_listing(checked, "capstone", capstone_listing(r, 0, len(code)))
    _fail_on_new(checked, hexbytes)
    tags = {f.known.tag for c in checked for f in c.findings if f.known}
    assert tags <= {tag}


# ---------------------------------------------------------------------------------------------------
# Regression tests for decoder bugs the sweep found (they were "vmmio" entries of oracles_real/known.py).
# Each byte string was found in real code, where noted.


def _iced_disp(code: bytes) -> int:
    ins = next(iter(Decoder(64, code)))
    return int(ins.memory_displacement)


@pytest.mark.parametrize(
    ("hexbytes", "disp"),
    [
        ("62 e1 fe 4a 7f 54 04 01", 0x40),  # vmovdqu64 [rsp+rax+0x40]{k2}, zmm18: kernel poly1305-x86_64.ko
        ("62 e1 fe 28 6f 56 01", 0x20),  # vmovdqu64 ymm18, [rsi+0x20]: libc.so.6
        ("62 f2 fd 48 59 69 08", 0x40),  # vpbroadcastq zmm5, [rcx+0x40] (N = 8): poly1305-x86_64.ko
        ("62 f1 55 48 ef 40 f9", -0x1C0),  # vpxord zmm0, zmm5, [rax-0x1c0]: libxxhash.so.0
    ],
)
def test_evex_compressed_displacement(hexbytes: str, disp: int) -> None:
    """SDM Vol. 2, 2.7.5: an EVEX disp8 is multiplied by N, the memory operand's size (full-vector
    and tuple forms) or the element size (broadcast and tuple1 forms)."""
    code = bytes.fromhex(hexbytes)
    assert _iced_disp(code) == disp & (1 << 64) - 1  # what the oracles say
    insn = decode(code, 64)
    assert isinstance(insn, Insn) and insn.mem is not None
    assert insn.mem.disp == disp


@pytest.mark.parametrize(
    "hexbytes",
    [
        "4f e5 d7",  # in eax, 0xd7 with REX.WRXB: libcrypto.so.3 (bytes in .text)
        "48 ed",  # in eax, dx
        "66 48 ed",  # REX.W still overrides 66: in eax, dx
        "48 e7 80",  # out 0x80, eax
        "49 6d",  # insd with REX.WB: libcrypto.so.3
        "48 6f",  # outsd
        "4b 4b dd 61 bd",  # frstor [r9-0x43] with REX.WXB: libcrypto.so.3
        "48 d9 30",  # fnstenv [rax]
        "48 c7 f8 00 00 00 00",  # xbegin
    ],
)
def test_rex_w_without_64bit_operand_size(hexbytes: str) -> None:
    """Regression (found in real code): these forms have no 64-bit operand size, so REX.W leaves the
    attribute at 32 (SDM Vol. 2 IN, OUT, INS, OUTS: 'REX.W ignored'; iced-x86 reports 32)."""
    code = bytes.fromhex(hexbytes)
    insn = decode(code, 64)
    assert isinstance(insn, Insn) and insn.length == len(code)
    assert insn.opsize == 4


@pytest.mark.parametrize(
    ("hexbytes", "index"),
    [
        ("62 f2 7d 49 92 1c 20", "zmm4"),  # vgatherdps zmm3{k1}, [rax+zmm4]: libmvec.so
        ("62 72 fd 4b 92 94 20 80 a1 bf ff", "ymm4"),  # vgatherdpd zmm10{k3}, [rax+ymm4-0x405e80]: libmvec.so
        ("c4 e2 79 92 0c 20", "xmm4"),  # vgatherdps xmm1, [rax+xmm4], xmm0 (VEX)
        ("62 f2 7d 41 92 0c 28", "zmm21"),  # vgatherdps zmm1{k1}, [rax+zmm21] (EVEX.V' = 0)
    ],
)
def test_vsib_index_register(hexbytes: str, index: str) -> None:
    """SDM Vol. 2, 2.3.12: in VSIB the index field always names a vector register (SIB.index = 100b is
    register 4, not 'no index'), extended by VEX/EVEX.X and EVEX.V', as wide as the vector (half as
    wide for dword indexes of qword elements)."""
    code = bytes.fromhex(hexbytes)
    ins = next(iter(Decoder(64, code)))
    info = RegisterInfo(ins.memory_index)
    assert "xyz"[info.size // 32] + f"mm{info.number}" == index  # what the oracles say
    insn = decode(code, 64)
    assert isinstance(insn, Insn) and insn.mem is not None
    assert insn.mem.vsib and vector_name(insn.mem.index) == index
