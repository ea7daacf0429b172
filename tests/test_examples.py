"""Every example runs, and the README's code is the examples' code, not a copy that can drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmmio.reference.kvm import kvm_usable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_low_level_loop_answers_each_request_by_hand() -> None:
    out = run("low_level.py")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "MmioExit(gpa=0xd0000000, size=4, is_write=False, data=0x0)",
        "MmioExit(gpa=0xd0000004, size=4, is_write=True, data=0x2a)",
        "InoutExit(port=0xf4, size=1, is_in=False, data=0x2a)",
        "register 1 = 42, eax = 0x2a",
    ]


EXPECTED_DEVICE_LOG = [
    "read  0x00 -> 0x31304456",
    "write 0x04 <- 0x1",
    "read  0x08 -> 0x1",
    "read  0x08 -> 0x2",
    "read  0x08 -> 0x3",
    "write 0x0c <- 0x6",
    "RESULT = 6, guest status 0",
]


def test_register_device_through_the_machine() -> None:
    out = run("register_device.py")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == EXPECTED_DEVICE_LOG


def test_same_guest_on_the_kvm_reference() -> None:
    why = kvm_usable()
    if why is not None:
        pytest.skip(f"/dev/kvm cannot run a vCPU here: {why}")
    out = run("kvm_reference.py")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == EXPECTED_DEVICE_LOG


def test_every_example_is_tested() -> None:
    tested = {"low_level.py", "register_device.py", "kvm_reference.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_readme_code_is_copied_from_the_examples() -> None:
    """Each ```python block in the README is an example file, whole, or a run of its lines."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README shows no Python code"
    sources = {p.name: p.read_text() for p in EXAMPLES.glob("*.py")}
    for block in blocks:
        assert any(block in text for text in sources.values()), f"README code not in examples/:\n{block}"
