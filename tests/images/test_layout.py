"""Memory layout arithmetic, chunk checks and `apply`: the guarantees every loader's plan relies on."""

from __future__ import annotations

import pytest

from images.synth import MIB, Ram
from vmmio.images import Chunk, ImageError, LoadPlan, MemoryLayout, apply
from vmmio.images.layout import find_free, subtract
from vmmio.images.plan import APPLY_BLOCK, check_chunks


def test_subtract() -> None:
    ranges = [(0, 100), (200, 100)]
    assert subtract(ranges, []) == ranges
    assert subtract(ranges, [(50, 10), (90, 120), (280, 100)]) == [(0, 50), (60, 30), (210, 70)]
    assert subtract(ranges, [(0, 300)]) == []


def test_usable_free_and_memory_map() -> None:
    layout = MemoryLayout(
        ((0, 0x100000),), reserved=((0xA0000, 0x20000), (0xF000_0000, 0x1000)), in_use=((0, 0x1000),)
    )
    assert layout.usable == [(0, 0xA0000), (0xC0000, 0x40000)]
    assert layout.free([(0x2000, 0x1000)]) == [(0x1000, 0x1000), (0x3000, 0x9D000), (0xC0000, 0x40000)]
    assert layout.memory_map() == [
        (0, 0xA0000, 1),
        (0xA0000, 0x20000, 2),
        (0xC0000, 0x40000, 1),
        (0xF000_0000, 0x1000, 2),
    ]


@pytest.mark.parametrize(
    ("size", "align", "lo", "hi", "top_down", "expected"),
    [
        (0x1000, 0x1000, 0, 1 << 64, False, 0x1000),
        (0x1000, 0x1000, 0, 1 << 64, True, 0x1F000),
        (0x3000, 0x1000, 0, 1 << 64, False, 0x10000),  # does not fit the first range
        (0x1000, 0x4000, 0x1800, 1 << 64, False, 0x10000),
        (0x1000, 0x1000, 0, 0x18000, True, 0x17000),
        (0x20000, 0x1000, 0, 1 << 64, False, None),
        (0, 0x1000, 0, 1 << 64, False, 0x1000),
    ],
)
def test_find_free(size: int, align: int, lo: int, hi: int, top_down: bool, expected: int | None) -> None:
    free = [(0x800, 0x2800), (0x10000, 0x10000)]
    assert find_free(free, size, align, lo, hi, top_down) == expected


def _chunk(gpa: int, n: int, zero: int = 0, what: str = "c") -> Chunk:
    return Chunk(gpa, memoryview(bytes(n)), zero, what)


def test_check_chunks_sorts_drops_empty_and_rejects_overlap_and_escape() -> None:
    layout = MemoryLayout.simple(MIB, in_use=((0x1000, 0x1000),))
    ok = check_chunks(
        [_chunk(0x5000, 0x10, what="b"), _chunk(0x3000, 0, 0x2000, "a"), _chunk(0, 0)], layout, 1 << 32
    )
    assert [c.what for c in ok] == ["a", "b"]
    for chunks, fragment in (
        (
            [_chunk(0x3000, 0x10, 0x1000, "a"), _chunk(0x4000, 1, what="b")],
            "b [0x4000, 0x4001) overlaps a [0x3000, 0x4010)",
        ),
        ([_chunk(0x1800, 1, what="x")], "x [0x1800, 0x1801) overlaps RAM in use by the VMM [0x1000, 0x2000)"),
        (
            [_chunk(MIB - 1, 2, what="x")],
            "x [0xfffff, 0x100001) is not inside usable RAM (RAM [0x0, 0x100000))",
        ),
        (
            [_chunk(0x7000, 0x1001, what="x")],
            "x [0x7000, 0x8001) reaches past 0x8000, beyond what this entry mode",
        ),
    ):
        with pytest.raises(ImageError) as err:
            check_chunks(chunks, layout, 0x8000 if "past" in fragment else 1 << 32)
        assert fragment in str(err.value)


def test_apply_writes_in_bounded_blocks_and_clears_tails() -> None:
    big = bytes(range(251)) * (3 * APPLY_BLOCK // 251 + 1)
    plan = LoadPlan("flat", "long64", 0, (Chunk(0x1000, memoryview(big), 2 * APPLY_BLOCK + 5, "big"),))
    sizes: list[int] = []
    ram = Ram(0x1000 + len(big) + 2 * APPLY_BLOCK + 0x1000)
    ram.mem[:] = b"\xee" * len(ram.mem)

    def write(gpa: int, data: bytes) -> None:
        sizes.append(len(data))
        ram.write(gpa, data)

    apply(plan, write)
    assert max(sizes) == APPLY_BLOCK
    end = 0x1000 + len(big)
    assert ram.read(0x1000, len(big)) == big
    assert ram.read(end, 2 * APPLY_BLOCK + 5) == bytes(2 * APPLY_BLOCK + 5)
    assert ram.read(end + 2 * APPLY_BLOCK + 5, 1) == b"\xee" and ram.read(0xFFF, 1) == b"\xee"
