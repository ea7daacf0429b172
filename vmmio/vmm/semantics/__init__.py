"""Instruction semantics, one module per family; importing this package fills the form table."""

from vmmio.vmm.semantics import arith, bits, cache, control, io, moves, segments, stack, strings, system
from vmmio.vmm.semantics.registry import FORMS, lookup

__all__ = [
    "FORMS",
    "arith",
    "bits",
    "cache",
    "control",
    "io",
    "lookup",
    "moves",
    "segments",
    "stack",
    "strings",
    "system",
]
