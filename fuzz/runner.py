"""Shards of cases on worker processes, failures shrunk where they happen, and the summary table.

A target's count is cut into shards of `Target.shard` units; shard n of a run draws from
Random(f"{seed}/{target}/{n}"), so the cases are the same whatever JOBS is, and a failure reproduces
from its snippet alone. Targets run one after another, each with all workers, so each has its own
wall time. A case that runs past TIMEOUT seconds is stopped by SIGALRM and reported as a hang. Each
shard shrinks the first case of each distinct failure; known bugs get a smaller shrinking budget. The
worst unit time is confirmed: a shard re-runs its slowest cases and keeps each one's fastest run.
"""

from __future__ import annotations

import heapq
import multiprocessing
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from fuzz.core import Stats, Target, Timeout, describe, render, reproducer, run_case, signature
from fuzz.known import classify
from fuzz.shrink import shrink

TIMEOUT = 30.0  # seconds one case may run before it counts as a hang
REPORTS_PER_SHARD = 4  # distinct failures shrunk per shard; further ones are only counted
CASE_SUMMARY = 160  # characters of the slowest case shown in the summary
SLOWEST = 5  # cases per shard whose worst unit time is confirmed by re-running them
RERUNS = 3
KNOWN_SHRINK = (500, 5.0)  # attempts and seconds for a known bug: tests/test_fuzz.py has its minimal case


@dataclass
class Failure:
    """One distinct failure, shrunk: what broke, and the snippet that replays it."""

    target: str
    signature: str
    message: str
    reproducer: str
    known: str | None = None  # id of the fuzz.known row it matches


@dataclass
class ShardResult:
    target: str
    index: int
    units: int = 0
    cases: int = 0
    failed: int = 0  # failing cases, new ones
    known: int = 0  # failing cases matching fuzz.known
    worst: float = 0.0
    worst_case: str = ""
    cpu: float = 0.0  # process CPU seconds the shard took, shrinking included
    reports: list[Failure] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Timeout(f"case still running after {TIMEOUT:.0f} s")


@contextmanager
def _watchdog() -> Iterator[Callable[[float], None]]:
    """A function arming SIGALRM (0 disarms) while the block runs; inert off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda seconds: None
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:

        def arm(seconds: float) -> None:
            signal.setitimer(signal.ITIMER_REAL, seconds)

        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _report(target: Target[Any], case: Any, exc: BaseException, known: str | None) -> Failure:
    sig = signature(exc)

    def attempt(candidate: Any) -> BaseException | None:
        with _watchdog() as arm:
            arm(TIMEOUT)
            return run_case(target, candidate, Stats())[1]

    def fails(candidate: Any) -> bool:
        err = attempt(candidate)
        return err is not None and signature(err) == sig

    small = shrink(case, fails, *KNOWN_SHRINK) if known else shrink(case, fails)
    err = attempt(small)
    message = describe(err if err is not None else exc)
    return Failure(target.name, sig, message, reproducer(target, small), known)


def _confirm(target: Target[Any], slowest: list[tuple[float, int, Any]]) -> tuple[float, str]:
    """The worst unit time of the slowest cases, each re-run RERUNS times keeping its fastest, so that
    a worker preempted or collecting garbage once does not count; and the case it belongs to."""
    worst, which = 0.0, ""
    for _, _, case in slowest:
        best = min(_unit_time(target, case) for _ in range(RERUNS))
        if best > worst:
            worst, which = best, render(case)[:CASE_SUMMARY]
    return worst, which


def _unit_time(target: Target[Any], case: Any) -> float:
    stats = Stats()
    run_case(target, case, stats)
    return stats.worst


def run_shard(target: Target[Any], seed: int, index: int, units: int) -> ShardResult:
    """Generate and check cases until `units` units have run; shrink the first few distinct failures."""
    cpu = time.process_time()
    rng = random.Random(f"{seed}/{target.name}/{index}")
    result = ShardResult(target.name, index)
    stats = Stats()
    seen: set[str] = set()
    slowest: list[tuple[float, int, Any]] = []  # a heap of the SLOWEST cases: (worst unit time, n, case)
    generate, check = target.generate, target.check
    with _watchdog() as arm:
        while result.units < units:
            case = generate(rng)
            stats.worst = 0.0
            arm(TIMEOUT)
            try:
                result.units += check(case, stats)
                err = None
            except Exception as exc:
                result.units += 1
                err = exc
            arm(0)
            result.cases += 1
            if len(slowest) < SLOWEST or stats.worst > slowest[0][0]:
                item = (stats.worst, result.cases, case)
                (heapq.heappush if len(slowest) < SLOWEST else heapq.heapreplace)(slowest, item)
            if err is None:
                continue
            sig = signature(err)
            bug = classify(target.name, sig, case)
            if bug is None:
                result.failed += 1
            else:
                result.known += 1
            if sig not in seen and len(seen) < REPORTS_PER_SHARD:
                seen.add(sig)
                result.reports.append(_report(target, case, err, bug.id if bug else None))
    result.worst, result.worst_case = _confirm(target, slowest)
    result.notes = stats.notes
    result.cpu = time.process_time() - cpu
    return result


def _shard_task(task: tuple[str, int, int, int]) -> ShardResult:
    from fuzz.targets import TARGETS

    name, seed, index, units = task
    return run_shard(TARGETS[name], seed, index, units)


@dataclass
class TargetResult:
    """A target's shards merged: what the summary prints."""

    name: str
    unit: str
    units: int = 0
    cases: int = 0
    failed: int = 0
    known: int = 0
    worst: float = 0.0
    worst_case: str = ""
    wall: float = 0.0
    cpu: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    def add(self, shard: ShardResult) -> None:
        self.units += shard.units
        self.cases += shard.cases
        self.failed += shard.failed
        self.known += shard.known
        self.cpu += shard.cpu
        self.notes.update(shard.notes)
        if shard.worst > self.worst:
            self.worst, self.worst_case = shard.worst, shard.worst_case
        for f in shard.reports:  # keep the smallest reproducer of each distinct failure
            same = [g for g in self.failures if g.signature == f.signature]
            if not same:
                self.failures.append(f)
            elif len(f.reproducer) < len(same[0].reproducer):
                self.failures[self.failures.index(same[0])] = f


def plan(target: Target[Any], count: int, seed: int) -> list[tuple[str, int, int, int]]:
    """The shards of one target's run: (name, seed, index, units)."""
    tasks = []
    for index, start in enumerate(range(0, count, target.shard)):
        tasks.append((target.name, seed, index, min(target.shard, count - start)))
    return tasks


def run_target(target: Target[Any], count: int, seed: int, jobs: int, log: TextIO | None) -> TargetResult:
    tasks = plan(target, count, seed)
    result = TargetResult(target.name, target.unit)
    start = time.monotonic()
    shards: list[ShardResult] = []
    if jobs <= 1 or len(tasks) <= 1:
        shards = [run_shard(target, s, i, u) for _, s, i, u in tasks]
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(jobs, len(tasks))) as pool:
            for shard in pool.imap_unordered(_shard_task, tasks):
                shards.append(shard)
                if log is not None:
                    log.write(f"\r  {target.name}: {len(shards)}/{len(tasks)} shards")
                    log.flush()
        if log is not None:
            log.write("\r")
    for shard in sorted(shards, key=lambda s: s.index):
        result.add(shard)
    result.wall = time.monotonic() - start
    return result


def run(
    counts: Sequence[tuple[Target[Any], int]], seed: int, jobs: int, log: TextIO | None = None
) -> list[TargetResult]:
    results = []
    for target, count in counts:
        if count <= 0:
            continue
        r = run_target(target, count, seed, jobs, log)
        if log is not None:
            log.write(f"  {r.name}: {r.units:,} units ({r.unit}) in {r.wall:.1f} s, {r.failed} failures\n")
            log.flush()
        results.append(r)
    return results


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def summary(results: Sequence[TargetResult], seed: int, jobs: int, wall: float) -> str:
    """The table, then every distinct failure with its reproducer, then the slowest cases."""
    rows = [("target", "count", "unit", "failures", "known", "worst/unit", "wall", "cpu")]
    for r in results:
        rows.append(
            (r.name, f"{r.units:,}", r.unit, str(r.failed), str(r.known), _duration(r.worst),
             _duration(r.wall), _duration(r.cpu))
        )  # fmt: skip
    rows.append(("total", "", "", str(sum(r.failed for r in results)), str(sum(r.known for r in results)),
                 "", _duration(wall), _duration(sum(r.cpu for r in results))))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"fuzz summary (SEED={seed}, JOBS={jobs})"]
    for n, row in enumerate(rows):
        cells = (
            c.ljust(w) if i in (0, 2) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        for f in r.failures:
            tag = f"KNOWN {f.known}" if f.known else "FAILURE"
            lines += ["", f"{tag} {r.name}: {f.signature}", f"  {f.message}", "  reproducer:"]
            lines += [f"    {line}" for line in f.reproducer.splitlines()]
    lines.append("")
    for r in results:
        notes = ", ".join(f"{k} {v:,}" for k, v in sorted(r.notes.items()))
        lines.append(f"{r.name}: {r.cases:,} cases; {notes}" if notes else f"{r.name}: {r.cases:,} cases")
        if r.worst_case:
            lines.append(f"  slowest: {r.worst_case}")
    return "\n".join(lines)


def main_loop(counts: Sequence[tuple[Target[Any], int]], seed: int, jobs: int) -> tuple[str, int]:
    """Run, and return the summary and the number of new failures."""
    start = time.monotonic()
    results = run(counts, seed, jobs, sys.stderr)
    text = summary(results, seed, jobs, time.monotonic() - start)
    return text, sum(r.failed for r in results)
