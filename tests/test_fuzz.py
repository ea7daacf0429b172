"""The in-repo fuzzer (fuzz/): a small slice of every target must find nothing new, and every target must
catch a planted bug and report it with a shrunk reproducer that replays it, so the harness can fail.

Known vmmio bugs (fuzz/known.py) are xfails here while they reproduce, so they show in every run; the
test fails once vmmio is fixed, so the row is deleted and the fuzzer checks the fix like any invariant.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
from images.synth import bzimage

import vmmio.abi
import vmmio.vmm.vcpu
import vmmio.x86.decode
from fuzz.core import render, signature
from fuzz.known import KNOWN, KnownBug, classify
from fuzz.modes import MODES, TOP, TOP_CODE, WINDOWS, template
from fuzz.runner import TargetResult, run_target
from fuzz.targets import TARGETS, decoder, images, insns
from vmmio.abi import EntryError, FulfillMmio, MmioExit, VmEntry
from vmmio.x86.faults import GuestFault
from vmmio.x86.insn import MemOperand
from vmmio.x86.paging import Walker

SEED = 20261204
SLICE = {"decoder": 20_000, "abi": 5_000, "entries": 3_000, "insns": 3_000, "images": 500}


def _run(name: str, count: int) -> TargetResult:
    return run_target(TARGETS[name], count, SEED, jobs=1, log=None)


def _listing(result: TargetResult) -> str:
    return "\n\n".join(f"{f.signature}: {f.message}\n{f.reproducer}" for f in result.failures if not f.known)


@pytest.mark.parametrize("name", list(SLICE))
def test_a_slice_of_each_target_finds_nothing_new(name: str) -> None:
    result = _run(name, SLICE[name])
    assert result.units >= SLICE[name]
    assert result.failed == 0, _listing(result)
    assert all(f.known for f in result.failures)  # known bugs are reported, but apart


def _replay(reproducer: str) -> BaseException:
    """Run a printed reproducer as a user would paste it; the exception it raises."""
    try:
        exec(reproducer, {})
    except Exception as exc:
        return exc
    raise AssertionError(f"the reproducer did not fail:\n{reproducer}")


def _planted(name: str, count: int, expected: str) -> Any:
    """Run a slice with a bug planted: the shrunk case of the expected failure, whose printed
    reproducer must replay it."""
    result = _run(name, count)
    assert result.failed > 0, f"{name}: the planted bug went unnoticed"
    found = [f for f in result.failures if f.signature == expected]
    assert found, [f.signature for f in result.failures]
    snippet = found[0].reproducer
    err = _replay(snippet)
    assert signature(err) == expected, (signature(err), snippet)
    namespace: dict[str, Any] = {}
    exec(snippet.splitlines()[0], namespace)  # import the target module as `t`
    return eval(snippet.splitlines()[-1].split(".replay(", 1)[1][:-1], namespace)


def test_decoder_catches_a_planted_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vmmio.x86.decode._moffs

    def broken(code: bytes, i: int, addr_size: int, seg: int) -> MemOperand:
        if addr_size == 2:
            raise ZeroDivisionError("planted")
        return real(code, i, addr_size, seg)

    monkeypatch.setattr(vmmio.x86.decode, "_moffs", broken)
    case = _planted("decoder", 20_000, "ZeroDivisionError in test_fuzz.py:broken")
    # Shrunk to a moffs opcode with 16-bit addressing: [67] A0-A3, nothing after it (the plant raises first).
    assert len(case.code) <= 2 and case.code[-1] & 0xFC == 0xA0 and case.junk == b"", case


def test_abi_catches_a_planted_non_canonical_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def lenient(byte: int, name: str) -> bool:  # any non-zero boolean byte read as True: not canonical
        return byte != 0

    monkeypatch.setattr(vmmio.abi, "_bool", lenient)
    case = _planted("abi", 5_000, "not-canonical")
    assert len(case.record) == 48 and (case.record[33] > 1 or case.record[19] > 1), case.record.hex()
    # Shrunk: the header (magic, version, kind) and the boolean byte; every other byte zeroed.
    assert sum(1 for b in case.record[8:] if b) <= 2, case.record.hex()


def _same_access(pending: MmioExit, entry: FulfillMmio) -> bool:
    return (entry.gpa, entry.size, entry.is_write) == (pending.gpa, pending.size, pending.is_write)


def test_entries_catches_a_planted_acceptance(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vmmio.abi.fulfillment_data

    def forgetful(pending: Any, entry: VmEntry) -> int:  # write data no longer has to match
        if isinstance(pending, MmioExit) and isinstance(entry, FulfillMmio) and _same_access(pending, entry):
            return entry.data
        return real(pending, entry)

    monkeypatch.setattr(vmmio.vmm.vcpu, "fulfillment_data", forgetful)
    case = _planted("entries", 3_000, "invalid-accepted")
    assert len(case.program) == 1 and len(case.steps) <= 3, case  # run, [answer the read], bad write echo


def test_entries_catches_state_changed_by_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vmmio.vmm.vcpu.Vcpu.run

    def leaky(self: vmmio.vmm.vcpu.Vcpu, entry: VmEntry | None = None) -> Any:
        try:
            return real(self, entry)
        except EntryError:
            self.backend.inject_exception(6, None, None)  # a rejection that leaves a #UD behind
            raise

    monkeypatch.setattr(vmmio.vmm.vcpu.Vcpu, "run", leaky)
    case = _planted("entries", 3_000, "rejected-changed")
    assert len(case.steps) == 1, case


def test_insns_catches_a_planted_double_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vmmio.vmm.vcpu.Vcpu._inject

    def twice(self: vmmio.vmm.vcpu.Vcpu, fault: GuestFault) -> None:
        real(self, fault)
        real(self, fault)

    monkeypatch.setattr(vmmio.vmm.vcpu.Vcpu, "_inject", twice)
    case = _planted("insns", 1_000, "injected-twice")
    assert len(case.code) <= 4 and case.answers == (), case


def test_images_catches_a_planted_parser_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    detect = importlib.import_module("vmmio.images.detect")  # vmmio.images.detect is also a function
    real = detect.load_elf

    def crashing(data: bytes, layout: Any) -> Any:
        if data[4:5] == b"\x02":
            raise IndexError("planted")
        return real(data, layout)

    monkeypatch.setattr(detect, "load_elf", crashing)
    case = _planted("images", 500, "IndexError in test_fuzz.py:crashing")
    assert len(case.data) == 5 and case.data[4] == 2, case.data


def test_shards_do_not_depend_on_jobs() -> None:
    """The same cases whatever JOBS is: shard seeds derive from SEED and the shard index only."""
    one = run_target(TARGETS["abi"], 12_000, SEED, jobs=1, log=None)
    two = run_target(TARGETS["abi"], 12_000, SEED, jobs=2, log=None)
    assert (one.units, one.cases, one.notes) == (two.units, two.cases, two.notes)


# -- the mode setups the instruction target relies on --------------------------------------------------


def _walk(mode: str, la: int, access: int = 0) -> int:
    ctl = MODES[mode].control(0, 0, (), ())
    vm = insns.build(insns.Case(mode, 0, 0, 0, 0x1000)).vm
    return Walker(vm.memory).translate(ctl, la, access, False)


@pytest.mark.parametrize("mode", [m for m, s in MODES.items() if s.paging])
def test_paging_modes_map_as_documented(mode: str) -> None:
    assert _walk(mode, 0x1234) == 0x1234  # identity
    assert _walk(mode, TOP + 0xFF0) == TOP_CODE + 0xFF0  # the top page runs code from RAM
    with pytest.raises(GuestFault):
        _walk(mode, min(WINDOWS))  # the not-present window
    with pytest.raises(GuestFault):
        _walk(mode, 0x8040_0000, 6)  # a user write to the read-only window
    with pytest.raises(GuestFault):
        _walk(mode, 0x8080_0000, 4)  # a user read of the supervisor window
    assert template(MODES[mode].paging or "")[1] == 0x9_0000


# -- known vmmio bugs -------------------------------------------------------------------------------------

# One minimal case per fuzz.known row: its invariant as the fuzzer checks it.
KNOWN_CASES: dict[str, tuple[str, Callable[[], None]]] = {}


def test_every_known_bug_has_a_case() -> None:
    assert sorted(KNOWN_CASES) == sorted(bug.id for bug in KNOWN)


@pytest.mark.parametrize("bug", KNOWN, ids=lambda bug: bug.id)
def test_known_bug(bug: KnownBug) -> None:
    """An xfail while the bug reproduces; a failure once vmmio is fixed, to have the row deleted."""
    target, replay = KNOWN_CASES[bug.id]
    try:
        replay()
    except Exception as exc:
        if classify(target, signature(exc), None) is bug:
            pytest.xfail(f"known vmmio bug {bug.id}: {bug.summary}")
        raise
    pytest.fail(f"{bug.id} no longer reproduces: vmmio is fixed, delete its row in fuzz/known.py")


def test_fixed_bugs_stay_fixed() -> None:
    """Rows once in fuzz/known.py, kept as cases: eip-wrap (an emulated OUT ending at 4 GiB wraps EIP),
    linux-above-4g (a kernel with room only above 4 GiB is an ImageError), decoder-byte-16 (a VEX prefix
    at byte 15 is TOO_LONG whatever follows), cross-kind-exit (an NPF from IN/OUT, or an I/O exit from an
    MMIO form, is GPA_MISMATCH). A register-only form after an NPF is performed, as KVM's emulator does:
    it makes no access that could contradict the exit."""
    TARGETS["decoder"].replay(decoder.Case(bytes.fromhex("66" * 14 + "c5"), 64, b"\xf8\x77"))
    for code, event in (
        (b"\xe6\x80", insns.Event("npf", 0xA_0000)),
        (b"\x89\x03", insns.Event("io", port=0x80)),
        (b"\x29\xd2", insns.Event("npf", 0xA_0000)),
    ):
        TARGETS["insns"].replay(insns.Case("long64", 0, 0, 0, 0x1000, code, event=event))
    TARGETS["images"].replay(images.Case(bzimage(init_size=0x400_0000), layout=1))
    TARGETS["insns"].replay(
        insns.Case("pm32-paging32", 0, 0, 0, 0xFFFF_FFFE, b"\xe6\x80", event=insns.Event("io", port=0x80))
    )


def test_a_rendered_case_is_the_case() -> None:
    case = insns.Case("real", 0, 0, 0, 0x1000, b"\x8b\x47", (1, 0x1234), event=insns.Event("npf", 0xA_0000))
    assert eval(render(case), {"t": insns}) == case


def test_implicit_stores_may_cause_an_npf() -> None:
    """MASKMOVQ stores to DS:rDI with a register-only ModRM; even with an all-zero mask it may fault."""
    event = insns.Event("npf", 0xA_0000)
    TARGETS["insns"].replay(
        insns.Case("pm16-pae", 3, 0, 0, 0x1052, b"\x0f\xf7\xe8", (), 0x280C56, (0, 0, 0xA0000), event=event)
    )
