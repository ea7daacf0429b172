"""The import graph has no upward arrow: each layer imports only what stands below it.

Layers, top to bottom (docs in the README's architecture section):

    4  cli, machine, demo, guests, service, the front door   userspace glue
    3  vmm/ (Vm, Vcpu, semantics)  |  reference/    the kernel, and its KVM peer (neither imports the other)
    2  backends/                                    execution backends ("hardware")
    1  devices/, images/                            device models and image parsing
    0  abi, memory, x86/                            ground floor: the boundary's vocabulary, RAM, the ISA

Every import counts, including those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vmmio

ROOT = Path(vmmio.__file__).resolve().parent

LAYERS: tuple[tuple[int, str], ...] = (
    (0, "vmmio.abi"),
    (0, "vmmio.memory"),
    (0, "vmmio.x86"),
    (1, "vmmio.devices"),
    (1, "vmmio.images"),
    (2, "vmmio.backends"),
    (3, "vmmio.vmm"),
    (3, "vmmio.reference"),
    (4, "vmmio.machine"),
    (4, "vmmio.pc"),
    (4, "vmmio.cli"),
    (4, "vmmio.service"),
    (4, "vmmio.demo"),
    (4, "vmmio.guests"),
    (4, "vmmio.__main__"),
    (4, "vmmio"),  # the front door (vmmio/__init__.py) re-exports from every layer
)
PEERS = {frozenset(("vmmio.vmm", "vmmio.reference"))}


def layer_of(module: str) -> tuple[int, str]:
    """(layer, package) of the longest matching prefix."""
    matches = [p for p in LAYERS if module == p[1] or module.startswith(p[1] + ".")]
    return max(matches, key=lambda p: len(p[1]))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every vmmio module `path` imports (a `from a import b` counts a.b when b is a module)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vmmio"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmmio"):
            found.add(node.module)
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    ROOT.parent / sub.replace(".", "/") / "__init__.py"
                ).exists():
                    found.add(sub)
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in MODULES:
        layer_of(module_name(path))  # raises if none matches


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_upward_import(path: Path) -> None:
    me = module_name(path)
    my_layer, my_pkg = layer_of(me)
    bad = []
    for target in sorted(imports_of(path)):
        layer, pkg = layer_of(target)
        if layer > my_layer and me != "vmmio":
            bad.append(f"{target} (layer {layer}) from layer {my_layer}")
        elif frozenset((pkg, my_pkg)) in PEERS and pkg != my_pkg:
            bad.append(f"{target}: {my_pkg} and {pkg} are peers and must not import each other")
    assert not bad, f"{me} imports upward: " + "; ".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: a ground-floor module importing the kernel is reported."""
    probe = ROOT / "x86" / "state.py"
    fake = tmp_path / "probe.py"
    fake.write_text(probe.read_text() + "\nfrom vmmio.vmm.vcpu import Vcpu\n")
    assert "vmmio.vmm.vcpu" in imports_of(fake)
    assert layer_of("vmmio.vmm.vcpu")[0] > layer_of("vmmio.x86.state")[0]
