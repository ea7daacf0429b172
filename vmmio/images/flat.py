"""Flat binaries: the file's bytes at one address, entered there in 64-bit mode (vmmio's shipped guests)."""

from __future__ import annotations

from vmmio.images.errors import ImageError
from vmmio.images.layout import MemoryLayout
from vmmio.images.plan import Chunk, LoadPlan, check_chunks

FLAT_LOAD_ADDR = 0x10_0000


def load_flat(data: bytes, layout: MemoryLayout, addr: int = FLAT_LOAD_ADDR) -> LoadPlan:
    """Plan a raw 64-bit binary at `addr` ("long64" entry at `addr`); it must fit RAM there."""
    if not data:
        raise ImageError("flat image is empty")
    chunks = check_chunks([Chunk(addr, memoryview(data), 0, "flat image")], layout, 1 << 64)
    return LoadPlan("flat", "long64", addr, chunks, identity_map=chunks[0].end)
