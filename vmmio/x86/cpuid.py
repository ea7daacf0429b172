"""CPUID as a table, and the feature bits the emulator asks it about.

An instruction whose feature the guest's CPUID does not report raises #UD, as the CPU would; the table
is whatever the execution backend reports (the engine's CPU model, KVM's supported set, or a synthetic
table for tests). Leaves not in the table read as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

EAX, EBX, ECX, EDX = range(4)
Leaf = tuple[int, int, int, int]

# feature -> (leaf, subleaf, register, bit): SDM vol. 2, CPUID; AMD APM vol. 3 for the 0x8000_0001 bits.
FEATURES: dict[str, tuple[int, int, int, int]] = {
    "fpu": (1, 0, EDX, 0),
    "cx8": (1, 0, EDX, 8),
    "cmov": (1, 0, EDX, 15),
    "clflush": (1, 0, EDX, 19),
    "mmx": (1, 0, EDX, 23),
    "fxsr": (1, 0, EDX, 24),
    "sse": (1, 0, EDX, 25),
    "sse2": (1, 0, EDX, 26),
    "sse3": (1, 0, ECX, 0),
    "ssse3": (1, 0, ECX, 9),
    "cx16": (1, 0, ECX, 13),
    "sse4_1": (1, 0, ECX, 19),
    "sse4_2": (1, 0, ECX, 20),
    "x2apic": (1, 0, ECX, 21),
    "movbe": (1, 0, ECX, 22),
    "popcnt": (1, 0, ECX, 23),
    "xsave": (1, 0, ECX, 26),
    "osxsave": (1, 0, ECX, 27),
    "avx": (1, 0, ECX, 28),
    "f16c": (1, 0, ECX, 29),
    "bmi1": (7, 0, EBX, 3),
    "avx2": (7, 0, EBX, 5),
    "bmi2": (7, 0, EBX, 8),
    "avx512f": (7, 0, EBX, 16),
    "avx512dq": (7, 0, EBX, 17),
    "adx": (7, 0, EBX, 19),
    "clflushopt": (7, 0, EBX, 23),
    "clwb": (7, 0, EBX, 24),
    "avx512bw": (7, 0, EBX, 30),
    "avx512vl": (7, 0, EBX, 31),
    "lahf_lm": (0x8000_0001, 0, ECX, 0),
    "abm": (0x8000_0001, 0, ECX, 5),  # LZCNT
    "sse4a": (0x8000_0001, 0, ECX, 6),
    "nx": (0x8000_0001, 0, EDX, 20),
    "lm": (0x8000_0001, 0, EDX, 29),
}


# The leaves whose output depends on ECX (the subleaf): SDM vol. 2, CPUID, and AMD APM vol. 3. Every
# other leaf ignores ECX, whatever the guest left in it.
SUBLEAF_LEAVES = frozenset({4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1B, 0x1D, 0x1E, 0x1F})
SUBLEAF_LEAVES |= {0x20, 0x23, 0x24, 0x8000_001D, 0x8000_0020, 0x8000_0026}


@dataclass(frozen=True)
class CpuidTable:
    """(leaf, subleaf) -> (EAX, EBX, ECX, EDX); leaves whose subleaf does not matter use subleaf 0."""

    leaves: Mapping[tuple[int, int], Leaf] = field(default_factory=dict)

    def query(self, leaf: int, subleaf: int = 0) -> Leaf:
        """What CPUID returns for EAX = `leaf`, ECX = `subleaf` (ignored where the leaf has no subleaves)."""
        if leaf not in SUBLEAF_LEAVES:
            subleaf = 0
        return self.leaves.get((leaf, subleaf), (0, 0, 0, 0))

    def has(self, feature: str) -> bool:
        leaf, sub, reg, bit = FEATURES[feature]
        return bool(self.query(leaf, sub)[reg] >> bit & 1)

    def without(self, *features: str) -> CpuidTable:
        """The same table with `features` cleared (what a VMM hides from its guest)."""
        leaves = dict(self.leaves)
        for name in features:
            leaf, sub, reg, bit = FEATURES[name]
            regs = list(leaves.get((leaf, sub), (0, 0, 0, 0)))
            regs[reg] &= ~(1 << bit)
            leaves[leaf, sub] = (regs[0], regs[1], regs[2], regs[3])
        return CpuidTable(leaves)


def _everything() -> CpuidTable:
    leaves: dict[tuple[int, int], list[int]] = {
        (0, 0): [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],  # GenuineIntel
        (0x8000_0000, 0): [0x8000_0008, 0, 0, 0],
    }
    for leaf, sub, reg, bit in FEATURES.values():
        leaves.setdefault((leaf, sub), [0, 0, 0, 0])[reg] |= 1 << bit
    return CpuidTable({k: (v[0], v[1], v[2], v[3]) for k, v in leaves.items()})


ALL_FEATURES = _everything()
"""A CPU with every feature above: the scripted backend's default, so every form can be tested."""

__all__ = ["ALL_FEATURES", "EAX", "EBX", "ECX", "EDX", "FEATURES", "CpuidTable", "Leaf"]
