"""The shipped guests run the same in process and over `vmmio serve`: Python client and C example VMM.

Remote runs go through `RemoteMachine` (Machine's own devices and run loop, the kernel in a server
process); they must produce the same UART output and the very same sequence of device requests as the
in-process run. The C example VMM (clients/c) is built with gcc and runs both guests with its own
device models against a server started here.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmio.abi import InoutExit, MmioExit, VmExit
from vmmio.guests import NAMES, Verdict, image_path, load, parse_report
from vmmio.machine import Machine, RunResult
from vmmio.service.client import Client, RemoteMachine
from vmmio.service.fuzz import start_server

REPO = Path(__file__).resolve().parents[1]
C_DIR = REPO / "clients" / "c"
MAX_EXITS = 2_000_000

Access = tuple[str, int, int, bool, int]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve")
    path = str(tmp / "vmm.sock")
    proc = start_server(path, str(tmp / "serve.log"))
    yield path
    proc.terminate()
    assert proc.wait(10) == 0, (tmp / "serve.log").read_text()


def _run(machine: Machine, name: str) -> tuple[bytes, RunResult, list[Access]]:
    trace: list[Access] = []

    def record(ex: VmExit) -> None:
        if isinstance(ex, MmioExit):
            trace.append(("mmio", ex.gpa, ex.size, ex.is_write, ex.data))
        elif isinstance(ex, InoutExit):
            trace.append(("port", ex.port, ex.size, ex.is_in, ex.data))

    vcpu = machine.vcpu(machine.load(load(name)))
    result = machine.run(vcpu, record, max_exits=MAX_EXITS)
    return bytes(machine.uart.output), result, trace


@functools.cache
def _local(name: str) -> tuple[bytes, RunResult, list[Access]]:
    return _run(Machine(uart_sink=lambda _: None), name)


def _remote(path: str, name: str) -> tuple[bytes, RunResult, list[Access]]:
    with Client.connect(path) as client:
        return _run(RemoteMachine(client, uart_sink=lambda _: None), name)


def _passed_or_cpu_skip(v: Verdict) -> bool:
    """Every insntest case passes, or is skipped because the backend's CPU lacks its feature."""
    return v.status == "PASS" or (v.status == "SKIP" and v.detail.startswith("cpu lacks"))


@pytest.mark.parametrize("where", ["local", "remote"])
@pytest.mark.parametrize("name", NAMES)
def test_guest_runs(server: str, name: str, where: str) -> None:
    output, result, trace = _local(name) if where == "local" else _remote(server, name)
    verdicts = parse_report(output.decode("ascii", errors="replace"))
    assert (result.reason, result.status) == ("exit", 0), (result, output[-2000:])
    if name == "hello":
        assert output.startswith(b"Hello from vmmio!\n")
    else:
        # Every case passes, or is skipped because the CPU the backend models lacks its feature.
        assert len(verdicts) >= 350, output[-2000:]
        assert all(
            v.status == "PASS" or (v.status == "SKIP" and v.detail.startswith("cpu lacks")) for v in verdicts
        ), output[-2000:]
    assert len(trace) > 100


@pytest.mark.parametrize("name", NAMES)
def test_remote_matches_local_request_for_request(server: str, name: str) -> None:
    """Same output, same status, and the same device requests in the same order, exit for exit."""
    local, remote = _local(name), _remote(server, name)
    assert remote[0] == local[0]
    assert (remote[1].reason, remote[1].status, remote[1].exits) == (
        local[1].reason,
        local[1].status,
        local[1].exits,
    )
    assert remote[2] == local[2]


def test_run_remote_auto_from_the_command_line() -> None:
    """`vmmio run --remote auto` starts a private server and runs the guest there."""
    vmmio = shutil.which("vmmio", path=str(Path(__import__("sys").executable).parent))
    assert vmmio is not None
    proc = subprocess.run([vmmio, "run", "hello", "--remote", "auto"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"Hello from vmmio!\n")


@pytest.fixture(scope="module")
def example_vmm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C client cannot be built")
    out = tmp_path_factory.mktemp("c") / "example_vmm"
    sources = [str(C_DIR / "example_vmm.c"), str(C_DIR / "vmmio_client.c")]
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    proc = subprocess.run([gcc, *flags, "-o", str(out), *sources], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", NAMES)
def test_c_example_vmm(server: str, example_vmm: Path, name: str) -> None:
    """The C VMM's own UART and debug-exit models give the guest's output byte for byte."""
    proc = subprocess.run([str(example_vmm), server, str(image_path(name))], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == _local(name)[0]
    if name == "insntest":
        verdicts = parse_report(proc.stdout.decode("ascii", errors="replace"))
        assert len(verdicts) >= 350 and all(_passed_or_cpu_skip(v) for v in verdicts)
        passed = sum(v.status == "PASS" for v in verdicts)
        assert f"{len(verdicts)} cases, {passed} passed, 0 failed".encode() in proc.stderr
