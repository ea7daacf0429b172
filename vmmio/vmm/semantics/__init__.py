"""Instruction semantics, one module per family; importing this package fills the form table."""

from vmmio.vmm.semantics import arith, bits, cache, io, moves, stack, strings
from vmmio.vmm.semantics.registry import FORMS, lookup

__all__ = ["FORMS", "arith", "bits", "cache", "io", "lookup", "moves", "stack", "strings"]
