"""A plot of exits over time per device (`vmmio run --stats-plot FILE`), drawn with matplotlib.

matplotlib is an optional extra (`pip install 'vmmio[plot]'`), never a runtime dependency: it is
imported here, on use, and its absence is reported with the command that installs it.
"""

from __future__ import annotations

from typing import IO

from vmmio.stats import Stats

__all__ = ["FORMATS", "INSTALL_HINT", "PlotUnavailable", "missing", "plot_timeline"]

INSTALL_HINT = "pip install 'vmmio[plot]'"
FORMATS = ("png", "svg", "pdf")
BINS = 100


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_timeline(stats: Stats, out: IO[bytes], fmt: str = "png", title: str = "") -> None:
    """Exits per second over the run, a line per device, written to `out` as `fmt` (png, svg, pdf...)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(f"plots need matplotlib, an optional extra: {INSTALL_HINT}") from None
    end = max((times[-1] for times in stats.timeline.values() if len(times)), default=0) / 1e9
    width = max(end, 1e-6) / BINS
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    try:
        for device, times in sorted(stats.timeline.items(), key=lambda kv: -len(kv[1])):
            seconds = [t / 1e9 for t in times]
            ax.hist(
                seconds,
                bins=BINS,
                range=(0, width * BINS),
                weights=[1 / width] * len(seconds),
                histtype="step",
                label=f"{device} ({len(seconds)})",
            )
        ax.set_xlabel("time since the run started (s)")
        ax.set_ylabel("exits per second")
        ax.set_title(title or f"{stats.total.count} exits over time, by device")
        ax.legend(fontsize="small")
        fig.savefig(out, format=fmt)
    finally:
        plt.close(fig)


def missing() -> str | None:
    """Why plots cannot be drawn here (matplotlib absent, with the command that installs it), or None."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return f"plots need matplotlib, an optional extra: {INSTALL_HINT}"
    return None
