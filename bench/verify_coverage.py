"""Real-code verification of the decoder and the emulation coverage figure (run by `make verify`).

Sweeps a large corpus of real machine code (see tests/oracles_real/corpus.py: the host's executables
and libraries, 32-bit libraries if present, a Debian kernel image and its modules if installed) with
iced-x86 as the boundary oracle, and for every instruction compares vmmio's decoding with iced-x86,
capstone and objdump (length; memory operand; iced also operand size, mnemonic, immediates). Prints:

  (a) instructions and memory operands compared per oracle, and the disagreements by opcode family,
      known ones (judged in tests/oracles_real/known.py) apart from new ones;
  (b) the coverage figure: of the memory-operand instructions found, the share vmmio can emulate
      (`vmmio.vmm.semantics.lookup(insn) is not None`), by opcode family, counted by occurrence, by
      distinct encoding (instruction bytes) and by distinct form (iced Code).

Exits 1 when a new disagreement (or a crash of decode/lookup) was found. Work is split per file over
worker processes; results are merged in file order, so a run is deterministic for a given machine.

Usage: .venv/bin/python bench/verify_coverage.py [--count N] [--jobs N] [--per-file N] ...
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oracles_real.check import Checked, check_iced, check_listing
from oracles_real.compare import FAMILIES, NO_ACCESS, family
from oracles_real.corpus import Source, all_sources, iced_memory, sweep, well_known_sources
from oracles_real.elf import CodeRange
from oracles_real.known import KNOWN
from oracles_real.listings import Listing, capstone_listing, objdump_available, objdump_chunks

from vmmio.x86.insn import Insn

ORACLES = ("iced", "objdump", "capstone")
EXAMPLES_PER_KEY = 3


@dataclass(frozen=True)
class Task:
    index: int
    source: Source
    quota: int
    windows: int
    objdump: bool
    capstone: bool


@dataclass
class Result:
    """Everything one file contributes; results merge by addition (and union, for distinct counts)."""

    insns: int = 0
    files: int = 0
    modes: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # corpus part -> instructions
    mem_explicit: int = 0
    mem_implicit: int = 0
    decode_errors: int = 0
    compared: Counter[str] = field(default_factory=Counter)  # oracle -> instructions compared
    compared_mem: Counter[str] = field(default_factory=Counter)
    unaligned: Counter[str] = field(default_factory=Counter)
    # (oracle, family, tag or "new") -> instructions with a disagreement of that kind
    disagreements: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    occurrences: Counter[str] = field(default_factory=Counter)  # family -> memory-operand instructions
    emulated: Counter[str] = field(default_factory=Counter)
    encodings: dict[bytes, tuple[str, bool]] = field(default_factory=dict)  # mode byte + insn bytes
    forms: dict[int, tuple[str, bool]] = field(default_factory=dict)  # iced Code -> (family, emulated)

    def merge(self, o: Result) -> None:
        self.insns += o.insns
        self.files += o.files
        self.modes.update(o.modes)
        self.kinds.update(o.kinds)
        self.mem_explicit += o.mem_explicit
        self.mem_implicit += o.mem_implicit
        self.decode_errors += o.decode_errors
        self.compared.update(o.compared)
        self.compared_mem.update(o.compared_mem)
        self.unaligned.update(o.unaligned)
        self.disagreements.update(o.disagreements)
        for k, v in o.examples.items():
            mine = self.examples.setdefault(k, [])
            mine += v[: EXAMPLES_PER_KEY - len(mine)]
        self.occurrences.update(o.occurrences)
        self.emulated.update(o.emulated)
        self.encodings.update(o.encodings)
        for code, (fam, emu) in o.forms.items():
            self.forms[code] = (fam, emu or self.forms.get(code, (fam, False))[1])


def _chunks(checked: list[Checked]) -> list[tuple[int, int]]:
    """Runs of consecutive instructions (gaps of skipped invalid bytes included), as (start, stop)."""
    runs: list[tuple[int, int]] = []
    for c in checked:
        s = c.sample
        end = s.offset + s.iced.len
        if runs and s.offset - runs[-1][1] < 16:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((s.offset, end))
    return runs


def _text_oracles(task: Task, by_range: dict[int, tuple[CodeRange, list[Checked]]], res: Result) -> None:
    for r, checked in by_range.values():
        runs = _chunks(checked)
        listings: dict[str, Listing] = {}
        if task.objdump:
            listings["objdump"] = objdump_chunks(r.mode, [(r.address + a, r.data[a:b]) for a, b in runs])
        if task.capstone:
            cs: Listing = {}
            for a, b in runs:
                cs.update(capstone_listing(r, a, b))
            listings["capstone"] = cs
        for oracle, listing in listings.items():
            compared, mem, unaligned = check_listing(checked, oracle, listing)
            res.compared[oracle] += compared
            res.compared_mem[oracle] += mem
            res.unaligned[oracle] += unaligned


def run_task(task: Task) -> Result:
    """Sweep one file and run every check on what it yields."""
    res = Result(files=1)
    by_range: dict[int, tuple[CodeRange, list[Checked]]] = {}
    for s in sweep(task.source.ranges(), task.quota, windows=task.windows):
        c = check_iced(s)
        by_range.setdefault(id(s.range), (s.range, []))[1].append(c)
    _text_oracles(task, by_range, res)
    for r, checked in by_range.values():
        res.modes[r.mode] += len(checked)
        res.kinds[task.source.part] += len(checked)
        for c in checked:
            _account(c, res)
    return res


def _account(c: Checked, res: Result) -> None:
    ins = c.sample.iced
    fam = family(ins.code)
    res.insns += 1
    ours = c.ours
    if not isinstance(ours, Insn):
        res.decode_errors += 1
    res.compared["iced"] += 1
    kind = iced_memory(ins)
    if kind:
        res.compared_mem["iced"] += kind == 1
        res.mem_explicit += kind == 1
        res.mem_implicit += kind == 2
        res.occurrences[fam] += 1
        res.emulated[fam] += c.emulated
        res.encodings[bytes((c.sample.range.mode,)) + c.sample.code[: ins.len]] = (fam, c.emulated)
        code = int(ins.code)
        res.forms[code] = (fam, c.emulated or res.forms.get(code, (fam, False))[1])
    seen: set[tuple[str, str, str]] = set()
    for f in c.findings:
        key = (f.mismatch.oracle, fam, f.known.tag if f.known else "new")
        if key in seen:
            continue  # count instructions, not fields
        seen.add(key)
        res.disagreements[key] += 1
        ex = res.examples.setdefault(key, [])
        if len(ex) < EXAMPLES_PER_KEY:
            ex.append(c.report(f))


def _tasks(args: argparse.Namespace) -> Iterator[Task]:
    well_known = well_known_sources()
    paths = {(s.path, s.kind) for s in well_known}
    rest = [s for s in all_sources() if (s.path, s.kind) not in paths]
    objdump = not args.no_objdump and objdump_available()
    for i, src in enumerate([*well_known, *rest]):
        if src.kind == "kernel":
            quota = args.kernel_per_file
        elif i < len(well_known):
            quota = args.well_known_per_file
        else:
            quota = args.per_file
        yield Task(i, src, quota, args.windows, objdump, not args.no_capstone)


def collect(args: argparse.Namespace) -> Result:
    """Run tasks in file order until --count instructions; the file that crosses the count is swept
    again with the exact remainder, so the total is exact and independent of scheduling."""
    total = Result()
    with multiprocessing.Pool(args.jobs) as pool:
        for task, res in zip(_tasks(args), pool.imap(run_task, _tasks(args)), strict=False):
            left = args.count - total.insns
            if res.insns > left:
                res = run_task(Task(task.index, task.source, left, task.windows, task.objdump, task.capstone))
            total.merge(res)
            if total.insns >= args.count:
                pool.terminate()
                break
    return total


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def report(res: Result) -> int:
    """Print the tables; the number of new disagreements."""
    modes = ", ".join(f"{m}-bit {n:,}" for m, n in sorted(res.modes.items(), reverse=True))
    parts = ", ".join(f"{k} {n:,}" for k, n in res.kinds.most_common())
    print(f"corpus: {res.files} files, {res.insns:,} instructions ({modes})")
    print(f"  by part: {parts}")
    print(
        f"memory operands (iced): {res.mem_explicit + res.mem_implicit:,} "
        f"({res.mem_explicit:,} explicit, {res.mem_implicit:,} implicit/string); "
        f"vmmio decode errors on iced-valid instructions: {res.decode_errors}"
    )
    print()
    print("(a) Comparisons per oracle (instructions where the oracle started an instruction at the same")
    print("    address as iced's sweep; objdump/capstone compare length and the memory operand)")
    print(f"{'oracle':10} {'compared':>12} {'with memory':>12} {'not aligned':>12} {'known':>8} {'new':>6}")
    for o in ORACLES:
        if o not in res.compared:
            continue
        known = sum(n for (oo, _, tag), n in res.disagreements.items() if oo == o and tag != "new")
        new = sum(n for (oo, _, tag), n in res.disagreements.items() if oo == o and tag == "new")
        print(
            f"{o:10} {res.compared[o]:>12,} {res.compared_mem[o]:>12,} {res.unaligned[o]:>12,} "
            f"{known:>8,} {new:>6,}"
        )
    vmmio_new = sum(n for (o, _, tag), n in res.disagreements.items() if o == "vmmio")
    print(f"vmmio crashes (decode or lookup raising): {vmmio_new}")
    print()
    _disagreements(res)
    print()
    _coverage(res)
    return sum(n for (_, _, tag), n in res.disagreements.items() if tag == "new")


def _disagreements(res: Result) -> None:
    """Per family and oracle: instructions with known / new disagreements; then each known kind with
    its judgement and an example, and examples of every new kind."""
    print("Disagreements by opcode family (instructions: known/new; known kinds are judged in")
    print("tests/oracles_real/known.py)")
    oracles = ["vmmio", *ORACLES]  # "vmmio": decode or lookup raised
    print(f"{'family':28} " + " ".join(f"{o:>14}" for o in oracles))
    table: Counter[tuple[str, str, bool]] = Counter()
    for (o, fam, tag), n in res.disagreements.items():
        table[o, fam, tag == "new"] += n
    for fam in FAMILIES:
        cells = [f"{table[o, fam, False]:,}/{table[o, fam, True]:,}" for o in oracles]
        if any(c != "0/0" for c in cells):
            print(f"{fam:28} " + " ".join(f"{c:>14}" for c in cells))
    if not res.disagreements:
        print("  none")
    print()
    for k in KNOWN:
        counts: Counter[str] = Counter()
        for (o, _, tag), n in res.disagreements.items():
            counts[o] += n if tag == k.tag else 0
        if not +counts:
            continue
        example = next(ex[0] for (_, _, tag), ex in sorted(res.examples.items()) if tag == k.tag)
        print(
            f"known {k.tag} (wrong: {k.who}): "
            + ", ".join(f"{o} {n:,}" for o, n in sorted((+counts).items()))
        )
        print(f"  {k.analysis}")
        print(f"  e.g. {example}")
    new_keys = sorted(k for k in res.examples if k[2] == "new")
    if new_keys:
        print()
        print("NEW disagreements (not judged yet):")
    for key in new_keys:
        for ex in res.examples[key]:
            print(f"  [{key[0]}/{key[1]}] {ex}")


def _coverage(res: Result) -> None:
    enc_total: Counter[str] = Counter()
    enc_emu: Counter[str] = Counter()
    for fam, emu in res.encodings.values():
        enc_total[fam] += 1
        enc_emu[fam] += emu
    form_total: Counter[str] = Counter()
    form_emu: Counter[str] = Counter()
    for fam, emu in res.forms.values():
        form_total[fam] += 1
        form_emu[fam] += emu
    print("(b) Coverage: memory-operand instructions vmmio can emulate (lookup(insn) is not None)")
    head = f"{'family':28} {'occurrences':>12} {'emulated':>8} {'not emulated':>12}"
    print(f"{head} {'encodings':>10} {'emulated':>8} {'forms':>6} {'emulated':>8}")
    sums = [0, 0, 0, 0, 0, 0]
    for fam in FAMILIES:
        if not res.occurrences[fam] or fam == NO_ACCESS:
            continue
        row = [res.occurrences[fam], res.emulated[fam], enc_total[fam], enc_emu[fam]]
        row += [form_total[fam], form_emu[fam]]
        sums = [a + b for a, b in zip(sums, row, strict=True)]
        _cov_row(fam, row)
    print("-" * 101)
    _cov_row("total (memory accesses)", sums)
    fam = NO_ACCESS
    if res.occurrences[fam]:
        row = [res.occurrences[fam], res.emulated[fam], enc_total[fam], enc_emu[fam], form_total[fam]]
        _cov_row(fam, [*row, form_emu[fam]])
        print("  (lea, multi-byte nop, prefetch: a memory operand but no access; not in the total)")


def _cov_row(name: str, r: list[int]) -> None:
    print(
        f"{name:28} {r[0]:>12,} {_pct(r[1], r[0]):>8} {r[0] - r[1]:>12,} {r[2]:>10,} {_pct(r[3], r[2]):>8} "
        f"{r[4]:>6,} {_pct(r[5], r[4]):>8}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=2_000_000, help="instructions to sweep in all")
    ap.add_argument("--per-file", type=int, default=10_000, help="instructions per file (spread files)")
    ap.add_argument("--well-known-per-file", type=int, default=60_000, help="per well-known file")
    ap.add_argument("--kernel-per-file", type=int, default=300_000, help="from the kernel's vmlinux")
    ap.add_argument("--windows", type=int, default=16, help="windows per code section to sample from")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="worker processes")
    ap.add_argument("--no-objdump", action="store_true", help="skip the objdump comparison")
    ap.add_argument("--no-capstone", action="store_true", help="skip the capstone comparison")
    args = ap.parse_args()
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    start = time.perf_counter()
    res = collect(args)
    new = report(res)
    print()
    print(f"runtime: {time.perf_counter() - start:.1f} s with {args.jobs} worker(s)")
    if new:
        print(f"FAIL: {new} instruction(s) with new disagreements")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
