"""Instruction semantics, one module per family; importing this package fills the form table."""

from vmmio.vmm.semantics import (
    arith,
    avx512_moves,
    avx_moves,
    bits,
    cache,
    io,
    moves,
    sse_moves,
    stack,
    strings,
)
from vmmio.vmm.semantics.registry import FORMS, lookup

__all__ = ["FORMS", "arith", "bits", "cache", "io", "lookup", "moves", "stack", "strings"]
__all__ += ["avx512_moves", "avx_moves", "sse_moves"]  # vector moves: MMX, SSE, VEX, EVEX
