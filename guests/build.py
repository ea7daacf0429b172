#!/usr/bin/env python3
"""Build vmmio's guest images from the sources in this directory, reproducibly.

    python guests/build.py                 # write vmmio/guests/*.bin and the test guests tests/guests/*.bin
    python guests/build.py --out DIR       # write them all to DIR instead
    python guests/build.py --check         # rebuild in a temporary directory, compare with what is committed
    python guests/build.py --native DIR    # also DIR/insntest-native, the Linux x86-64 build of insntest
    python guests/build.py --toolchain     # print the binutils in use (exit 2 if there are none)

Only GNU as and ld for x86-64 are needed (AS / LD in the environment override them). The flags are
fixed, nothing depends on time, paths or locale (the sources are passed by relative name, no build ID),
and the flat images carry no symbols, so two builds with the same binutils give identical bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "vmmio" / "guests"
TEST_IMAGES = HERE.parent / "tests" / "guests"
LINKER_SCRIPT = "guest.ld"

# image name -> its source (it .includes its other files from this directory)
GUESTS = {"hello": "hello.S", "insntest": "insntest.S"}
# Guests only the test suite runs (each with its own harness), kept out of the package: tests/guests/.
TEST_GUESTS = {
    "xchain": "xchain.S",
    "inst_emul_exit_consistent": "inst_emul_exit_consistent.S",
    "inst_emul_inout": "inst_emul_inout.S",
    "inst_emul_imul": "inst_emul_imul.S",
    "inst_emul_rep_instrs": "inst_emul_rep_instrs.S",
    "inst_emul_triple_fault": "inst_emul_triple_fault.S",
}
SOURCES = {**GUESTS, **TEST_GUESTS}
NATIVE = "insntest"

AS_FLAGS = ["--64", "-I", "."]
LD_FLAGS = ["-m", "elf_x86_64", "-nostdlib", "-static", "--build-id=none", "-z", "noexecstack"]
LD_FLAGS += ["-T", LINKER_SCRIPT]


class ToolchainMissing(RuntimeError):
    """No x86-64 GNU as/ld on this machine."""


def find_tools() -> tuple[str, str]:
    """(as, ld): $AS/$LD if set, else the x86-64 cross tools if installed, else the plain ones."""
    found: list[str] = []
    for env, names in (("AS", ("x86_64-linux-gnu-as", "as")), ("LD", ("x86_64-linux-gnu-ld", "ld"))):
        candidates = [os.environ[env]] if os.environ.get(env) else list(names)
        path = next((p for p in map(shutil.which, candidates) if p), None)
        if path is None:
            raise ToolchainMissing(f"none of {', '.join(candidates)} found (GNU binutils for x86-64)")
        found.append(path)
    return found[0], found[1]


def toolchain_version(tools: tuple[str, str]) -> str:
    """First line of `as --version`: what the shipped images record as their toolchain."""
    out = subprocess.run([tools[0], "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def _run(cmd: list[str]) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")


def build_image(name: str, out: Path, tools: tuple[str, str], native: bool = False) -> Path:
    """Assemble and link one guest: a flat image `out/NAME.bin`, or the native ELF `out/NAME-native`."""
    asm, ld = tools
    out = out.resolve()  # the tools run in this directory
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vmmio-guest-") as tmp:
        obj = Path(tmp) / f"{name}.o"
        defs = ["--defsym", "NATIVE=1"] if native else []
        _run([asm, *AS_FLAGS, *defs, "-o", str(obj), SOURCES[name]])
        if native:
            target = out / f"{name}-native"
            _run([ld, *LD_FLAGS, "-o", str(target), str(obj)])
        else:
            target = out / f"{name}.bin"
            linked = Path(tmp) / f"{name}.bin"
            _run([ld, *LD_FLAGS, "--oformat", "binary", "-o", str(linked), str(obj)])
            target.write_bytes(linked.read_bytes())  # plain file mode, not the linker's executable bits
    return target


def build_all(out: Path | None, tools: tuple[str, str]) -> dict[str, Path]:
    """Every image, into `out`, or where it is committed (shipped guests and test guests apart)."""
    return {
        name: build_image(name, out if out is not None else committed(name).parent, tools) for name in SOURCES
    }


def committed(name: str) -> Path:
    """Where the image `name` is committed: vmmio/guests/ for shipped guests, tests/guests/ for the rest."""
    return (IMAGES if name in GUESTS else TEST_IMAGES) / f"{name}.bin"


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.read_bytes() == b.read_bytes()


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--out", type=Path, help="one directory for all images (default: where committed)")
    parser.add_argument("--check", action="store_true", help="compare a fresh build with the committed ones")
    parser.add_argument("--native", type=Path, metavar="DIR", help="also build insntest for Linux into DIR")
    parser.add_argument("--toolchain", action="store_true", help="print the assembler version and exit")
    args = parser.parse_args(argv)
    try:
        tools = find_tools()
    except ToolchainMissing as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 2
    if args.toolchain:
        print(toolchain_version(tools))
        return 0
    if args.check:
        with tempfile.TemporaryDirectory(prefix="vmmio-guests-") as tmp:
            fresh = build_all(Path(tmp), tools)
            stale = [name for name, path in fresh.items() if not _same(path, committed(name))]
        if stale:
            print(f"build.py: out of date: {', '.join(map(str, map(committed, stale)))}", file=sys.stderr)
            return 1
        print("build.py: shipped and test images match the sources")
        return 0
    for name, path in build_all(args.out, tools).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    if args.native is not None:
        path = build_image(NATIVE, args.native, tools, native=True)
        print(f"{NATIVE} (native): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
