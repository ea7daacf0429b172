"""The tools a run carries, attached to `Machine.run` as one observer: traces, a record, statistics.

`RunTools` opens what the options name (a JSON trace file, a record file), builds one observer that
feeds each exit to every tool asked for (none at all: `Machine.run` measures nothing), and after the
run writes the record's end frame and the statistics.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmmio.insn_at import InsnAt
from vmmio.machine import Machine, RunResult, Serviced
from vmmio.record import Recorder
from vmmio.stats import Stats
from vmmio.symbols import SymbolTable
from vmmio.trace import Tracer

__all__ = ["RunTools", "ToolOptions", "fan_out"]

Observer = Callable[[Serviced], None]


def fan_out(observers: list[Observer]) -> Observer | None:
    """One observer calling each of `observers` in order (None when there are none)."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]

    def each(s: Serviced) -> None:
        for observe in observers:
            observe(s)

    return each


@dataclass
class ToolOptions:
    """What the command line asked for."""

    trace: bool = False
    trace_json: str | None = None
    record: str | None = None
    record_meta: dict[str, Any] = field(default_factory=dict)
    stats: bool = False
    stats_plot: str | None = None
    stats_top: int = 15


class RunTools(contextlib.ExitStack):
    """The tools of one run; a context manager that closes their files. OSError if one cannot be opened."""

    def __init__(self, options: ToolOptions, machine: Machine, vcpu: object, image: bytes) -> None:
        super().__init__()
        self.options = options
        where = InsnAt(vcpu, machine.vm.memory, machine.vm.walker)
        observers: list[Observer] = []
        self.recorder: Recorder | None = None
        self.stats: Stats | None = None
        try:
            jsonl: IO[str] | None = None
            if options.trace_json:
                jsonl = self.enter_context(open(options.trace_json, "w"))  # noqa: SIM115
            if options.trace or jsonl is not None:
                observers.append(Tracer(where, sys.stderr if options.trace else None, jsonl))
            if options.record:
                out = self.enter_context(open(options.record, "wb"))  # noqa: SIM115
                self.recorder = Recorder(out, options.record_meta, vcpu)
                observers.append(self.recorder)
            self.plot: IO[bytes] | None = None
            if options.stats_plot:  # opened now: an unwritable path is found before the run, not after
                self.plot = self.enter_context(open(options.stats_plot, "wb"))  # noqa: SIM115
            if options.stats or options.stats_plot:
                self.stats = Stats(machine, where, SymbolTable.from_elf(image))
                observers.append(self.stats)
        except BaseException:
            self.close()
            raise
        self.observe = fan_out(observers)

    def finish(self, result: RunResult, wall_s: float) -> None:
        """End the record; print the statistics (stderr) and write the plot."""
        if self.recorder is not None:
            self.recorder.finish(result)
        if self.stats is None:
            return
        if self.options.stats:
            print(self.stats.report(wall_s, self.options.stats_top), file=sys.stderr)
        if self.plot is not None and self.options.stats_plot:
            from vmmio.plot import plot_timeline

            plot_timeline(self.stats, self.plot, Path(self.options.stats_plot).suffix.lstrip(".").lower())
