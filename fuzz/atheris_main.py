"""Coverage-guided fuzzing of the decoder or the ABI with atheris (libFuzzer), on the same checks.

    python -m fuzz.atheris_main decoder -max_total_time=120 [libFuzzer options]
    python -m fuzz.atheris_main abi -max_total_time=120

The input bytes become a case of the target (mode and trailing bytes first for the decoder, the wrapper
for the ABI), checked by the target's own `check`. A new failure prints the replay snippet the random
fuzzer would print and stops; known vmmio bugs (fuzz.known) are counted and skipped, so the search goes
on past them. vmmio is instrumented for coverage; the fuzzer itself is not.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

atheris: Any = importlib.import_module("atheris")

with atheris.instrument_imports(include=["vmmio"]):
    importlib.import_module("vmmio.x86.decode")
    importlib.import_module("vmmio.abi")

from fuzz.core import Stats, Target, reproducer, signature  # noqa: E402
from fuzz.known import classify  # noqa: E402
from fuzz.targets import TARGETS, abi, decoder  # noqa: E402

known: Counter[str] = Counter()


def _decoder_case(data: bytes) -> decoder.Case:
    fdp = atheris.FuzzedDataProvider(data)
    mode = decoder.MODES[fdp.ConsumeIntInRange(0, 2)]
    junk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16)) or b"\x0f"
    return decoder.Case(fdp.ConsumeBytes(fdp.remaining_bytes()), mode, junk, False)


def _abi_case(data: bytes) -> abi.Case:
    wrappers = tuple(abi.WRAPPERS)
    return abi.Case(data[1:], wrappers[data[0] % len(wrappers)] if data else "bytes")


CASES: dict[str, Callable[[bytes], Any]] = {"decoder": _decoder_case, "abi": _abi_case}


def one_input(target: Target[Any], make: Callable[[bytes], Any]) -> Callable[[bytes], None]:
    def test(data: bytes) -> None:
        case = make(data)
        try:
            target.check(case, Stats())
        except Exception as exc:
            sig = signature(exc)
            bug = classify(target.name, sig, case)
            if bug is not None:
                if not known[bug.id]:  # libFuzzer exits without unwinding: say it at the first hit
                    print(f"\nknown bug {bug.id} hit (fuzz.known); skipping it from now on", file=sys.stderr)
                    print("    " + reproducer(target, case).replace("\n", "\n    "), file=sys.stderr)
                known[bug.id] += 1
                return
            print(f"\nFAILURE {target.name}: {sig}\n  {exc}\n  reproducer:", file=sys.stderr)
            print("    " + reproducer(target, case).replace("\n", "\n    "), file=sys.stderr)
            raise

    return test


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in CASES:
        sys.exit(f"usage: python -m fuzz.atheris_main {{{','.join(CASES)}}} [libFuzzer options]")
    name = sys.argv.pop(1)
    atheris.Setup(sys.argv, one_input(TARGETS[name], CASES[name]))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
