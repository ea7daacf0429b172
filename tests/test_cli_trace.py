"""`vmmio run --trace` / `--trace-json`: one line per exit with time, vCPU, RIP, instruction and access."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_cli import ADDPS_MMIO, BACKENDS, PRINT_A_EXIT_3, vmmio_cmd

from vmmio.cli import EXIT_GUEST, EXIT_OK, EXIT_STOPPED, main

ROOT = Path(__file__).resolve().parent.parent
# Fields that vary from run to run.
TIMING = ("t", "kernel_ns", "device_ns")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "guest.bin"
    path.write_bytes(PRINT_A_EXIT_3)
    return path


def trace_json(tmp_path: Path, *argv: str, status: int = EXIT_GUEST) -> list[dict[str, Any]]:
    out = tmp_path / "trace.jsonl"
    assert main(["run", *argv, "--trace-json", str(out)]) == status
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_text_trace_names_rip_instruction_access_and_value(
    image: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(image), "--trace"]) == EXIT_GUEST
    lines = capfd.readouterr().err.splitlines()
    pattern = re.compile(r"\[exit\] +(\d+) +(\d+\.\d{6}) cpu0 +(0x[0-9a-f]+) (.*)$")
    parsed = [pattern.match(line) for line in lines[:3]]
    assert all(parsed), lines
    assert [(m[1], m[3], " ".join(m[4].split())) for m in parsed if m] == [
        ("1", "0x100005", "mmio write gpa=0xd0000000 size=1 value=0x41 mov byte ptr [rbx],0x41"),
        ("2", "0x100008", "mmio write gpa=0xd0000000 size=1 value=0xa mov byte ptr [rbx],0xa"),
        ("3", "0x10000d", "inout out port=0xf4 size=1 value=0x3 out 0xf4,al"),
    ]
    times = [float(m[2]) for m in parsed if m]
    assert times == sorted(times) and times[0] > 0
    assert lines[3:] == ["[vmmio] 3 exits, status 3", "vmmio: guest exited with status 3"]


def test_json_trace_fields(image: Path, tmp_path: Path) -> None:
    rows = trace_json(tmp_path, str(image))
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in rows] == [
        {
            "n": 1,
            "vcpu": 0,
            "rip": "0x100005",
            "rip_past": False,
            "insn": "mov byte ptr [rbx],0x41",
            "bytes": "c60341",
            "kind": "mmio",
            "gpa": "0xd0000000",
            "size": 1,
            "dir": "write",
            "value": "0x41",
        },
        {
            "n": 2,
            "vcpu": 0,
            "rip": "0x100008",
            "rip_past": False,
            "insn": "mov byte ptr [rbx],0xa",
            "bytes": "c6030a",
            "kind": "mmio",
            "gpa": "0xd0000000",
            "size": 1,
            "dir": "write",
            "value": "0xa",
        },
        {
            "n": 3,
            "vcpu": 0,
            "rip": "0x10000d",
            "rip_past": False,
            "insn": "out 0xf4,al",
            "bytes": "e6f4",
            "kind": "inout",
            "port": "0xf4",
            "size": 1,
            "dir": "out",
            "value": "0x3",
        },
    ]
    assert all(r["kernel_ns"] > 0 and r["device_ns"] > 0 for r in rows)
    assert rows[0]["t"] < rows[1]["t"] < rows[2]["t"]


def test_a_read_shows_the_value_the_device_answered(tmp_path: Path) -> None:
    """hello polls the UART's line status register: the trace shows what the 16550 model returned."""
    rows = trace_json(tmp_path, "hello", status=EXIT_OK)
    first = rows[0]
    assert (first["kind"], first["dir"], first["gpa"], first["insn"]) == (
        "mmio",
        "read",
        "0xd0000005",
        "test byte ptr [rdi+0x5],0x20",
    )
    assert first["value"] == "0x60"  # THRE | TEMT: the transmitter is empty
    assert rows[-1]["kind"] == "inout" and len(rows) == 203


def test_an_instruction_vmmio_cannot_emulate_is_traced(tmp_path: Path) -> None:
    path = tmp_path / "addps.bin"
    path.write_bytes(ADDPS_MMIO)
    (row,) = trace_json(tmp_path, str(path), status=EXIT_STOPPED)
    assert {k: row[k] for k in ("kind", "reason", "rip", "insn")} == {
        "kind": "inst_emul",
        "reason": "NOT_EMULATED",
        "rip": "0x100005",
        "insn": "addps xmm0,xmmword ptr [rbx]",
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_trace_the_same_accesses(backend: str, tmp_path: Path) -> None:
    """KVM completes a write before it reports it: RIP is already past it, and the trace says so."""
    rows = trace_json(tmp_path, "hello", "--backend", backend, status=EXIT_OK)
    reads = [r for r in rows if r["dir"] == "read"]
    writes = [r for r in rows if r["dir"] in ("write", "out")]
    assert {r["insn"] for r in reads} == {"test byte ptr [rdi+0x5],0x20"}
    assert all(not r["rip_past"] for r in reads)
    if backend == "kvm":
        assert all(r["rip_past"] for r in writes)
        assert {r["insn"] for r in writes} == {"inc rsi", "hlt"}  # the instructions after the writes
    else:
        assert not any(r["rip_past"] for r in writes)
        assert {r["insn"] for r in writes} == {"mov byte ptr [rdi],al", "out 0xf4,al"}


def test_docs_describe_every_field(image: Path, tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "trace.md").read_text()
    rows = trace_json(tmp_path, str(image))
    path = tmp_path / "addps.bin"
    path.write_bytes(ADDPS_MMIO)
    rows += trace_json(tmp_path, str(path), status=EXIT_STOPPED)
    for key in sorted({k for r in rows for k in r}):
        assert f"| `{key}` |" in doc, f"docs/trace.md does not describe {key}"


def test_trace_through_the_entry_point(image: Path) -> None:
    done = subprocess.run([*vmmio_cmd(), "run", str(image), "--trace"], capture_output=True, text=True)
    assert done.returncode == EXIT_GUEST
    assert done.stderr.count("[exit]") == 3 and "mov byte ptr [rbx],0x41" in done.stderr
