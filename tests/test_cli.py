"""The `vmmio` command, through its entry point: exit codes, error lines, limits, signals.

The tools have their own modules: test_cli_decode.py, test_cli_trace.py, test_cli_record.py,
test_cli_stats.py and test_cli_tools.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmmio.cli import (
    EXIT_GUEST,
    EXIT_INTERRUPTED,
    EXIT_LIMIT,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_STOPPED,
    EXIT_USAGE,
    main,
)
from vmmio.reference.kvm import kvm_usable

KVM_WHY_NOT = kvm_usable()
BACKENDS = [
    "unicorn",
    pytest.param("kvm", marks=pytest.mark.skipif(KVM_WHY_NOT is not None, reason=f"KVM: {KVM_WHY_NOT}")),
]

# mov ebx, 0xD0000000; mov byte [rbx], 'A'; mov byte [rbx], '\n'; mov al, 3; out 0xf4, al; hlt
PRINT_A_EXIT_3 = bytes.fromhex("bb000000d0c60341c6030ab003e6f4f4")
# mov ebx, 0xD0010000; addps xmm0, [rbx]; hlt  -- an MMIO access vmmio does not emulate (vector arithmetic)
ADDPS_MMIO = bytes.fromhex("bb000001d00f5803f4")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "guest.bin"
    path.write_bytes(PRINT_A_EXIT_3)
    return path


def test_run_reports_the_guest_status_apart_from_its_own(
    image: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(image)]) == EXIT_GUEST
    out, err = capfd.readouterr()
    assert out == "A\n"
    assert err == "vmmio: guest exited with status 3\n"
    assert main(["run", str(image), "--guest-status"]) == 3


def test_run_reports_an_instruction_it_cannot_emulate(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "addps.bin"
    path.write_bytes(ADDPS_MMIO)
    status = main(["run", str(path)])
    _, err = capfd.readouterr()
    assert status == EXIT_STOPPED
    assert err.strip() == "vmmio: guest stopped: inst_emul rip=0x100005 bytes=0f5803 reason=NOT_EMULATED"


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (
            ["run", "/nonexistent/g.bin"],
            "vmmio: cannot read /nonexistent/g.bin: No such file or directory",
            3,
        ),
        (["decode", "zz"], "vmmio: not hex bytes: 'zz'", 2),
        (["run", "hello", "--trace-json", "/proc/none/t.json"], "vmmio: cannot write /proc/none/t.json: ", 2),
    ],
    ids=["missing-image", "bad-hex", "unwritable-trace"],
)
def test_errors_are_one_line_with_their_status(
    argv: list[str], message: str, status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status
    out, err = capfd.readouterr()
    assert err.strip().startswith(message) and "\n" not in err.strip()
    assert out == ""


def test_usage_errors_exit_2(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--no-such-option"])
    assert exc.value.code == 2
    capfd.readouterr()
    for argv in (["run"], ["run", "hello", "--kernel", "bzImage"], ["run", "hello", "--initrd", "x"]):
        assert main(argv) == 2
        err = capfd.readouterr().err
        assert err.startswith("vmmio: ") and err.count("\n") == 1, err


def test_console_script_help_and_exit_code(image: Path) -> None:
    """The installed entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("vmmio")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vmmio.cli"]
    helped = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert "decode" in helped.stdout and "run" in helped.stdout and "examples:" in helped.stdout
    ran = subprocess.run([*cmd, "run", str(image)], capture_output=True, text=True, check=False)
    assert (ran.returncode, ran.stdout) == (EXIT_GUEST, "A\n")


def vmmio_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("vmmio")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vmmio.cli"]


@pytest.mark.parametrize(
    "ram", ["0", "1", "1M", "1K", "-4096", "64G", "3G+1", "0x200001", "lots"], ids=lambda r: f"ram={r}"
)
def test_bad_ram_sizes_are_usage_errors(ram: str) -> None:
    done = subprocess.run([*vmmio_cmd(), "run", "hello", f"--ram={ram}"], capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr and "--ram" in done.stderr


@pytest.mark.parametrize("option", ["--max-exits=-1", "--timeout=0", "--timeout=-3", "--timeout=soon"])
def test_bad_limits_are_usage_errors(option: str) -> None:
    done = subprocess.run([*vmmio_cmd(), "run", "hello", option], capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr


def test_shipped_guests_run_by_name(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello"]) == EXIT_OK
    assert "Hello from vmmio!" in capfd.readouterr().out


LOOP = b"\xeb\xfe"  # jmp $: no exit ever
FLOOD = bytes.fromhex("66baf803b041eeebfd")  # mov dx, 0x3f8; mov al, 'A'; 1: out dx, al; jmp 1b


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_stops_a_guest_that_never_exits(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "loop.bin"
    path.write_bytes(LOOP)
    t = time.monotonic()
    done = subprocess.run(
        [*vmmio_cmd(), "run", str(path), "--backend", backend, "--timeout", "0.5"],
        capture_output=True,
        text=True,
    )
    assert time.monotonic() - t < 10
    assert done.returncode == EXIT_LIMIT
    assert done.stderr.splitlines()[-1].startswith("vmmio: guest stopped: timeout")


@pytest.mark.parametrize("code", [LOOP, FLOOD], ids=["no-exits", "uart-flood"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_any_guest_quickly(backend: str, code: bytes, tmp_path: Path) -> None:
    path = tmp_path / "guest.bin"
    path.write_bytes(code)
    proc = subprocess.Popen(
        [*vmmio_cmd(), "run", str(path), "--backend", backend],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # well inside the guest
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - sent < 0.5  # the goal is 0.1 s; a loaded CI machine gets some slack
    assert proc.returncode == EXIT_INTERRUPTED
    assert err.splitlines() == [err.splitlines()[-1]] and "interrupted" in err and "Traceback" not in err


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "flood.bin"
    path.write_bytes(FLOOD)
    proc = subprocess.Popen([*vmmio_cmd(), "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"A" * 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=10) == EXIT_PIPE
    assert "Traceback" not in err
