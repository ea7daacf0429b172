"""The test guests: guests/*.S built by guests/build.py into tests/guests/, each run by its own harness.

Unlike the shipped guests (vmmio/guests/) they are not meant to run alone under `vmmio run`: the harness
answers their requests, reads their registers between exits and their results from RAM. Helpers here put
one on either backend: vmmio's kernel over Unicorn, or the KVM reference (skipped where unusable).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from vmmio.machine import ExitSource, Machine
from vmmio.vmm.vcpu import Vcpu
from vmmio.x86.state import Regs

IMAGES = Path(__file__).resolve().parent / "guests"
BACKENDS = ("unicorn", "kvm")


def image(name: str) -> bytes:
    """The flat image of test guest `name` (guests/NAME.S)."""
    path = IMAGES / f"{name}.bin"
    assert path.is_file(), f"{path} missing: run guests/build.py"
    return path.read_bytes()


def kvm_unavailable() -> str | None:
    """Why the KVM reference cannot run here, or None."""
    try:
        reference = importlib.import_module("vmmio.reference.kvm")
    except Exception as e:  # a host without the ioctl bindings it needs
        return f"vmmio.reference.kvm does not import ({type(e).__name__}: {e})"
    why: str | None = reference.kvm_usable()
    return why


def require(backend: str) -> None:
    """Skip the calling test when `backend` cannot run on this host."""
    if backend == "kvm":
        why = kvm_unavailable()
        if why is not None:
            pytest.skip(why)


def start(
    machine: Machine, name: str, backend: str, *, rep_budget: int | None = None, **regs: int
) -> ExitSource:
    """Load test guest `name` into `machine` and create a vCPU at its entry on `backend`, with the named
    registers changed first (how a harness picks a variant); `rep_budget` is vmmio's kernel's."""
    require(backend)
    loaded = machine.load(image(name))
    if rep_budget is not None:
        assert backend == "unicorn", "the REP budget is vmmio's kernel's"
        vcpu: ExitSource = machine.vm.create_vcpu(state=machine.entry_state(loaded), rep_budget=rep_budget)
    else:
        vcpu = machine.vcpu(loaded, backend)
    if regs:
        state = get_regs(vcpu)
        for reg, value in regs.items():
            setattr(state, reg, value)
        vcpu.set_regs(state)  # type: ignore[attr-defined]
    return vcpu


def get_regs(vcpu: ExitSource) -> Regs:
    """The vCPU's GPRs, RIP and RFLAGS between exits, on either backend."""
    if isinstance(vcpu, Vcpu):
        return vcpu.regs
    read: Callable[[], Regs] = vcpu.get_regs  # type: ignore[attr-defined]
    return read()


def record_injections(vcpu: ExitSource) -> dict[int, int]:
    """RIP -> vector of every exception vmmio's kernel injects from now on (empty on KVM, whose
    emulator's faults cannot be told apart from the CPU's). Faults the execution backend raises by
    itself never go through `inject_exception`, so they are not in it."""
    injected: dict[int, int] = {}
    if isinstance(vcpu, Vcpu):
        hw = vcpu.backend
        deliver = hw.inject_exception

        def record(vector: int, error_code: int | None, cr2: int | None) -> None:
            injected[hw.get_regs().rip] = vector
            deliver(vector, error_code, cr2)

        setattr(hw, "inject_exception", record)  # noqa: B010 - shadows the method on this instance only
    return injected
