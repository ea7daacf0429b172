"""Exit statistics in the spirit of `perf kvm stat`: what the guest exits for, and where the time goes.

A `Stats` observer tallies every exit four ways (by kind, by device and its range, by instruction form,
by guest RIP) with the time `vcpu.run` took to produce it (guest, kernel and backend: "kernel") and the
time the device models took to answer it ("device"), both measured by `Machine.run`. `report` prints
the tables; `timeline` keeps each device's exit times for a plot (`vmmio.plot`).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass

from vmmio.abi import InoutExit, MmioExit, VmExit
from vmmio.devices import AddressMap
from vmmio.insn_at import Where
from vmmio.machine import Machine, Serviced
from vmmio.symbols import SymbolTable
from vmmio.trace import kind_of
from vmmio.x86.insn import Insn
from vmmio.x86.regs import GPR_NAMES, LEGACY_BYTE_NAMES, SEG_NAMES

__all__ = ["Stats", "Tally", "form_of"]


@dataclass
class Tally:
    count: int = 0
    kernel_ns: int = 0
    device_ns: int = 0

    def add(self, s: Serviced) -> None:
        self.count += 1
        self.kernel_ns += s.kernel_ns
        self.device_ns += s.device_ns


# Operand shapes: register names by class, memory size keywords by bits.
_REGISTERS = {name: f"r{8 * size}" for size, names in GPR_NAMES.items() for name in names}
_REGISTERS.update({name: "r8" for name in LEGACY_BYTE_NAMES})
_REGISTERS.update({name: "sreg" for name in SEG_NAMES})
_PTR_BITS = {
    "byte": 8,
    "word": 16,
    "dword": 32,
    "fword": 48,
    "qword": 64,
    "tbyte": 80,
    "xmmword": 128,
    "ymmword": 256,
    "zmmword": 512,
}
_PREFIX_WORDS = frozenset(
    {"rep", "repe", "repne", "lock", "xacquire", "xrelease", "bnd", "notrack", "data16", "data32", "data64"}
    | {"addr16", "addr32", "addr64", "hint-taken", "hint-not-taken"}
)
_LITERAL_OPERANDS = frozenset({"in", "out"})  # the accumulator and DX are the form itself


def _shape(operand: str, insn: Insn, literal: bool) -> str:
    if "[" in operand:
        keyword = operand.split(" ptr ", 1)[0] if " ptr " in operand else ""
        bits = _PTR_BITS.get(keyword)
        return f"m{bits}" if bits else "m"
    if operand.startswith(("0x", "$")):
        return f"imm{8 * insn.imm_size}" if insn.imm_size else "imm"
    if literal:
        return operand
    if operand.startswith(("xmm", "ymm", "zmm")):
        return operand[:3]
    return _REGISTERS.get(operand, operand)


def form_of(insn: Insn, text: str) -> str:
    """Mnemonic and operand shape, e.g. ``mov m8, r8``, ``rep movsd m32, m32``, ``out imm8, al``."""
    words = text.split(" ")
    head = []
    while len(words) > 1 and words[0] in _PREFIX_WORDS:
        head.append(words.pop(0))
    mnemonic = words[0]
    operands = " ".join(words[1:]).split(",") if len(words) > 1 else []
    literal = mnemonic in _LITERAL_OPERANDS
    shapes = [_shape(op, insn, literal) for op in operands]
    return " ".join([*head, mnemonic]) + (" " + ", ".join(shapes) if shapes else "")


def _device_names(amap: AddressMap, space: str) -> list[tuple[int, int, str]]:
    return [(base, end, f"{type(dev).__name__} {space} {base:#x}-{end - 1:#x}") for base, end, dev in amap]


class Stats:
    """A `Machine.run` observer tallying exits by kind, device, instruction form and RIP."""

    def __init__(
        self, machine: Machine, where: Callable[[VmExit], Where], symbols: SymbolTable | None = None
    ) -> None:
        self.where = where
        self.symbols = symbols
        self.mmio = machine.mmio
        self.ports = machine.ports
        self._names = {
            space: {base: name for base, _end, name in _device_names(amap, space)}
            for amap, space in ((machine.mmio, "mmio"), (machine.ports, "port"))
        }
        self.by_kind: dict[str, Tally] = {}
        self.by_device: dict[str, Tally] = {}
        self.by_form: dict[str, Tally] = {}
        self.by_rip: dict[int | None, Tally] = {}
        self.rip_text: dict[int | None, str] = {}
        self.timeline: dict[str, MutableSequence[int]] = {}  # device -> at_ns of each of its exits (array)
        self.total = Tally()

    def device(self, ex: VmExit) -> str:
        """The device an exit is for, by name and range ("(unclaimed)" when none decodes it)."""
        if isinstance(ex, MmioExit):
            amap, addr, space = self.mmio, ex.gpa, "mmio"
        elif isinstance(ex, InoutExit):
            amap, addr, space = self.ports, ex.port, "port"
        else:
            return f"(no device: {kind_of(ex)})"
        hit = amap.lookup(addr)
        if hit is None:
            return f"(unclaimed {space})"
        return self._names[space][hit[0]]

    def __call__(self, s: Serviced) -> None:
        where = self.where(s.exit)
        device = self.device(s.exit)
        if where.past:
            form = "(rip already past the instruction)"
        else:
            form = form_of(where.insn, where.text) if where.insn is not None else "(unknown)"
        self.total.add(s)
        for table, key in (
            (self.by_kind, kind_of(s.exit)),
            (self.by_device, device),
            (self.by_form, form),
        ):
            tally = table.get(key)
            if tally is None:
                tally = table[key] = Tally()
            tally.add(s)
        rip_tally = self.by_rip.get(where.rip)
        if rip_tally is None:
            rip_tally = self.by_rip[where.rip] = Tally()
            self.rip_text[where.rip] = where.text
        rip_tally.add(s)
        times = self.timeline.get(device)
        if times is None:
            times = self.timeline[device] = array("q")
        times.append(s.at_ns)

    def rip_label(self, rip: int | None) -> str:
        if rip is None:
            return "?"
        name = self.symbols.lookup(rip) if self.symbols is not None else None
        return f"{rip:#x} {name}" if name else f"{rip:#x}"

    def report(self, wall_s: float, top: int = 15) -> str:
        """The tables, each sorted by count; the form and RIP tables cut at `top` rows."""
        t = self.total
        kernel_s, device_s = t.kernel_ns / 1e9, t.device_ns / 1e9
        wall = max(wall_s, 1e-9)
        lines = [
            f"vmmio stats: {t.count} exits in {wall_s:.3f} s: {kernel_s:.3f} s in the kernel "
            f"({100 * kernel_s / wall:.0f}%), {device_s:.3f} s in device models "
            f"({100 * device_s / wall:.0f}%), the rest in the run loop and its tools",
        ]
        lines += _table("kind", self.by_kind.items(), t.count)
        lines += _table("device", self.by_device.items(), t.count)
        lines += _table("instruction form", self.by_form.items(), t.count, top)
        rips = [
            (f"{self.rip_label(rip)}  {self.rip_text.get(rip, '')}".rstrip(), tally)
            for rip, tally in self.by_rip.items()
        ]
        lines += _table("guest RIP", rips, t.count, top)
        return "\n".join(lines)


_COLUMNS = f"{'count':>9} {'share':>6} {'kernel ms':>10} {'avg us':>8} {'device ms':>10} {'avg us':>8}"


def _table(title: str, items: Iterable[tuple[str, Tally]], total: int, top: int | None = None) -> list[str]:
    rows = sorted(items, key=lambda kv: (-kv[1].count, kv[0]))
    shown = rows if top is None else rows[:top]
    more = f" (top {len(shown)} of {len(rows)})" if len(shown) < len(rows) else ""
    heading = f"exits by {title}{more}"
    width = max([len(label) for label, _ in shown] + [len(heading) - 2])
    out = ["", f"{heading:{width + 2}} {_COLUMNS}"]
    for label, tally in shown:
        n = max(tally.count, 1)
        out.append(
            f"  {label:{width}} {tally.count:9} {100 * tally.count / max(total, 1):5.1f}% "
            f"{tally.kernel_ns / 1e6:10.2f} {tally.kernel_ns / 1e3 / n:8.1f} "
            f"{tally.device_ns / 1e6:10.2f} {tally.device_ns / 1e3 / n:8.1f}"
        )
    return out
