"""Exceptions raised one after another, each handled by the guest and resumed (guests/xchain.S).

On the Unicorn backend the engine raises most guest exceptions itself and the backend delivers them
through the IDT. QEMU, inside the engine, must not keep believing the first one is still being
delivered: it used to turn the second into #DF and the third into a triple fault (issue 10). The guest
runs chains of 2, 3 and 100 engine-raised #GP (non-canonical address), #PF (not present) and #UD, INT3,
a mix, engine and kernel faults in turn, and 100 demand-paged #PF; it logs each exception (vector, error
code, CR2, RIP) to RAM. Here every log entry is checked against what the CPU must report, and the
Unicorn run against the KVM reference (the CPU and Linux, not vmmio, deliver there), case by case.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import pytest
from guest_images import BACKENDS, record_injections, start

from vmmio.machine import Machine, RunResult

RESULTS = 0x30_0000
LOG = 0x32_0000
RECORD = 72
ENTRY = 32
W = 0x80_0000_0000  # the guest's demand-paged window
W_NP = W + 0x1F_F000  # its page that is never mapped
ABORTED, SKIPPED = 1, 2
GP, PF, UD, BP = 13, 14, 6, 3
KVM_SKIPS = {"int3_x100"}  # Linux's emulator on this KVM reference cannot run INT3 (guest: F_NOKVM)

# One log entry: (vector, error code, CR2, RIP). CR2 None: not checked (it keeps the last #PF's).
Entry = tuple[int, int, int, int]
Want = tuple[int, int, int | None, int]


@dataclass(frozen=True)
class Chain:
    name: str
    first: int  # RIP of the first faulting instruction
    expected: int  # exceptions the guest expects
    count: int  # exceptions it saw
    flags: int  # ABORTED: an unexpected vector (#DF...) or too many; SKIPPED: not run on this backend
    value: int  # RDX at the end of the body (the sum the demand-paging case reads)
    log: tuple[Entry, ...]


@dataclass(frozen=True)
class ChainRun:
    result: RunResult
    chains: dict[str, Chain]
    injected: dict[int, int]  # RIP -> vector injected by vmmio's kernel (Unicorn only)


@functools.cache
def _run(backend: str) -> ChainRun:
    m = Machine(uart_sink=lambda _: None)
    vcpu = start(m, "xchain", backend)
    injected = record_injections(vcpu)
    result = m.run(vcpu, max_exits=100)
    mem = m.vm.memory
    assert mem.read(RESULTS, 8) == b"XCHAIN01", f"the guest wrote no results ({result})"
    chains: dict[str, Chain] = {}
    for n in range(mem.read_int(RESULTS + 8, 8)):
        raw = mem.read(RESULTS + 16 + RECORD * n, RECORD)
        name = raw[:24].rstrip(b"\0").decode()
        first, expected, count, at, flags, value = struct.unpack_from("<6Q", raw, 24)
        log = tuple(struct.unpack("<4Q", mem.read(LOG + ENTRY * (at + i), ENTRY)) for i in range(count))
        chains[name] = Chain(name, first, expected, count, flags, value, log)
    return ChainRun(result, chains, injected)


def chains_on(backend: str) -> ChainRun:
    return _run(backend)


def want(chain: Chain) -> list[Want]:
    """What the CPU reports for each exception of the case: vector, error code, CR2, RIP."""
    kind, _, n = chain.name.rpartition("_x")
    first, count = chain.first, int(n)
    gp, pf, ud = (GP, 0, None), (PF, 0, W_NP), (UD, 0, None)
    if kind == "gp":
        return [(*gp, first + 3 * i) for i in range(count)]
    if kind == "pf":
        return [(*pf, first + 3 * i) for i in range(count)]
    if kind == "ud":
        return [(*ud, first + 2 * i) for i in range(count)]
    if kind == "int3":
        return [(BP, 0, None, first + i + 1) for i in range(count)]  # a trap: RIP after the INT3
    if kind == "mix":
        return [(*(gp, pf, ud)[i % 3], first + 3 * i) for i in range(count)]
    if kind == "kernel_engine":
        return [(*(gp, ud)[i % 2], first + 3 * i) for i in range(count)]
    if kind == "demand":  # each fault maps its page and the same instruction runs again
        return [(PF, 0, W + 0x1000 * i, first + 13 * i) for i in range(count)]
    raise AssertionError(f"no model for case {chain.name}")


def _matches(entry: Entry, wanted: Want) -> bool:
    vector, ec, cr2, rip = wanted
    return entry[0] == vector and entry[1] == ec and entry[3] == rip and (cr2 is None or entry[2] == cr2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_exception_of_every_chain_is_delivered_as_the_cpu_does(backend: str) -> None:
    run = chains_on(backend)
    assert (run.result.reason, run.result.status) == ("exit", 0), run.result
    assert len(run.chains) == 13
    skipped = KVM_SKIPS if backend == "kvm" else set()
    for chain in run.chains.values():
        if chain.name in skipped:
            assert chain.flags == SKIPPED and chain.count == 0, chain.name
            continue
        assert chain.flags == 0, f"{chain.name}: aborted at {chain.log[-1:]}"
        wanted = want(chain)
        assert chain.expected == len(wanted) == chain.count, chain.name
        wrong = [
            (i, e, w) for i, (e, w) in enumerate(zip(chain.log, wanted, strict=True)) if not _matches(e, w)
        ]
        assert not wrong, f"{chain.name}: first wrong entries (index, seen, wanted): {wrong[:3]}"
    assert run.chains["demand_x100"].value == sum(range(100))  # frame n holds n: every read saw its page


def test_chains_agree_with_the_kvm_reference_case_by_case() -> None:
    ours, theirs = chains_on("unicorn"), chains_on("kvm")
    assert ours.chains.keys() == theirs.chains.keys()
    compared = 0
    for name, chain in ours.chains.items():
        if name in KVM_SKIPS:
            continue
        other = theirs.chains[name]
        assert (chain.count, chain.flags, chain.value) == (other.count, other.flags, other.value), name
        differ = [(a, b) for a, b in zip(chain.log, other.log, strict=True) if a != b]
        assert not differ, f"{name}: first differing entries (vmmio, KVM): {differ[:3]}"
        compared += 1
    assert compared == 12


def test_the_chains_are_raised_by_the_engine() -> None:
    """On Unicorn each case tests the engine's own exceptions, except the #UD of kernel_engine_x100,
    which vmmio's kernel raises while emulating LOCK MOV on MMIO: exactly those were injected."""
    run = chains_on("unicorn")
    kernel = {entry[3] for entry in run.chains["kernel_engine_x100"].log if entry[0] == UD}
    assert len(kernel) == 50
    assert run.injected == dict.fromkeys(kernel, UD)
