"""Judge one case (KVM against vmmio, the host CPU as referee), budgets, and the campaign entry point.

`judge` runs a case on KVM and on vmmio and compares the MMIO request sequence (GPA, size, direction,
data, order), the 16 GPRs, RIP, the status flags outside the form's undefined mask, DF, the window and
the RAM area. vmmio runs on a CPU with the KVM guest's CPUID (what KVM supports here: no MOVBE, BMI,
ABM or POPCNT, for instance), as Linux's emulator does; the host CPU, which has every feature, referees
vmmio run with every feature. A difference is then, in this order:

- "documented": one of the behaviours of Linux's emulator that vmmio/backends/kvm.py documents explains
  it entirely (`deviations.DOCUMENTED`);
- "kvm-deviation": the case has the trait of an entry of `deviations.KVM_DEVIATIONS` and the host CPU
  agrees with vmmio on it (without a usable host CPU oracle the table is trusted);
- "disagree": anything else, with the host CPU's side of it in the message when it can run the case.

`run_campaign(n)` draws n cases over every family (the same shares as the other oracles), judges each
and returns a `Summary`: what `make verify` (or anyone) can call outside pytest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from hypothesis import given, settings
from oracles.drive import SHARES, oracle_settings
from oracles.gen import CODE, FAMILIES, Case, cases
from oracles.native_run import NativeRunner, build_runner
from oracles.native_run import unavailable_reason as native_unavailable
from oracles.outcome import Outcome, Request, compare, disassemble
from oracles.vmmio_run import run_vmmio

from oracles_kvm.deviations import (
    DOCUMENTED,
    KVM_DEVIATIONS,
    NOT_EMULATED_FAMILIES,
    documented_deviation,
    kvm_deviation,
    kvm_unrunnable,
)
from oracles_kvm.kvm_run import KvmOutcome, KvmRunner
from vmmio.reference.kvm import KvmMmio
from vmmio.x86.regs import RF

__all__ = [
    "KVM_DEFAULT_CASES",
    "KVM_FAMILIES",
    "Referee",
    "Summary",
    "Verdict",
    "judge",
    "kvm_budget",
    "kvm_settings",
    "request_diffs",
    "run_campaign",
]

KVM_FAMILIES = tuple(f for f in FAMILIES if f not in NOT_EMULATED_FAMILIES)
"""The families run on KVM: all but those Linux's emulator has no handler for."""

KVM_DEFAULT_CASES = 7440
"""Cases in `make test`: about 5.5 ms each (KVM and vmmio about 0.5 ms each, the rest is drawing the
case), some 40 s in all; the first twelve families get the 4000 they had (3996), the families of the
integer forms about 1600 and gen_ctl's 1813 more. VMMIO_ORACLE_CASES overrides it, as for the other
oracles."""

Kind = Literal["agree", "documented", "kvm-deviation", "disagree"]


def kvm_budget(family: str) -> int:
    """Examples for one family: its share of VMMIO_ORACLE_CASES (default KVM_DEFAULT_CASES), at least 10."""
    total = int(os.environ.get("VMMIO_ORACLE_CASES", KVM_DEFAULT_CASES))
    return max(10, total * SHARES[family] // sum(SHARES.values()))


def kvm_settings(family: str, total: int | None = None) -> settings:
    """The other oracles' settings (deterministic, no database), sized for KVM."""
    n = kvm_budget(family) if total is None else max(1, total * SHARES[family] // sum(SHARES.values()))
    return settings(oracle_settings(family), max_examples=n)


class Referee:
    """The host CPU oracle, built on first use (it needs gcc); None-like when it cannot run here."""

    def __init__(self) -> None:
        self.why_not = native_unavailable()
        self._dir: Path | None = None
        self._runner: NativeRunner | None = None

    def run(self, case: Case) -> Outcome | None:
        if self.why_not is not None:
            return None
        if self._runner is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vmmio-kvm-referee-"))
            try:
                self._runner = NativeRunner(build_runner(self._dir))
            except Exception as exc:  # no usable compiler after all: judge without a referee
                self.why_not = f"host CPU runner did not build: {exc}"
                return None
        return self._runner.run(case)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    key: str = ""  # the DOCUMENTED or KVM_DEVIATIONS entry
    message: str = ""  # the full report (empty when they agree)
    kvm_seconds: float = 0.0
    vmmio_seconds: float = 0.0
    kvm_exits: int = 0  # MMIO exits Linux's emulator made (0: the CPU ran the case without emulation)


def _req(r: Request) -> str:
    return f"{'W' if r.write else 'R'}{r.size}@{r.gpa:#x}={r.data:#x}"


def request_diffs(kvm: list[Request], vmmio: list[Request]) -> list[str]:
    """The first difference between the two request sequences, as a line, or nothing."""
    if kvm == vmmio:
        return []
    n = next(
        (i for i, (a, b) in enumerate(zip(kvm, vmmio, strict=False)) if a != b), min(len(kvm), len(vmmio))
    )
    a = _req(kvm[n]) if n < len(kvm) else "no more requests"
    b = _req(vmmio[n]) if n < len(vmmio) else "no more requests"
    return [f"request #{n}: KVM {a} vmmio {b} (KVM made {len(kvm)} requests, vmmio {len(vmmio)})"]


def _shown(requests: list[Request]) -> str:
    text = ", ".join(_req(r) for r in requests[:12]) or "-"
    return text + (f" and {len(requests) - 12} more" if len(requests) > 12 else "")


def _report(case: Case, diffs: list[str], kvm: KvmOutcome, vmmio: Outcome, referee: str, head: str) -> str:
    lines = [f"{head} on {case.form!r}: {case.code.hex()} ({disassemble(case.code, CODE)})"]
    lines += ["  " + d for d in diffs]
    lines.append("inputs: " + case.describe())
    lines.append(f"  KVM requests:   {_shown(kvm.outcome.requests)}")
    lines.append(f"  vmmio requests: {_shown(vmmio.requests)}")
    raw = ", ".join(repr(x) for x in kvm.raw[:8]) or "-"
    lines.append(f"  Linux's exits:  {raw}" + (f" and {len(kvm.raw) - 8} more" if len(kvm.raw) > 8 else ""))
    if case.undefined:
        lines.append(f"  flags not compared: {case.reason}")
    lines.append(f"  referee: {referee}")
    return "\n".join(lines)


def _referee_text(case: Case, native: Outcome | None, kvm: Outcome, vmmio: Outcome, why_not: str) -> str:
    if native is None:
        return f"host CPU not consulted ({why_not})"
    if native.error:
        return f"host CPU could not run the case ({native.error})"
    with_vmmio = compare(case, native, vmmio, "host CPU", "vmmio")
    with_kvm = compare(case, native, kvm, "host CPU", "KVM")
    if not with_vmmio and not with_kvm:
        return (
            "host CPU agrees with both on the final state: the difference is in the request sequence, which "
            "the CPU cannot show (judge it from the SDM)"
        )
    if not with_vmmio:
        return "host CPU agrees with vmmio: KVM is wrong here, a KVM deviation missing from KVM_DEVIATIONS"
    if not with_kvm:
        return "host CPU agrees with KVM: vmmio is wrong (" + "; ".join(with_vmmio) + ")"
    return "host CPU agrees with neither: " + "; ".join(with_vmmio)


def judge(case: Case, kvm_runner: KvmRunner, referee: Referee | None = None) -> Verdict:
    """Run `case` on KVM and on vmmio and classify the outcome (see the module docstring)."""
    spins = kvm_unrunnable(case)
    if spins is not None:
        # KVM would spin on it without an exit until the deadline: known, not run.
        return Verdict("kvm-deviation", spins, KVM_DEVIATIONS[spins].reason)
    started = time.perf_counter()
    kvm = kvm_runner.run(case)
    middle = time.perf_counter()
    vmmio = run_vmmio(case, kvm_runner.cpuid)
    t_kvm, t_vmmio = middle - started, time.perf_counter() - middle
    exits = sum(isinstance(x, KvmMmio) for x in kvm.raw)
    # At CPL 3 the runner learns the final RFLAGS from the #GP of the HLT after the instruction, whose
    # image always has RF set: RF (which IRET loads) is not KVM's to show there.
    seen = replace(case, extra_flags=case.extra_flags & ~RF) if case.env == "user" else case
    diffs = compare(seen, kvm.outcome, vmmio, "KVM", "vmmio")
    if not kvm.outcome.error and not vmmio.error:
        diffs += request_diffs(kvm.outcome.requests, vmmio.requests)
    if not diffs:
        return Verdict("agree", "", "", t_kvm, t_vmmio, exits)
    key = documented_deviation(case, kvm, vmmio)
    if key is not None:
        message = _report(case, diffs, kvm, vmmio, DOCUMENTED[key].reason, f"documented KVM behaviour {key}")
        return Verdict("documented", key, message, t_kvm, t_vmmio, exits)
    kernel = case.env == "kernel"  # privileged: the host (at CPL 3) cannot referee it
    native = referee.run(case) if referee is not None and not kernel else None
    why_not = "no referee given" if referee is None else referee.why_not or ""
    if kernel:
        why_not = "a privileged form: the host CPU runs at CPL 3"
    # The host CPU has every feature: it referees vmmio on a CPU that has them too.
    on_host = run_vmmio(case) if native is not None else vmmio
    referee_text = _referee_text(case, native, kvm.outcome, on_host, why_not)
    key = kvm_deviation(case)
    if key is not None and KVM_DEVIATIONS[key].requests_only and compare(seen, kvm.outcome, vmmio, "", ""):
        key = None  # the final state differs too: more than that deviation
    if key is not None and (native is None or not compare(case, native, on_host, "host CPU", "vmmio")):
        head = f"KVM deviation {key}"
        message = _report(case, diffs, kvm, vmmio, referee_text, head)
        return Verdict("kvm-deviation", key, message, t_kvm, t_vmmio, exits)
    head = "vmmio disagrees with KVM"
    message = _report(case, diffs, kvm, vmmio, referee_text, head)
    return Verdict("disagree", "", message, t_kvm, t_vmmio, exits)


@dataclass
class Summary:
    """Verdicts of a run: counts, disagreements by form (with the first report of each), known ones apart."""

    cases: int = 0
    agreements: int = 0
    emulated: int = 0  # cases in which Linux's emulator made at least one MMIO exit
    kvm_exits: int = 0
    disagreements: Counter[str] = field(default_factory=Counter)  # form -> cases
    examples: dict[str, str] = field(default_factory=dict)  # form -> first report
    known: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (kind, key, form) -> cases
    kvm_seconds: float = 0.0
    vmmio_seconds: float = 0.0
    wall_seconds: float = 0.0
    rebuilds: int = 0

    def add(self, case: Case, verdict: Verdict) -> None:
        self.cases += 1
        self.emulated += verdict.kvm_exits > 0
        self.kvm_exits += verdict.kvm_exits
        self.kvm_seconds += verdict.kvm_seconds
        self.vmmio_seconds += verdict.vmmio_seconds
        if verdict.kind == "agree":
            self.agreements += 1
        elif verdict.kind == "disagree":
            self.disagreements[case.form] += 1
            self.examples.setdefault(case.form, verdict.message)
        else:
            self.known[verdict.kind, verdict.key, case.form] += 1

    @property
    def ok(self) -> bool:
        return not self.disagreements

    def text(self, examples: bool = True) -> str:
        n = max(self.cases, 1)
        lines = [
            f"KVM oracle: {self.cases} cases, {self.agreements} agree, "
            f"{sum(self.known.values())} known KVM behaviours, {sum(self.disagreements.values())} disagree",
            f"  Linux's emulator ran in {self.emulated} cases ({self.kvm_exits} MMIO exits); the rest "
            "touched no MMIO on KVM (register forms, #UD/#GP before any access, zero REP counts)",
            f"  per case: KVM {1e6 * self.kvm_seconds / n:.0f} us, "
            f"vmmio {1e6 * self.vmmio_seconds / n:.0f} us, "
            f"all in {1e3 * self.wall_seconds / n:.2f} ms (drawing the case included); "
            f"vCPU rebuilt {self.rebuilds} times",
        ]
        by_key: Counter[tuple[str, str]] = Counter()
        for (kind, key, _form), count in self.known.items():
            by_key[kind, key] += count
        for (kind, key), count in sorted(by_key.items()):
            forms = sorted({f for (k, kk, f) in self.known if (k, kk) == (kind, key)})
            lines.append(f"  {kind} {key}: {count} cases in {len(forms)} forms (e.g. {', '.join(forms[:3])})")
        for form, count in sorted(self.disagreements.items()):
            lines.append(f"  DISAGREE {form}: {count}")
            if examples:
                lines += ["    " + line for line in self.examples[form].splitlines()]
        return "\n".join(lines)


def run_campaign(
    total: int | None = None,
    *,
    families: Iterable[str] = KVM_FAMILIES,
    referee: bool = True,
    on_case: Callable[[Case, Verdict], None] | None = None,
) -> Summary:
    """Judge `total` generated cases (default: VMMIO_ORACLE_CASES, else KVM_DEFAULT_CASES) split over
    `families` by the oracles' shares, on one KVM vCPU; return the summary. Needs a usable /dev/kvm."""
    summary = Summary()
    kvm_runner = KvmRunner()
    ref = Referee() if referee else None
    started = time.perf_counter()
    try:
        for family in families:

            @kvm_settings(family, total)
            @given(case=cases(family))
            def one(case: Case) -> None:
                verdict = judge(case, kvm_runner, ref)
                summary.add(case, verdict)
                if on_case is not None:
                    on_case(case, verdict)

            one()
    finally:
        summary.wall_seconds = time.perf_counter() - started
        summary.rebuilds = kvm_runner.rebuilds
        kvm_runner.close()
        if ref is not None:
            ref.close()
    return summary
