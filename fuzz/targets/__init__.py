"""The fuzz targets, one module each, in the order `make fuzz` runs them."""

from __future__ import annotations

from typing import Any

from fuzz.core import Target
from fuzz.targets import abi, decoder, entries, images, insns

TARGETS: dict[str, Target[Any]] = {
    t.name: t for t in (decoder.TARGET, abi.TARGET, entries.TARGET, insns.TARGET, images.TARGET)
}
