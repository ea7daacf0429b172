"""`vmmio run --stats` and `--stats-plot`: exits by kind, device, instruction form and RIP, with times."""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

import pytest

from vmmio import guests
from vmmio.cli import EXIT_OK, EXIT_USAGE, main
from vmmio.stats import form_of
from vmmio.symbols import SymbolTable
from vmmio.x86.decode import decode
from vmmio.x86.format import format_insn
from vmmio.x86.insn import Insn

# hello's labels (guests/hello.S), as `ld` would put them in .symtab: (name, address, size, type, bind).
HELLO_SYMBOLS = [
    ("_start", 0x100000, 0x2B, 2, 1),  # STT_FUNC, STB_GLOBAL
    ("next", 0x100011, 0, 0, 0),  # STT_NOTYPE, STB_LOCAL
    ("wait_thre", 0x100017, 0, 0, 0),
    ("done", 0x100024, 0, 0, 0),
    ("message", 0x10002B, 0, 0, 0),
]


def elf_with_symbols(
    code: bytes, base: int, symbols: list[tuple[str, int, int, int, int]], bits: int = 64
) -> bytes:
    """An ET_EXEC image of `code` at `base` (one PT_LOAD) with a .symtab, as a linker writes one."""
    is64 = bits == 64
    ehdr = struct.Struct("<16sHHIQQQIHHHHHH" if is64 else "<16sHHIIIIIHHHHHH")
    phdr = struct.Struct("<IIQQQQQQ" if is64 else "<IIIIIIII")
    shdr = struct.Struct("<IIQQQQIIQQ" if is64 else "<IIIIIIIIII")
    sym = struct.Struct("<IBBHQQ" if is64 else "<IIIBBH")
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name, *_ in symbols)
    entries = [bytes(sym.size)]
    at = 1
    for name, value, size, kind, bind in symbols:
        info = bind << 4 | kind
        entries.append(
            sym.pack(at, info, 0, 1, value, size) if is64 else sym.pack(at, value, size, info, 0, 1)
        )
        at += len(name) + 1
    symtab = b"".join(entries)
    shstrtab = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    code_off = 0x1000
    symtab_off = code_off + len(code)
    strtab_off = symtab_off + len(symtab)
    shstr_off = strtab_off + len(strtab)
    sh_off = (shstr_off + len(shstrtab) + 7) & ~7
    locals_ = 1 + sum(1 for *_, bind in symbols if bind == 0)
    sections = [
        bytes(shdr.size),
        shdr.pack(1, 1, 6, base, code_off, len(code), 0, 0, 16, 0),
        shdr.pack(7, 2, 0, 0, symtab_off, len(symtab), 3, locals_, 8, sym.size),
        shdr.pack(15, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0),
        shdr.pack(23, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ]
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1]) + bytes(9)
    machine = 62 if is64 else 3
    head = ehdr.pack(
        ident, 2, machine, 1, base, ehdr.size, sh_off, 0, ehdr.size, phdr.size, 1, shdr.size, 5, 4
    )
    if is64:
        ph = phdr.pack(1, 5, code_off, base, base, len(code), len(code), 0x1000)
    else:
        ph = phdr.pack(1, code_off, base, base, len(code), len(code), 5, 0x1000)
    image = bytearray(sh_off + len(sections) * shdr.size)
    image[: len(head)] = head
    image[len(head) : len(head) + len(ph)] = ph
    for off, blob in ((code_off, code), (symtab_off, symtab), (strtab_off, strtab), (shstr_off, shstrtab)):
        image[off : off + len(blob)] = blob
    image[sh_off:] = b"".join(sections)
    return bytes(image)


def table(err: str, title: str) -> dict[str, int]:
    """A stats table as {row label: count}."""
    block = err.split(f"exits by {title}", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines()[1:]:
        m = re.match(r"  (.*?) +(\d+) +[\d.]+% ", line)
        assert m, line
        rows[m[1]] = int(m[2])
    return rows


def test_stats_tables(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--stats"]) == EXIT_OK
    err = capfd.readouterr().err
    assert re.match(
        r"vmmio stats: 203 exits in [\d.]+ s: [\d.]+ s in the kernel \(\d+%\), [\d.]+ s in device models", err
    )
    assert table(err, "kind") == {"mmio": 202, "inout": 1}
    assert table(err, "device") == {
        "Uart16550 mmio 0xd0000000-0xd0000fff": 202,
        "DebugExit port 0xf4-0xf4": 1,
    }
    assert table(err, "instruction form") == {"test m8, imm8": 101, "mov m8, r8": 101, "out imm8, al": 1}
    assert table(err, "guest RIP") == {
        "0x100017  test byte ptr [rdi+0x5],0x20": 101,
        "0x10001d  mov byte ptr [rdi],al": 101,
        "0x100026  out 0xf4,al": 1,
    }
    columns = err.split("exits by kind", 1)[1].splitlines()[0].split()
    assert columns == ["count", "share", "kernel", "ms", "avg", "us", "device", "ms", "avg", "us"]


def test_rips_get_symbols_from_an_elf_image(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hello.elf"
    path.write_bytes(elf_with_symbols(guests.load("hello"), 0x100000, HELLO_SYMBOLS))
    assert main(["run", str(path), "--stats"]) == EXIT_OK
    rows = table(capfd.readouterr().err, "guest RIP")
    assert rows == {
        "0x100017 wait_thre  test byte ptr [rdi+0x5],0x20": 101,
        "0x10001d wait_thre+0x6  mov byte ptr [rdi],al": 101,
        "0x100026 done+0x2  out 0xf4,al": 1,
    }


def test_top_limits_the_form_and_rip_tables(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--stats", "--stats-top", "1"]) == EXIT_OK
    err = capfd.readouterr().err
    assert "exits by instruction form (top 1 of 3)" in err and "exits by guest RIP (top 1 of 3)" in err


@pytest.mark.parametrize("bits", [64, 32])
def test_symbol_table_parsing(bits: int) -> None:
    syms = SymbolTable.from_elf(elf_with_symbols(b"\x90" * 0x40, 0x100000, HELLO_SYMBOLS, bits))
    assert len(syms) == 5
    assert [syms.lookup(a) for a in (0x100000, 0x100012, 0x100017, 0x10002B + 4, 0xFFFFF)] == [
        "_start",
        "next+0x1",
        "wait_thre",
        "message+0x4",
        None,
    ]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x7fELF", b"MZ" + bytes(100), elf_with_symbols(b"\x90", 0x1000, HELLO_SYMBOLS)[:0x1010]],
    ids=["empty", "magic-only", "not-elf", "cut-short"],
)
def test_malformed_images_have_no_symbols(data: bytes) -> None:
    assert len(SymbolTable.from_elf(data)) == 0


@pytest.mark.parametrize(
    ("code", "form"),
    [
        ("8b4308", "mov r32, m32"),
        ("c6030a", "mov m8, imm8"),
        ("f348a5", "rep movsq m64, m64"),
        ("f0810b80000000", "lock or m32, imm32"),
        ("e6f4", "out imm8, al"),
        ("ec", "in al, dx"),
        ("66ff33", "push m16"),
        ("0fba2b05", "bts m32, imm8"),
        ("0f2803", "movaps xmm, m128"),
    ],
)
def test_instruction_forms(code: str, form: str) -> None:
    insn = decode(bytes.fromhex(code), 64)
    assert isinstance(insn, Insn)
    assert form_of(insn, format_insn(insn)) == form


def test_plot_needs_the_extra_and_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["run", "hello", "--stats-plot", str(tmp_path / "p.png")]) == EXIT_USAGE
    out, err = capfd.readouterr()
    assert (
        err.strip()
        == "vmmio: --stats-plot: plots need matplotlib, an optional extra: pip install 'vmmio[plot]'"
    )
    assert out == ""  # refused before the run


def test_plot_formats_are_checked_before_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--stats-plot", str(tmp_path / "p.gif")]) == EXIT_USAGE
    out, err = capfd.readouterr()
    assert err.strip().endswith("p.gif must end in .png, .svg, .pdf") and out == ""
    assert not (tmp_path / "p.gif").exists()


def test_plot_of_exits_over_time(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (pip install 'vmmio[plot]') is not installed")
    path = tmp_path / "exits.png"
    assert main(["run", "hello", "--stats-plot", str(path)]) == EXIT_OK
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "exits.svg"
    assert main(["run", "hello", "--stats-plot", str(svg)]) == EXIT_OK
    assert "Uart16550 mmio 0xd0000000-0xd0000fff (202)" in svg.read_text()
