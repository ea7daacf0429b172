"""Summarise a `make verify` oracle campaign from its JSON-lines log (one verdict per case).

Usage: .venv/bin/python bench/verify_summary.py LOG [--out FILE]
Prints cases, agreements and disagreements per oracle, then disagreements by instruction form.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def summarise(rows: list[dict[str, object]]) -> str:
    cases: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    families: dict[str, set[str]] = {}
    bad: Counter[tuple[str, str]] = Counter()
    for row in rows:
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
