"""The `vmmio` command, through its entry point: exit codes, error lines, traces, decode output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmmio.cli import main

# mov ebx, 0xD0000000; mov byte [rbx], 'A'; mov byte [rbx], '\n'; mov al, 3; out 0xf4, al; hlt
PRINT_A_EXIT_3 = bytes.fromhex("bb000000d0c60341c6030ab003e6f4f4")
# mov ebx, 0xD0010000; movaps xmm0, [rbx]; hlt  -- an MMIO access vmmio does not emulate
MOVAPS_MMIO = bytes.fromhex("bb000001d00f2803f4")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "guest.bin"
    path.write_bytes(PRINT_A_EXIT_3)
    return path


def test_run_returns_the_guest_status_and_prints_its_output(
    image: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(image)]) == 3
    out, err = capfd.readouterr()
    assert out == "A\n"
    assert err == ""


def test_run_trace_prints_every_exit(image: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(image), "--trace"]) == 3
    _, err = capfd.readouterr()
    lines = err.splitlines()
    assert lines == [
        "[exit] mmio  0xd0000000 size 1 write 0x41",
        "[exit] mmio  0xd0000000 size 1 write 0xa",
        "[exit] inout port 0xf4 size 1 out 0x3",
        "[vmmio] 3 exits, status 3",
    ]


def test_run_trace_json_writes_one_object_per_exit(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    assert main(["run", str(image), "--trace-json", str(out)]) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"kind": "mmio", "gpa": 0xD0000000, "size": 1, "write": True, "data": 0x41},
        {"kind": "mmio", "gpa": 0xD0000000, "size": 1, "write": True, "data": 0x0A},
        {"kind": "inout", "port": 0xF4, "size": 1, "in": False, "data": 3},
    ]


def test_run_reports_an_instruction_it_cannot_emulate(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "movaps.bin"
    path.write_bytes(MOVAPS_MMIO)
    status = main(["run", str(path)])
    _, err = capfd.readouterr()
    assert status == 0x7E
    assert err.strip() == "vmmio: guest stopped: inst_emul rip=0x100005 bytes=0f2803 reason=NOT_EMULATED"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "/nonexistent/g.bin"], "vmmio: cannot read /nonexistent/g.bin: No such file or directory"),
        (["decode", "zz"], "vmmio: not hex bytes: 'zz'"),
    ],
    ids=["missing-image", "bad-hex"],
)
def test_errors_are_one_line_with_status_2(
    argv: list[str], message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capfd.readouterr()
    assert err.strip() == message
    assert out == ""


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2


def test_decode_json_fields(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--json", "8b4308", "0f2803", "c4"]) == 1  # one argument cannot be decoded
    rows = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [(r["bytes"], r["length"], r["mnemonic"], r["emulated"]) for r in rows] == [
        ("8b4308", 3, "mov", True),
        ("0f2803", 3, "movaps", False),
        ("c4", None, None, False),
    ]
    assert rows[0]["memory"] == {"seg": 3, "base": 3, "index": -1, "scale": 1, "disp": 8}
    assert rows[2]["error"] == "TRUNCATED"


def test_decode_text_and_modes(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--mode", "16", "8b07"]) == 0
    out = capfd.readouterr().out
    assert "mov ax,word ptr [bx]" in out and "len  2" in out and "emulated" in out


def test_console_script_help_and_exit_code(image: Path) -> None:
    """The installed entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("vmmio")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vmmio.cli"]
    helped = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert "decode" in helped.stdout and "run" in helped.stdout and "examples:" in helped.stdout
    ran = subprocess.run([*cmd, "run", str(image)], capture_output=True, text=True, check=False)
    assert (ran.returncode, ran.stdout) == (3, "A\n")
