"""`vmmio decode`: a disassembler over vmmio's decoder, through the command and its entry point."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from test_cli import vmmio_cmd

from vmmio import disasm
from vmmio.cli import EXIT_IMAGE, EXIT_USAGE, main


def listing(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[list[str]]]:
    """Exit status and the text lines split into (address, rest)."""
    status = main(["decode", *argv])
    out = capfd.readouterr().out
    return status, [line.split(None, 1) for line in out.splitlines()]


def test_several_words_are_one_instruction() -> None:
    done = subprocess.run([*vmmio_cmd(), "decode", "66", "0f", "6f", "00"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "       0x0  66 0f 6f 00              movdqa xmm0,xmmword ptr [rax]            emulated"
    ]


@pytest.mark.parametrize("words", [["0x8b4308"], ["8b", "43", "08"], ["8b:43:08"], ["0x8b43", "08"]])
def test_hex_spellings(words: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    status, lines = listing(capfd, *words)
    assert status == 0
    assert lines == [["0x0", "8b 43 08                 mov eax,dword ptr [rbx+0x8]              emulated"]]


def rows(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    status = main(["decode", "--json", *argv])
    return status, [json.loads(line) for line in capfd.readouterr().out.splitlines()]


def test_every_instruction_of_a_stream_at_its_address(capfd: pytest.CaptureFixture[str]) -> None:
    status, got = rows(capfd, "--addr", "0x401000", "eb fe 8b 43 08 e8 00 00 00 00 c3")
    assert status == 0
    assert [(r["addr"], r["text"]) for r in got] == [
        ("0x401000", "jmp 0x401000"),  # branch targets are absolute
        ("0x401002", "mov eax,dword ptr [rbx+0x8]"),
        ("0x401005", "call 0x40100a"),
        ("0x40100a", "ret"),
    ]
    status, text = listing(capfd, "--addr", "0x401000", "eb fe 8b 43 08")
    assert text == [
        ["0x401000", "eb fe                    jmp 0x401000"],
        ["0x401002", "8b 43 08                 mov eax,dword ptr [rbx+0x8]              emulated"],
    ]


def test_bad_bytes_are_listed_where_they_are_and_decoding_resumes(capfd: pytest.CaptureFixture[str]) -> None:
    status, got = rows(capfd, "0f 04 90 f0 89 c0 8b 03 c4")
    assert status == 1  # some bytes did not decode
    assert [(r["addr"], r["bytes"], r.get("error") or r["text"]) for r in got] == [
        ("0x0", "0f04", "undefined"),
        ("0x2", "90", "nop"),
        ("0x3", "f089c0", "bad_lock"),
        ("0x6", "8b03", "mov eax,dword ptr [rbx]"),
        ("0x8", "c4", "truncated"),
    ]
    status, text = listing(capfd, "0f 04 90")
    assert text[0] == [
        "0x0",
        "0f 04                    (bad)                                    undefined: undefined opcode",
    ]


def test_emulated_is_said_of_what_can_exit(capfd: pytest.CaptureFixture[str]) -> None:
    """Register-only forms and address-only operands (lea, nop, prefetch) never exit: no verdict."""
    code = "48 89 da 8b 03 ec f3 a5 0f 58 03 48 8d 03 0f 1f 00 0f 18 0b 0f ae 3b"
    status, got = rows(capfd, code)
    assert status == 0
    assert [(r["mnemonic"], r["emulated"]) for r in got] == [
        ("mov", False),
        ("mov", True),
        ("in", True),
        ("movsd", True),
        ("addps", False),
        ("lea", False),
        ("nop", False),
        ("prefetcht0", False),
        ("clflush", True),
    ]
    status, text = listing(capfd, code)
    ends = ("not emulated", "emulated")
    notes = [next((e for e in ends if rest.endswith(e)), "") for _, rest in text]
    assert notes == ["", "emulated", "emulated", "emulated", "not emulated", "", "", "", "emulated"]


def test_json_has_register_names_and_hex_strings(capfd: pytest.CaptureFixture[str]) -> None:
    # mov eax, fs:[rax+rcx*4-0x10]; mov dword ptr [rbx+0x10], 1; then one byte that does not decode
    status, got = rows(capfd, "--addr", "0x401000", "64 8b 44 88 f0", "c7 43 10 01 00 00 00", "c4")
    assert status == 1
    assert got[0] == {
        "addr": "0x401000",
        "bytes": "648b4488f0",
        "length": 5,
        "text": "mov eax,dword ptr fs:[rax+rcx*4-0x10]",
        "mnemonic": "mov",
        "emulated": True,
        "mode": 64,
        "opsize": 4,
        "addr_size": 8,
        "memory": {"seg": "fs", "base": "rax", "index": "rcx", "scale": 4, "disp": "-0x10"},
        "imm": None,
        "prefixes": ["fs"],
    }
    assert (got[1]["addr"], got[1]["imm"], got[1]["memory"]) == (
        "0x401005",
        "0x1",
        {"seg": "ds", "base": "rbx", "index": None, "scale": 1, "disp": "0x10"},
    )
    assert got[2] == {
        "addr": "0x40100c",
        "bytes": "c4",
        "length": 1,
        "error": "truncated",
        "detail": "instruction continues past the end of the bytes",
    }


@pytest.mark.parametrize(
    ("mode", "code", "text"),
    [
        (16, "8b07", "mov ax,word ptr [bx]"),
        (32, "8b0424", "mov eax,dword ptr [esp]"),
        (64, "8b07", "mov eax,dword ptr [rdi]"),
    ],
)
def test_modes(mode: int, code: str, text: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--mode", str(mode), "--json", code]) == 0
    row = json.loads(capfd.readouterr().out)
    assert (row["text"], row["mode"]) == (text, mode)


def test_file_offset_and_count(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "code.bin"
    path.write_bytes(b"\xcc" * 0x100 + bytes.fromhex("8b4308 f3a5 90 90"))
    status, lines = listing(capfd, "--file", str(path), "--offset", "0x100", "--count", "2")
    assert status == 0
    assert [addr for addr, _ in lines] == ["0x100", "0x103"]  # file offsets by default
    status, lines = listing(
        capfd, "--file", str(path), "--offset", "0x100", "--count", "1", "--addr", "0x401000"
    )
    assert [addr for addr, _ in lines] == ["0x401000"]


def test_standard_input_through_the_entry_point() -> None:
    code = bytes.fromhex("8b4308f3a5")
    done = subprocess.run([*vmmio_cmd(), "decode", "--file", "-", "--json"], input=code, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == [
        "mov eax,dword ptr [rbx+0x8]",
        "rep movsd dword ptr [rdi],dword ptr [rsi]",
    ]


def test_instructions_straddling_read_chunks_decode_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file is read in chunks; an instruction cut by a chunk boundary is still decoded as one."""
    monkeypatch.setattr(disasm, "CHUNK", 16)
    code = bytes.fromhex("8b4308") * 100  # 3-byte instructions over 16-byte chunks
    items = list(disasm.disassemble(disasm.chunks(io.BytesIO(code)), 64, 0x1000))
    assert len(items) == 100 and all(i.text == "mov eax,dword ptr [rbx+0x8]" for i in items)
    assert [i.address for i in items[:3]] == [0x1000, 0x1003, 0x1006]
    skipped = list(disasm.chunks(io.BytesIO(code), offset=30, limit=7))
    assert b"".join(skipped) == code[30:37]


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["zz"], "vmmio: not hex bytes: 'zz'", EXIT_USAGE),
        (["8b4"], "vmmio: not hex bytes: '8b4'", EXIT_USAGE),
        ([], "vmmio: nothing to decode", EXIT_USAGE),
        (["90", "--file", "x.bin"], "vmmio: give hex bytes or --file, not both", EXIT_USAGE),
        (["--file", "/nonexistent/x.bin"], "vmmio: cannot read /nonexistent/x.bin", EXIT_IMAGE),
    ],
)
def test_errors(argv: list[str], message: str, status: int, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", *argv]) == status
    assert capfd.readouterr().err.startswith(message)


def test_help_documents_both_output_formats() -> None:
    done = subprocess.run([*vmmio_cmd(), "decode", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for words in ("text output", "--json output", "(bad)", "prefixes", "--addr", "--offset", "--count"):
        assert words in done.stdout, words
