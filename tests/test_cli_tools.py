"""Finding things: `vmmio guests`, `--version`, `python -m vmmio`, `vmmio demo`, the licence, the
changelog and the API reference (`make docs`)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from test_cli import vmmio_cmd

from vmmio import guests
from vmmio.cli import GUEST_SUMMARIES

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_guests_lists_every_shipped_guest() -> None:
    done = subprocess.run([*vmmio_cmd(), "guests"], capture_output=True, text=True)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert set(GUEST_SUMMARIES) == set(guests.NAMES)
    for name, line in zip(guests.NAMES, lines, strict=False):
        size = guests.image_path(name).stat().st_size
        assert line.split()[:3] == [name, str(size), "bytes"] and GUEST_SUMMARIES[name] in line
    assert lines[-1].startswith("run one with: vmmio run NAME")


@pytest.mark.parametrize("how", ["entry-point", "python -m vmmio"])
def test_version(how: str) -> None:
    cmd = vmmio_cmd() if how == "entry-point" else [sys.executable, "-m", "vmmio"]
    done = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, f"vmmio {VERSION}")


def test_python_m_vmmio_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "vmmio", "run", "hello"], capture_output=True, text=True)
    assert done.returncode == 0 and "Hello from vmmio!" in done.stdout


def test_demo_shows_the_walkthrough_then_hello() -> None:
    done = subprocess.run([*vmmio_cmd(), "demo"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    walkthrough, _, hello = out.partition("== the hello guest, run by Machine on the unicorn backend ==")
    assert (
        "[1] read a device register" in walkthrough and "-> MMIO  gpa=0xc0000008 size=4 read" in walkthrough
    )
    assert "reason=NOT_EMULATED" in walkthrough
    assert hello.lstrip().startswith("Hello from vmmio!")


def test_make_demo_runs_vmmio_demo() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(BIN\)/vmmio demo$", makefile, re.M)
    assert re.search(r"^docs: .*\n\t\$\(BIN\)/python docs/api.py --out build/docs$", makefile, re.M)


def test_licence_is_the_mit_licence_pyproject_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "MIT"
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the vmmio authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_changelog_has_an_entry_for_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{VERSION}]" in text
    for tool in ("vmmio decode", "--trace-json", "vmmio replay", "--stats", "vmmio guests", "make docs"):
        assert tool in text, tool


def _api_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vmmio_docs_api", ROOT / "docs" / "api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_links_the_examples(tmp_path: Path) -> None:
    """`make docs` (a part of it: two modules), with every example linked from the pages."""
    pytest.importorskip("pdoc", reason="the docs extra (pip install -e '.[docs]') is not installed")
    api = _api_builder()
    pages = api.build(tmp_path, ["vmmio", "vmmio.record"])
    names = {p.relative_to(tmp_path).as_posix() for p in pages}
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    assert examples and {f"examples/{e}.html" for e in examples} <= names
    assert {"vmmio.html", "vmmio/record.html"} <= names
    record_page = (tmp_path / "vmmio" / "record.html").read_text()
    assert "Record a run&#39;s exits" in record_page or "Record a run's exits" in record_page
    for example in examples:
        assert f'href="../examples/{example}.html"' in record_page
        assert f'href="examples/{example}.html"' in (tmp_path / "vmmio.html").read_text()
    assert "vmmio.record" in api.modules() and not any(m.endswith("__main__") for m in api.modules())
