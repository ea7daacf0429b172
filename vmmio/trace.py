"""Exit traces: one line per exit for people (`--trace`) and one JSON object per exit for tools
(`--trace-json`). Both come from the same fields (`exit_fields`); docs/trace.md describes each.

A trace line is written once the exit is answered, so a read shows the value the device returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from vmmio.abi import InoutExit, InstEmulExit, MmioExit, ShutdownExit, VmExit
from vmmio.insn_at import Where
from vmmio.machine import Serviced

__all__ = ["Tracer", "exit_fields", "kind_of", "text_line"]

KINDS: dict[type, str] = {
    MmioExit: "mmio",
    InoutExit: "inout",
    InstEmulExit: "inst_emul",
    ShutdownExit: "shutdown",
}


def kind_of(ex: VmExit) -> str:
    """The exit's kind as traces, records and statistics name it: mmio, inout, inst_emul, hlt, ..."""
    return KINDS.get(type(ex)) or type(ex).__name__.removesuffix("Exit").lower()


def _access(s: Serviced) -> dict[str, Any]:
    """Address, size, direction and value of a request; a read's value is the device's answer."""
    ex = s.exit
    answer = getattr(s.answer, "data", None)
    if isinstance(ex, MmioExit):
        value = ex.data if ex.is_write else answer
        return {
            "gpa": hex(ex.gpa),
            "size": ex.size,
            "dir": "write" if ex.is_write else "read",
            "value": None if value is None else hex(value),
        }
    if isinstance(ex, InoutExit):
        value = answer if ex.is_in else ex.data
        return {
            "port": hex(ex.port),
            "size": ex.size,
            "dir": "in" if ex.is_in else "out",
            "value": None if value is None else hex(value),
        }
    if isinstance(ex, InstEmulExit | ShutdownExit):
        return {"reason": ex.reason.name}
    return {}


def exit_fields(s: Serviced, where: Where, vcpu: int = 0) -> dict[str, Any]:
    """One exit as the --trace-json object (docs/trace.md): hex strings for addresses and values."""
    return {
        "n": s.number,
        "t": round(s.at_ns / 1e9, 9),
        "vcpu": vcpu,
        "rip": None if where.rip is None else hex(where.rip),
        "rip_past": where.past,
        "insn": where.text or None,
        "bytes": where.raw.hex() or None,
        "kind": kind_of(s.exit),
        **_access(s),
        "kernel_ns": s.kernel_ns,
        "device_ns": s.device_ns,
    }


def text_line(f: dict[str, Any]) -> str:
    """The --trace line for the fields of one exit."""
    rip = f["rip"] or "?"
    head = f"[exit] {f['n']:6} {f['t']:10.6f} cpu{f['vcpu']} {rip:>10} {f['kind']:5}"
    if "dir" in f:
        where = f"gpa={f['gpa']}" if "gpa" in f else f"port={f['port']}"
        value = f["value"] if f["value"] is not None else "-"
        body = f"{f['dir']:5} {where:16} size={f['size']} value={value:10}"
    elif "reason" in f:
        body = f"reason={f['reason']:35}"
    else:
        body = f"{'':42}"
    insn = f"(rip past it; next: {f['insn']})" if f["rip_past"] else f["insn"] or ""
    return f"{head} {body} {insn}".rstrip()


class Tracer:
    """A `Machine.run` observer writing each exit as a text line and/or a JSON line."""

    def __init__(
        self, where: Callable[[VmExit], Where], text: IO[str] | None = None, jsonl: IO[str] | None = None
    ) -> None:
        self.where = where
        self.text = text
        self.jsonl = jsonl

    def __call__(self, s: Serviced) -> None:
        fields = exit_fields(s, self.where(s.exit))
        if self.text is not None:
            self.text.write(text_line(fields) + "\n")
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(fields) + "\n")
