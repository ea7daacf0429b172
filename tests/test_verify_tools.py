"""`make verify`'s plumbing: the parallel runner's progress line and the summary table, with the KVM
oracle's summary merged from every test process instead of issued as a warning."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from oracles_kvm.judge import Summary
from test_oracle_kvm import summary_row

ROOT = Path(__file__).resolve().parent.parent


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(cases: int, known: int, disagree: int = 0) -> Summary:
    s = Summary(cases=cases, agreements=cases - known - disagree, emulated=cases - 1, kvm_exits=3 * cases)
    s.known["kvm-deviation", "null-seg-last", "mov r/m32, r32"] = known
    if disagree:
        s.disagreements["add r/m8, r8"] = disagree
        s.examples["add r/m8, r8"] = "report of the first case"
    s.kvm_seconds, s.vmmio_seconds, s.wall_seconds, s.rebuilds = 0.5, 0.25, 2.0, 1
    return s


def test_kvm_summaries_of_all_processes_are_merged_into_the_table() -> None:
    verify_summary = bench("verify_summary")
    rows: list[dict[str, object]] = [
        {"oracle": "kvm", "family": "mov", "form": "mov r/m32, r32", "ok": True},
        {"oracle": "kvm", "family": "alu", "form": "add r/m8, r8", "ok": False},
        {"oracle": "kvm-summary", "summary": summary_row(summary(100, 3))},
        {"oracle": "kvm-summary", "summary": summary_row(summary(50, 2, disagree=1))},
    ]
    text = verify_summary.summarise(json.loads(json.dumps(rows)))  # as read back from the log
    table = text.splitlines()
    assert table[1].split() == ["kvm", "2", "1", "1", "2"]  # summary rows are not cases
    expected = summary(150, 5, disagree=1)
    expected.agreements, expected.emulated, expected.kvm_exits = 144, 148, 450
    expected.kvm_seconds, expected.vmmio_seconds, expected.wall_seconds, expected.rebuilds = 1.0, 0.5, 4.0, 2
    first, *rest = expected.text(examples=True).splitlines()
    assert f"{first} (merged from 2 test processes)" in table
    assert "\n".join(rest) in text
    assert "KVM oracle: 150 cases, 144 agree, 5 known KVM behaviours, 1 disagree" in text
    assert "DISAGREE add r/m8, r8: 1" in text and "report of the first case" in text


def test_a_campaign_without_kvm_says_so() -> None:
    text = bench("verify_summary").summarise(
        [{"oracle": "unicorn", "family": "mov", "form": "f", "ok": True}]
    )
    assert text.splitlines()[-1] == "KVM oracle: did not run (no usable /dev/kvm, or no cases)"


def test_summary_rows_keep_every_count() -> None:
    s = summary(10, 2, disagree=1)
    merged = bench("verify_summary").merge_kvm([{"summary": json.loads(json.dumps(summary_row(s)))}])
    assert merged is not None and merged.text() == s.text()
    assert merged.known == Counter({("kvm-deviation", "null-seg-last", "mov r/m32, r32"): 2})


def test_progress_line() -> None:
    line = bench("verify_run").progress_line
    assert line(500, 2000, 10.0) == "500/2000 cases (25%)  50 cases/s  0:10 elapsed  0:30 left"
    assert line(0, 2000, 0.0) == "0/2000 cases (0%)  0 cases/s  0:00 elapsed  ? left"
    assert line(10, 10, 4000.0).endswith("1:06:40 elapsed  0:00 left")


def test_parallel_run_with_progress(tmp_path: Path) -> None:
    """A small campaign through the runner: pytest-xdist workers, the log filled, a final progress line."""
    pytest.importorskip("xdist", reason="pytest-xdist (the test extra) is not installed")
    log = tmp_path / "verify-log.jsonl"
    env = {**os.environ, "VMMIO_ORACLE_CASES": "0"}  # the floor: 10 cases per family
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "verify_run.py"), "--log", str(log), "--jobs", "2"),
            "tests/test_oracle_unicorn.py::test_vmmio_matches_unicorn[mov]",  # two families of the
            "tests/test_oracle_unicorn.py::test_vmmio_matches_unicorn[xchg]",  # module: one per worker
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) >= 15 and {r["oracle"] for r in rows} == {"unicorn"}  # known Unicorn bugs are left out
    assert {r["family"] for r in rows} == {"mov", "xchg"}
    final = [line for line in done.stderr.splitlines() if line.startswith("[verify] done: ")]
    assert final and f"{len(rows)}/20 cases" in final[0], done.stderr  # 10 per family
    assert " passed in " in done.stderr  # pytest's own output, held back until the end
