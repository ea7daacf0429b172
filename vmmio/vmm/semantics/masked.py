"""Masked memory accesses: only the selected elements are read or written, and only they can fault.

One mechanism serves every masked form (VMASKMOVPS/PD, VPMASKMOVD/Q, the EVEX opmask moves, the byte
masks of MASKMOVQ/MASKMOVDQU). How an access is presented to devices:

- The selected elements form runs of contiguous elements. Each run is one access, in address order,
  which the kernel cuts into requests by the rule of every access (`vmmio.abi.split_access`): a run of
  1, 2, 4 or 8 bytes within a page is one request, anything else naturally aligned pieces of at most 8
  bytes. With every element selected there is one run, so a full mask presents exactly the requests of
  the unmasked move. Unselected elements are never requested.
- Nothing is requested before every selected byte is known to be accessible: a device never sees a
  request of an instruction that then faults. Loads probe each run in turn (a page walk, no data) when
  there is more than one, so a fault is reported at the first inaccessible selected byte, as the CPU
  does. Masked stores probe for write their first and then their last selected byte (no vector spans
  more than two pages, so those two cover every page): the host CPU reports a masked store's #PF at the
  last selected byte when the first is writable (VMASKMOVPS at 0x1ff8 over a missing 0x2000: CR2 =
  0x2007), where an unmasked store reports the page boundary.
- No masked access is checked for alignment (#AC): the host CPU checks none of these pieces, as it checks
  no vector operand wider than 8 bytes. MASKMOVQ/MASKMOVDQU probe their qwords themselves (see there).
"""

from __future__ import annotations

from vmmio.vmm.semantics.context import NO_AC, READ, TOUCH, WRITE, Operand, Steps
from vmmio.x86.regs import MASK

Run = tuple[int, int]  # (byte offset in the operand, length in bytes)


def runs(sel: int, esize: int, nelem: int) -> list[Run]:
    """The runs of contiguous selected elements (bit i of `sel` selects element i), in address order."""
    out: list[Run] = []
    start = -1
    for i in range(nelem + 1):
        on = i < nelem and sel >> i & 1
        if on and start < 0:
            start = i
        elif not on and start >= 0:
            out.append((start * esize, (i - start) * esize))
            start = -1
    return out


def byte_runs(sel: int, nbytes: int) -> list[Run]:
    """Runs of a byte mask (MASKMOVQ/MASKMOVDQU: bit i selects byte i)."""
    return runs(sel, 1, nbytes)


def load(seg: int, off: int, addr_size: int, parts: list[Run]) -> Operand:
    """Read the runs of an operand at seg:off; unselected bytes read as 0."""
    wrap = MASK[addr_size]
    if len(parts) > 1:
        for start, n in parts:
            yield (TOUCH | NO_AC, seg, (off + start) & wrap, n, 0)
    value = 0
    for start, n in parts:
        value |= (yield (READ | NO_AC, seg, (off + start) & wrap, n, 0)) << (8 * start)
    return value


def probe_store(seg: int, off: int, addr_size: int, parts: list[Run]) -> Steps:
    """Check a masked store's first and last selected byte for write, in that order."""
    if not parts:
        return
    wrap = MASK[addr_size]
    first = parts[0][0]
    last = parts[-1][0] + parts[-1][1] - 1
    yield (TOUCH | NO_AC, seg, (off + first) & wrap, 1, 1)
    if last != first:
        yield (TOUCH | NO_AC, seg, (off + last) & wrap, 1, 1)


def write(seg: int, off: int, addr_size: int, parts: list[Run], value: int) -> Steps:
    """Write the runs of `value` (already probed)."""
    wrap = MASK[addr_size]
    for start, n in parts:
        yield (WRITE | NO_AC, seg, (off + start) & wrap, n, value >> (8 * start) & ((1 << (8 * n)) - 1))


def store(seg: int, off: int, addr_size: int, parts: list[Run], value: int) -> Steps:
    """A masked store: probe, then write the selected runs."""
    yield from probe_store(seg, off, addr_size, parts)
    yield from write(seg, off, addr_size, parts, value)


__all__ = ["Run", "byte_runs", "load", "probe_store", "runs", "store", "write"]
