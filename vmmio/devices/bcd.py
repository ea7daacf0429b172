"""Binary-coded decimal, as the 8254 (BCD counting) and the MC146818 (BCD time) store numbers."""

from __future__ import annotations


def to_bcd(value: int) -> int:
    """`value` (0-9999) as four BCD digits."""
    return sum(((value // 10**digit) % 10) << (4 * digit) for digit in range(4))


def from_bcd(raw: int) -> int:
    """Four BCD digits as a number; a nibble above 9 counts at face value (0xA0 is 100)."""
    return sum(((raw >> (4 * digit)) & 0xF) * 10**digit for digit in range(4))
