"""The scripted walkthrough (`python -m vmmio.demo`) shows the exits the kernel really produces."""

from __future__ import annotations

import pytest

from vmmio import demo


def test_walkthrough_output(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main()
    out = capsys.readouterr().out
    steps = out.split("\n[")
    assert len(steps) == len(demo.STEPS) + 1
    rmw = next(s for s in steps if s.startswith("3]"))
    assert "gpa=0xc0000000 size=4 read" in rmw and "gpa=0xc0000000 size=4 write" in rmw
    rep = next(s for s in steps if s.startswith("4]"))
    assert rep.count("size=8 read") == 3 and "rcx=0x0" in rep
    crossing = next(s for s in steps if s.startswith("6]"))
    assert [line.split()[2] for line in crossing.splitlines() if "MMIO" in line] == [
        "gpa=0xc0000ffd",
        "gpa=0xc0000ffe",
        "gpa=0xc0001000",
        "gpa=0xc0001004",
    ]
    assert "reason=NOT_EMULATED" in out
    assert "injected vector 13 error code 0" in out
