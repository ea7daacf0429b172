"""The shipped guest programs (guests/ -> vmmio/guests/) run through Machine, on each backend.

insntest checks every emulated instruction form inside the guest (MMIO run against RAM run); here we
require all of its cases to pass, compare its per-case digests with the same program run natively on
the host CPU (the hardware's answer, where the host can run it), and check that the images rebuild
byte for byte from the sources.
"""

from __future__ import annotations

import functools
import importlib
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from guest_images import IMAGES as TEST_IMAGES
from guest_images import record_injections

from vmmio.abi import InoutExit, MmioExit, VmExit
from vmmio.guests import BUILT_WITH, NAMES, Verdict, image_path, load, parse_report
from vmmio.machine import UART_MMIO, UART_PORT, Machine, RunResult
from vmmio.vmm.vcpu import Vcpu
from vmmio.x86.cpuid import CpuidTable

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
    # the rest of the integer instruction set (guests/insntest_int.inc)
    "xde_div_mmio_by_zero",
    "xde_idiv_mmio_quotient_overflow",
    "xud_lock_shl_mmio",
    "xud_lock_cmove_mmio",
    "xgp_movaps_mmio_misaligned",  # guests/insntest_vxcases.inc
    "xgp_movntdq_mmio_misaligned",
    # guests/insntest_ctlx.inc
    "xgp_mov_ds_mmio_tss_selector",
    "xnp_mov_es_mmio_not_present",
    "xss_mov_ss_mmio_not_present",
    "xgp_jmp_far_mmio_data_selector",
    "xgp_ltr_mmio_busy_tss",
    "xgp_ret_mmio_stack_non_canonical",
    "xpf_call_mmio_operand_stack_not_present",
}

BACKENDS = ["unicorn", "kvm"]

# Why insntest may skip a case on each backend: a CPUID feature the guest's CPU lacks (need=), and on the
# KVM reference the forms Linux's emulator cannot emulate (OPT_NOKVM).
SKIP_REASONS = {
    "unicorn": ("cpu lacks ",),
    "kvm": ("cpu lacks ", "not emulated by Linux's KVM emulator"),
}

# Where the KVM reference itself departs from the CPU, so insntest's verdict there says nothing about
# vmmio (on the Unicorn backend these cases must pass like all others).
KVM_DEVIATIONS = {
    # Linux's emulator_read_write() writes the first page of a page-split store before it translates
    # the second, so the #PF on the second page leaves the first bytes written; the CPU writes nothing.
    "xpf_movsd_split_into_not_present": "KVM writes the first half of a faulting split store",
    # Linux's emulator keeps only the last MMIO write of an instruction, so a far CALL's push of CS is
    # lost; its RETF pops a slot too many (tests/oracles_kvm/deviations.py: call-far-push, retf-pop).
    "call_far_m16_32_mmio_stack": "KVM loses the push of CS",
    "retf_q_mmio_stack": "KVM's RETF moves RSP a slot too far",
}


def _kvm_unavailable() -> str | None:
    """Why the KVM reference backend cannot run here, or None if it can. (It lives in vmmio.reference
    since the layers were redrawn; the old vmmio.backends.kvm path made these tests skip silently.)"""
    try:
        reference = importlib.import_module("vmmio.reference.kvm")
    except Exception as e:  # a host without the ioctl bindings it needs
        return f"vmmio.reference.kvm does not import ({type(e).__name__}: {e})"
    why: str | None = reference.kvm_usable()
    return why


# One device-visible request: ("mmio", gpa, size, write, data) or ("port", port, size, in, data).
Access = tuple[str, int, int, bool, int]


@dataclass(frozen=True)
class GuestRun:
    output: bytes  # everything the guest wrote to the UART
    result: RunResult
    injected: dict[int, int]  # RIP -> vector of each exception vmmio's kernel injected (Unicorn only)
    trace: list[Access]  # every MMIO and port request, in order
    cpuid: CpuidTable | None  # what vmmio's vCPU reports to the guest (None on KVM)


@functools.cache
def _run(name: str, backend: str) -> GuestRun:
    out = bytearray()
    m = Machine(uart_sink=out.extend)
    vcpu = m.vcpu(m.load(load(name)), backend=backend)
    injected = record_injections(vcpu)
    trace: list[Access] = []

    def record_exit(ex: VmExit) -> None:
        if isinstance(ex, MmioExit):
            trace.append(("mmio", ex.gpa, ex.size, ex.is_write, ex.data))
        elif isinstance(ex, InoutExit):
            trace.append(("port", ex.port, ex.size, ex.is_in, ex.data))

    result = m.run(vcpu, record_exit, max_exits=MAX_EXITS)
    cpuid = vcpu.cpuid if isinstance(vcpu, Vcpu) else None
    return GuestRun(bytes(out), result, injected, trace, cpuid)


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
    assert all(v.status in ("PASS", "KNOWN", "FAIL", "SKIP") for v in verdicts)
    skipped = [v for v in verdicts if v.status == "SKIP"]
    assert all(v.detail.startswith(SKIP_REASONS[backend]) for v in skipped), skipped
    if run.cpuid is not None:  # the engine answers CPUID from the backend's table: skips must agree with it
        lacks = {v.detail.split()[-1] for v in skipped}
        assert not any(run.cpuid.has(feature) for feature in lacks), lacks
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
    """The shipped images and the test guests (tests/guests/) both rebuild from guests/ byte for byte."""
    version = _toolchain()
    first, second = tmp_path / "first", tmp_path / "second"
    _build(first)
    _build(second)
    committed = {name: image_path(name) for name in NAMES}
    committed |= {path.stem: path for path in TEST_IMAGES.glob("*.bin")}
    assert {path.stem for path in first.glob("*.bin")} == committed.keys()
    for name in committed:
        built = (first / f"{name}.bin").read_bytes()
        assert built == (second / f"{name}.bin").read_bytes(), f"{name}: two builds differ"
    stale = [
        name for name, path in committed.items() if (first / f"{name}.bin").read_bytes() != path.read_bytes()
    ]
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
    verdicts = {v.name: v for v in _verdicts(run_guest("insntest", "unicorn").output)}
    guest = {name: v for name, v in verdicts.items() if v.digest}
    compared = [name for name, v in host.items() if v.status == "PASS" and verdicts[name].status != "SKIP"]
    assert set(compared) <= set(guest)
    differ = [name for name in compared if guest[name].digest != host[name].digest]
    assert not differ, f"vmmio and the host CPU disagree on: {', '.join(differ)}"


# Cases whose device-visible requests legitimately differ between vmmio (over Unicorn) and KVM.
TRACE_DEVIATIONS = {
    # CLFLUSH moves no data; Linux's emulator still performs a 1-byte read of the line.
    "clflush_m8": "KVM reads a byte for CLFLUSH",
    "clflush_m8_fs": "KVM reads a byte for CLFLUSH",
    # REP INS: Linux batches the port side (all port reads, then merged MMIO writes); the CPU and vmmio
    # alternate port and memory per element.
    "rep_insb_to_mmio": "KVM batches string I/O",
    # A read-modify-write through a read-only mapping of MMIO: Linux reads the device, the write faults,
    # and its emulator re-reads before injecting the #PF; the CPU checks write permission first.
    "xpf_add_read_only_mmio_mapping": "KVM reads the device twice before the #PF",
    # A misaligned 16-byte operand: Linux cuts it into 8-byte fragments from its first byte, vmmio into
    # naturally aligned pieces (tests/oracles_kvm/deviations.py: wide-access-fragments). Same bytes.
    "movups_load_unaligned": "KVM cuts 16 bytes into 8-byte fragments",
    "movupd_store": "KVM cuts 16 bytes into 8-byte fragments",
    "movdqu_load_unaligned": "KVM cuts 16 bytes into 8-byte fragments",
    "movups_store_unaligned": "KVM cuts 16 bytes into 8-byte fragments",
    "movdqu_store_unaligned": "KVM cuts 16 bytes into 8-byte fragments",
    # tests/oracles_kvm/deviations.py: far-pointer-read (offset and selector as one read) and
    # sldt-str-width (the destination read first).
    "lss_r16_m16_16": "KVM reads a far pointer as one operand",
    "sldt_m16": "KVM reads SLDT's destination before the store",
    "str_m16": "KVM reads STR's destination before the store",
}


def _per_case(run: GuestRun) -> dict[str, list[Access]]:
    """The requests each insntest case made, keyed by case name (UART traffic left out).

    A case runs, then prints its verdict line; the requests since the previous line belong to it.
    """
    cases: dict[str, list[Access]] = {}
    current: list[Access] = []
    line = bytearray()
    for access in run.trace:
        kind, addr, _size, write, data = access
        uart = (kind == "mmio" and UART_MMIO <= addr < UART_MMIO + 8) or (
            kind == "port" and UART_PORT <= addr < UART_PORT + 7
        )
        if not uart:
            current.append(access)
        elif kind == "mmio" and addr == UART_MMIO and write:
            line.append(data & 0xFF)
            if data == 0x0A:
                words = line.decode("ascii", errors="replace").split()
                if len(words) > 1 and words[0] in ("PASS", "FAIL", "KNOWN"):
                    cases[words[1]] = current
                current, line = [], bytearray()
    return cases


def test_insntest_traces_match_between_backends() -> None:
    """Every case makes the same device-visible requests under vmmio and under KVM's own emulator."""
    ours = _per_case(run_guest("insntest", "unicorn"))
    theirs = _per_case(run_guest("insntest", "kvm"))
    runs = [_verdicts(run_guest("insntest", backend).output) for backend in BACKENDS]
    skipped = {v.name for verdicts in runs for v in verdicts if v.status == "SKIP"}
    assert ours.keys() ^ theirs.keys() <= skipped, "a case ran on one backend only, without a SKIP"
    ours = {name: trace for name, trace in ours.items() if name in theirs}
    assert len(ours) >= 350
    differing = {name for name in ours if ours[name] != theirs[name]}
    unexplained = differing - TRACE_DEVIATIONS.keys() - KVM_DEVIATIONS.keys()
    detail = {name: (ours[name][:8], theirs[name][:8]) for name in sorted(unexplained)}
    assert not unexplained, f"traces differ: {detail}"
    stale = TRACE_DEVIATIONS.keys() - differing
    assert not stale, f"documented deviations no longer differ: {sorted(stale)}"
