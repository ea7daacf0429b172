"""Instruction semantics, one module per family; importing this package fills the form table."""

from vmmio.vmm.semantics import (
    adx,
    arith,
    atomic,
    avx512_moves,
    avx_moves,
    bits,
    bitscan,
    bmi,
    cache,
    conditional,
    control,
    crc32,
    extmoves,
    io,
    moves,
    muldiv,
    segments,
    shifts,
    sse_moves,
    stack,
    strings,
    system,
)
from vmmio.vmm.semantics.registry import FORMS, lookup

__all__ = ["FORMS", "arith", "bits", "cache", "io", "lookup", "moves", "stack", "strings"]
__all__ += ["adx", "atomic", "bitscan", "bmi", "conditional", "crc32", "extmoves", "muldiv", "shifts"]
__all__ += ["avx512_moves", "avx_moves", "sse_moves"]  # vector moves: MMX, SSE, VEX, EVEX
__all__ += ["control", "segments", "system"]  # stack, control transfer, segment registers, system
