"""Summarise a `make verify` oracle campaign from its JSON-lines log (one verdict per case).

Usage: .venv/bin/python bench/verify_summary.py LOG [--out FILE]
Prints cases, agreements and disagreements per oracle, then disagreements by instruction form, then the
KVM oracle's own summary (known KVM behaviours met, cost per case), merged from the "kvm-summary" rows
each test process wrote (tests/test_oracle_kvm.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oracles_kvm.judge import Summary  # tests/ is not a package: on the path above

KVM_SUMMARY = "kvm-summary"


def merge_kvm(rows: list[dict[str, Any]]) -> Summary | None:
    """One KVM oracle Summary from the rows of every test process (None when KVM did not run)."""
    if not rows:
        return None
    total = Summary()
    for row in rows:
        s = row["summary"]
        for name in ("cases", "agreements", "emulated", "kvm_exits", "rebuilds"):
            setattr(total, name, getattr(total, name) + int(s[name]))
        for name in ("kvm_seconds", "vmmio_seconds", "wall_seconds"):
            setattr(total, name, getattr(total, name) + float(s[name]))
        total.disagreements.update(Counter({str(k): int(v) for k, v in s["disagreements"].items()}))
        for form, text in s["examples"].items():
            total.examples.setdefault(str(form), str(text))
        for kind, key, form, count in s["known"]:
            total.known[str(kind), str(key), str(form)] += int(count)
    return total


def summarise(rows: list[dict[str, Any]]) -> str:
    cases: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    families: dict[str, set[str]] = {}
    bad: Counter[tuple[str, str]] = Counter()
    kvm_rows = [row for row in rows if row.get("oracle") == KVM_SUMMARY]
    for row in rows:
        if row.get("oracle") == KVM_SUMMARY:
            continue
        oracle, form, ok = str(row["oracle"]), str(row["form"]), int(bool(row["ok"]))
        cases[oracle] += 1
        agreed[oracle] += ok
        families.setdefault(oracle, set()).add(str(row["family"]))
        if not ok:
            bad[oracle, form] += 1
    lines = [f"{'oracle':12} {'cases':>8} {'agree':>8} {'disagree':>9} {'families':>9}"]
    for oracle in sorted(cases):
        n, ok = cases[oracle], agreed[oracle]
        lines.append(f"{oracle:12} {n:8} {ok:8} {n - ok:9} {len(families[oracle]):9}")
    lines.append(f"{'total':12} {sum(cases.values()):8} {sum(agreed.values()):8} {sum(bad.values()):9}")
    lines.append("")
    if bad:
        lines.append("disagreements by form:")
        lines += [f"  {oracle:10} {form:40} {n}" for (oracle, form), n in sorted(bad.items())]
    else:
        lines.append("disagreements by form: none")
    kvm = merge_kvm(kvm_rows)
    lines.append("")
    if kvm is None:
        lines.append("KVM oracle: did not run (no usable /dev/kvm, or no cases)")
    else:
        first, *rest = kvm.text(examples=True).splitlines()
        lines += [f"{first} (merged from {len(kvm_rows)} test processes)", *rest]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, help="also write the summary here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    text = summarise(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
