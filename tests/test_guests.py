"""The shipped guest programs (guests/ -> vmmio/guests/) run through Machine, on each backend.

insntest checks every emulated instruction form inside the guest (MMIO run against RAM run); here we
require all of its cases to pass, compare its per-case digests with the same program run natively on
the host CPU (the hardware's answer, where the host can run it), and check that the images rebuild
byte for byte from the sources.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmmio.guests import BUILT_WITH, NAMES, Verdict, image_path, load, parse_report
from vmmio.machine import Machine, RunResult
from vmmio.vmm.vcpu import Vcpu

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "guests" / "build.py"
MAX_EXITS = 2_000_000  # insntest needs ~36k; a runaway guest stops here instead of hanging the suite

HELLO_OUTPUT = (
    b"Hello from vmmio!\n(MMIO UART: test m8,imm8 on LSR, mov m8,r8 to THR; exit: out imm8,al to port 0xf4)\n"
)

# The exception tests insntest must report (vector, error code, CR2 and RIP are checked in the guest).
EXCEPTION_TESTS = {
    "xpf_movsb_mmio_to_not_present",
    "xpf_movsq_mmio_to_read_only",
    "xpf_rep_movsb_stops_at_not_present",
    "xpf_movsd_split_into_not_present",
    "xpf_cmpsb_not_present_vs_mmio",
    "xpf_pop_mmio_stack_to_not_present",
    "xpf_add_read_only_mmio_mapping",
    "xgp_movsb_mmio_to_non_canonical",
    "xss_push_mmio_non_canonical_rsp",
    "xud_lock_mov_store_mmio",
    "xud_lock_add_reg_from_mmio",
    "xud_lock_movsb_from_mmio",
    "xud_lock_bt_mmio",
    "xud_lock_push_mmio",
}

BACKENDS = ["unicorn", "kvm"]

# Where the KVM reference itself departs from the CPU, so insntest's verdict there says nothing about
# vmmio (on the Unicorn backend these cases must pass like all others).
KVM_DEVIATIONS = {
    # Linux's emulator_read_write() writes the first page of a page-split store before it translates
    # the second, so the #PF on the second page leaves the first bytes written; the CPU writes nothing.
    "xpf_movsd_split_into_not_present": "KVM writes the first half of a faulting split store",
}


def _kvm_unavailable() -> str | None:
    """Why the KVM reference backend cannot run here, or None if it can."""
    try:
        importlib.import_module("vmmio.backends.kvm")
    except Exception as e:  # not written yet, or a host without the ioctl bindings it needs
        return f"vmmio.backends.kvm does not import ({type(e).__name__}: {e})"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not available"
    return None


@dataclass(frozen=True)
class GuestRun:
    output: bytes  # everything the guest wrote to the UART
    result: RunResult
    injected: dict[int, int]  # RIP -> vector of each exception vmmio's kernel injected (Unicorn only)


@functools.cache
def _run(name: str, backend: str) -> GuestRun:
    out = bytearray()
    m = Machine(uart_sink=out.extend)
    vcpu = m.vcpu(m.load(load(name)), backend=backend)
    injected: dict[int, int] = {}
    if isinstance(vcpu, Vcpu):
        hw = vcpu.backend
        deliver = hw.inject_exception

        def record(vector: int, error_code: int | None, cr2: int | None) -> None:
            injected[hw.get_regs().rip] = vector
            deliver(vector, error_code, cr2)

        # The kernel injects through backend.inject_exception; faults the engine raises by itself do not.
        setattr(hw, "inject_exception", record)  # noqa: B010 - shadows the method on this instance only
    result = m.run(vcpu, max_exits=MAX_EXITS)
    return GuestRun(bytes(out), result, injected)


def run_guest(name: str, backend: str) -> GuestRun:
    """The run of a shipped guest (done once per session); skips when the backend is not available."""
    if backend == "kvm":
        reason = _kvm_unavailable()
        if reason is not None:
            pytest.skip(reason)
    return _run(name, backend)


def _verdicts(output: bytes) -> list[Verdict]:
    return parse_report(output.decode("ascii", errors="replace"))


def test_images_are_shipped() -> None:
    for name in NAMES:
        path = image_path(name)
        assert path.is_file() and path.stat().st_size > 0, f"{path} missing: run guests/build.py"
        assert load(name) == path.read_bytes()
    with pytest.raises(ValueError, match="unknown guest"):
        image_path("nonesuch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_hello(backend: str) -> None:
    run = run_guest("hello", backend)
    output, result = run.output, run.result
    assert output == HELLO_OUTPUT
    assert (result.reason, result.status) == ("exit", 0), result


@pytest.mark.parametrize("backend", BACKENDS)
def test_insntest(backend: str) -> None:
    run = run_guest("insntest", backend)
    output, result = run.output, run.result
    verdicts = _verdicts(output)
    text = output.decode("ascii", errors="replace")
    tolerated = KVM_DEVIATIONS if backend == "kvm" else {}
    failing = [v for v in verdicts if v.status == "FAIL" and v.name not in tolerated]
    assert not failing, "failing cases: " + ", ".join(v.name for v in failing) + "\n" + text
    failed = sum(v.status == "FAIL" for v in verdicts)
    assert result.reason == "exit", f"{result}\n{text[-2000:]}"
    assert result.status == failed, f"{result}\n{text[-2000:]}"
    names = {v.name for v in verdicts}
    assert len(names) == len(verdicts), "case names must be unique"
    assert names >= EXCEPTION_TESTS, f"missing: {sorted(EXCEPTION_TESTS - names)}"
    assert len(verdicts) >= 350
    assert all(v.status in ("PASS", "KNOWN", "FAIL") for v in verdicts)
    summary = re.search(r"insntest: (\d+) cases, (\d+) failed, (\d+) known failures", text)
    assert summary is not None and int(summary[1]) == len(verdicts) and int(summary[2]) == failed


def test_insntest_reports_known_failures_by_reason() -> None:
    """A KNOWN verdict must say why (the analysis lives in the guest source next to the case)."""
    for v in _verdicts(run_guest("insntest", "unicorn").output):
        if v.status == "KNOWN":
            assert "known failure:" in v.detail, v


def test_insntest_exceptions_come_from_the_kernel() -> None:
    """Each exception test's fault was injected by vmmio's kernel while emulating the MMIO access, not
    raised by the Unicorn engine on its own (which would make the guest's check say nothing of vmmio)."""
    run = run_guest("insntest", "unicorn")
    checked = 0
    for v in _verdicts(run.output):
        if v.name not in EXCEPTION_TESTS:
            continue
        m = re.match(r"vector=(\d+) .*rip=([0-9a-f]{16})", v.detail)
        assert m is not None, v
        assert run.injected.get(int(m[2], 16)) == int(m[1]), f"{v.name}: not injected by the kernel"
        checked += 1
    assert checked == len(EXCEPTION_TESTS)


def _toolchain() -> str:
    proc = subprocess.run([sys.executable, str(BUILD), "--toolchain"], capture_output=True, text=True)
    if proc.returncode == 2:
        pytest.skip(f"no x86-64 GNU as/ld to build the guests: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _build(out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--out", str(out), *extra], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    version = _toolchain()
    first, second = tmp_path / "first", tmp_path / "second"
    _build(first)
    _build(second)
    for name in NAMES:
        built = (first / f"{name}.bin").read_bytes()
        assert built == (second / f"{name}.bin").read_bytes(), f"{name}: two builds differ"
    stale = [name for name in NAMES if (first / f"{name}.bin").read_bytes() != load(name)]
    if stale and version != BUILT_WITH:
        pytest.skip(f"images built with {BUILT_WITH!r}, here {version!r}: only determinism was checked")
    assert not stale, f"shipped images differ from the sources: {stale}; run guests/build.py"


def test_insntest_matches_host_cpu(tmp_path: Path) -> None:
    """Each case's digest on vmmio (MMIO run) equals the host CPU's for the same case run natively."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the native build of insntest runs on x86-64 Linux only")
    _toolchain()
    _build(tmp_path / "images", "--native", str(tmp_path))
    try:
        native = subprocess.run([str(tmp_path / "insntest-native")], capture_output=True, timeout=120)
    except OSError as e:
        pytest.skip(f"cannot run the native build here: {e}")
    if b"FATAL mmap failed" in native.stdout:
        pytest.skip("the native build cannot map its fixed addresses in this process")
    host = {v.name: v for v in _verdicts(native.stdout)}
    assert native.returncode == 0 and host, native.stdout.decode(errors="replace")[-2000:]
    assert all(v.status in ("PASS", "SKIP") for v in host.values())
    guest = {v.name: v for v in _verdicts(run_guest("insntest", "unicorn").output) if v.digest}
    compared = [name for name, v in host.items() if v.status == "PASS"]
    assert set(compared) <= set(guest)
    differ = [name for name in compared if guest[name].digest != host[name].digest]
    assert not differ, f"vmmio and the host CPU disagree on: {', '.join(differ)}"
