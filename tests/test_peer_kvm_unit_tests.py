"""kvm-unit-tests' x86/emulator.flat, unmodified, on the PC machine: both backends, its own report parsed.

The suite (GPLv2, upstream sources in ../shared/peer) is built by `make kvm-unit-tests` into the
ignored build/kvm-unit-tests; this test builds it on first use and skips only where the sources or the
toolchain are missing. The guest runs as a user runs it, `vmmio run --machine pc emulator.flat`, and
reports PASS/FAIL/SKIP lines and a SUMMARY on the UART.

Its SKIPs: the tests behind KVM's forced-emulation prefix (a KVM debugging knob,
kvm.force_emulation_prefix) are skipped when the prefix raises #UD, as it does on any CPU; the MOVBE
test is skipped on Unicorn because the backend hides MOVBE from CPUID (the engine runs its register
form instead of raising #UD).

Three checks fail on the Unicorn backend, each in code the engine runs natively from RAM (no MMIO, no
exit, nothing vmmio's kernel sees), each a QEMU 5 TCG behaviour the backend documents as an engine limit
and tests/test_engine_deviations.py or tests/oracles/known.py shows next to the host CPU or KVM: MOVAPS
to a misaligned address raises no #GP; an instruction breakpoint on the instruction after MOV SS fires
(Intel suppresses it); IRETQ to CPL 3 that nulls GS also zeroes GS's base (the CPU keeps it in 64-bit
mode). They are listed in ENGINE_LIMITS: a new failure, or one of them passing, fails this test.

On the KVM reference the run ends early, by design of the reference: the suite checks that the register
form of MOVBE (0F 38 F0 C0) raises #UD; this host's KVM intercepts the #UD and hands the instruction to
Linux's emulator, which reports an emulation failure (KVM_INTERNAL_ERROR_EMULATION). The reference
reports that as an INST_EMUL exit, and the machine stops there, as bhyve and QEMU stop on an
instruction their kernel could not emulate. Every check before it must pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAT = REPO / "build" / "kvm-unit-tests" / "x86" / "emulator.flat"
PEER = [REPO.parent / "shared" / "peer", Path("/work/shared/peer")]
TIMEOUT_S = 300
KVM_STOP = "bytes=0f38f0c0"  # register-form MOVBE: see the module docstring
ENGINE_LIMITS = {
    "FAIL: unaligned movaps exception",
    "FAIL: no fep: #DB suppressed after MOV SS",
    "FAIL: Test ret/iret with a nullified segment",
}


@pytest.fixture(scope="module")
def emulator_flat() -> Path:
    if FLAT.exists():
        return FLAT
    if not any(p.glob("kvm-unit-tests-*.tar.xz") for p in PEER if p.is_dir()):
        pytest.skip("kvm-unit-tests sources not found in ../shared/peer")
    for tool in ("make", "gcc", "tar"):
        if shutil.which(tool) is None:
            pytest.skip(f"building kvm-unit-tests needs {tool}, not installed")
    done = subprocess.run(["make", "-s", "kvm-unit-tests"], cwd=REPO, capture_output=True, text=True)
    if done.returncode or not FLAT.exists():
        pytest.fail(f"make kvm-unit-tests failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return FLAT


def _run(flat: Path, backend: str) -> tuple[str, str, int]:
    cmd = [sys.executable, "-m", "vmmio", "run", "--machine", "pc", "--backend", backend, str(flat)]
    done = subprocess.run(
        [*cmd, "--timeout", str(TIMEOUT_S)], capture_output=True, text=True, timeout=TIMEOUT_S + 60
    )
    return done.stdout, done.stderr, done.returncode


def _counts(text: str) -> dict[str, int]:
    return {kind: len(re.findall(rf"^{kind}: ", text, re.M)) for kind in ("PASS", "FAIL", "SKIP")}


def test_emulator_flat_on_unicorn(emulator_flat: Path) -> None:
    out, err, status = _run(emulator_flat, "unicorn")
    counts = _counts(out)
    assert {line for line in out.splitlines() if line.startswith("FAIL")} == ENGINE_LIMITS
    summary = re.search(r"^SUMMARY: (\d+) tests(?:, (\d+) unexpected failures)?", out, re.M)
    assert summary, f"no SUMMARY line; stderr: {err}\n{out[-2000:]}"
    assert int(summary.group(2) or 0) == len(ENGINE_LIMITS), summary.group(0)
    assert int(summary.group(1)) == counts["PASS"] + counts["FAIL"] + counts["SKIP"] >= 150
    assert counts["SKIP"] == 2 and "forced emulation" in out and "MOVBE unsupported" in out
    assert status == 1 and "guest exited with status 1" in err, (status, err)  # the suite's failures


def test_emulator_flat_on_the_kvm_reference(emulator_flat: Path) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is not usable here")
    out, err, _ = _run(emulator_flat, "kvm")
    counts = _counts(out)
    assert counts["FAIL"] == 0, [line for line in out.splitlines() if line.startswith("FAIL")]
    if "SUMMARY:" not in out:  # the documented stop, and nowhere else
        assert KVM_STOP in err and "NOT_EMULATED" in err, err
        assert counts["PASS"] >= 90, counts
