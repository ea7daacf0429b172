"""`vmmio run --record` and `vmmio replay`: every exit with the devices' answer, replayed device-free.

The regression test records insntest (every emulated form, ~35,000 exits) once and replays it; a
replay of a record whose device answer was changed must stop at the first exit that differs.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import BACKENDS, vmmio_cmd

from vmmio import guests
from vmmio.abi import RECORD_SIZE, FulfillMmio, MmioExit
from vmmio.cli import EXIT_DIVERGED, EXIT_IMAGE, EXIT_LIMIT, EXIT_OK, main
from vmmio.machine import TESTDEV_MMIO, TESTDEV_SIZE
from vmmio.record import MAGIC, VERSION, Recording, read_recording

HEADER = struct.Struct("<8sHHI")
FRAME = struct.Struct("<II")
ENTRY_DATA = HEADER.size  # FulfillMmio/FulfillInout payload: gpa/port first, then data (docs/abi.md)


def record(tmp_path: Path, name: str, *argv: str, status: int = EXIT_OK) -> Path:
    path = tmp_path / f"{name}.rec"
    assert main(["run", name, "--record", str(path), *argv]) == status
    return path


def frame_offsets(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(tag, offset of the payload, payload length) of each frame, parsed as docs/record.md says."""
    at = HEADER.size + HEADER.unpack_from(data)[3]
    while at < len(data):
        tag, length = FRAME.unpack_from(data, at)
        yield tag, at + FRAME.size, length
        at += FRAME.size + length


def with_answer(path: Path, index: int, data: int, out: Path) -> Path:
    """A copy of the record whose answer to exit `index` (from 0) carries `data` instead."""
    raw = bytearray(path.read_bytes())
    tag, payload, _ = list(frame_offsets(bytes(raw)))[index]
    assert tag == 1
    entry = payload + 8 + RECORD_SIZE
    struct.pack_into("<Q", raw, entry + ENTRY_DATA + 8, data)
    out.write_bytes(bytes(raw))
    return out


@pytest.fixture(scope="module")
def insntest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """insntest, recorded once for the module."""
    return record(tmp_path_factory.mktemp("record"), "insntest")


def test_insntest_replays_exit_for_exit(insntest: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    before = insntest.read_bytes()
    assert main(["replay", str(insntest)]) == EXIT_OK
    assert insntest.read_bytes() == before  # a replay only reads its record
    out, err = capfd.readouterr()
    frames = len(read_recording(insntest.read_bytes()).frames)
    assert frames > 30_000
    assert err.strip() == f"vmmio: replay matched all {frames} exits of {insntest} (ended: exit, status 0)"
    assert out == ""  # no devices: the guest's UART output is not produced again


def test_a_changed_device_answer_is_found(
    insntest: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The first read from the test device answers differently: insntest computes another result,
    and the replay stops at the first exit that is not the recorded one."""
    rec = read_recording(insntest.read_bytes())
    index = next(
        n
        for n, f in enumerate(rec.frames)
        if isinstance(f.exit, MmioExit)
        and not f.exit.is_write
        and TESTDEV_MMIO <= f.exit.gpa < TESTDEV_MMIO + TESTDEV_SIZE
    )
    answer = rec.frames[index].answer
    assert isinstance(answer, FulfillMmio)
    changed = with_answer(insntest, index, answer.data ^ 0xFF, tmp_path / "changed.rec")
    capfd.readouterr()
    assert main(["replay", str(changed)]) == EXIT_DIVERGED
    err = capfd.readouterr().err.strip()
    assert err.startswith("vmmio: replay diverged at exit "), err
    number = int(err.split("exit ")[1].split()[0])
    assert number > index + 1  # found after the changed answer, not before it
    assert "expected " in err and ", seen " in err and "rip 0x" in err


def test_divergence_names_exit_rip_expected_and_seen(tmp_path: Path) -> None:
    """hello polls the UART's LSR until THRE: answering 0 instead makes it poll again, so exit 2 is
    another LSR read where the record has the THR write. Through the installed entry point."""
    rec = record(tmp_path, "hello")
    changed = with_answer(rec, 0, 0x00, tmp_path / "busy.rec")
    done = subprocess.run([*vmmio_cmd(), "replay", str(changed)], capture_output=True, text=True)
    assert done.returncode == EXIT_DIVERGED
    assert done.stderr.strip() == (
        "vmmio: replay diverged at exit 2 (rip 0x100017): expected mmio write 0x48 gpa=0xd0000000 size=1, "
        "seen mmio read gpa=0xd0000005 size=1"
    )
    ok = subprocess.run([*vmmio_cmd(), "replay", str(rec), "hello"], capture_output=True, text=True)
    assert ok.returncode == EXIT_OK and "matched all 203 exits" in ok.stderr


def test_record_format(tmp_path: Path) -> None:
    """Header, metadata, one frame per exit with the ABI's own records, an end frame (docs/record.md)."""
    path = record(tmp_path, "hello", "--ram", "16M")
    data = path.read_bytes()
    magic, version, reserved, meta_len = HEADER.unpack_from(data)
    assert (magic, version, reserved) == (MAGIC, VERSION, 0) == (b"VMMIOREC", 1, 0)
    meta = json.loads(data[HEADER.size : HEADER.size + meta_len])
    image = guests.load("hello")
    assert meta["image"] == {
        "name": "hello",
        "shipped": True,
        "size": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
    }
    assert meta["machine"] == {
        "ram": 16 << 20,
        "load_addr": 0x100000,
        "backend": "unicorn",
        "kind": "simple",
        "append": None,
    }
    assert meta["abi"] == 2
    frames = list(frame_offsets(data))
    assert [tag for tag, _, _ in frames] == [1] * 203 + [2]
    assert {length for tag, _, length in frames if tag == 1} == {8 + 2 * RECORD_SIZE}
    _, at, length = frames[-1]
    assert json.loads(data[at : at + length]) == {"reason": "exit", "status": 0, "exits": 203, "detail": ""}
    rec: Recording = read_recording(data)
    assert rec.frames[0].rip == 0x100017 and rec.frames[-1].answer is None  # the debug exit ends the run


def test_a_run_stopped_by_a_limit_replays_up_to_it(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = record(tmp_path, "hello", "--max-exits", "20", status=EXIT_LIMIT)
    capfd.readouterr()
    assert main(["replay", str(path)]) == EXIT_OK
    assert "matched all 20 exits" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello", "too short for a vmmio record"),
        (b"NOTARECORD" + bytes(40), "not a vmmio record (bad magic)"),
        (HEADER.pack(MAGIC, 9, 0, 0), "record format version 9; this vmmio reads version 1"),
        (HEADER.pack(MAGIC, 1, 0, 2) + b"{}", "recorded with ABI version None"),
    ],
)
def test_unreadable_records_exit_3(
    content: bytes, message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.rec"
    path.write_bytes(content)
    assert main(["replay", str(path)]) == EXIT_IMAGE
    assert message in capfd.readouterr().err


def test_truncated_and_foreign_records(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = record(tmp_path, "hello")
    cut = tmp_path / "cut.rec"
    cut.write_bytes(path.read_bytes()[:-30])
    assert main(["replay", str(cut)]) == EXIT_IMAGE
    assert "runs past the end of the file" in capfd.readouterr().err
    assert main(["replay", str(path), "insntest"]) == EXIT_IMAGE
    assert (
        capfd.readouterr().err.strip()
        == "vmmio: insntest is not the recorded image (its SHA-256 is not the record's)"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_record_and_replay_on_each_backend(
    backend: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = record(tmp_path, "hello", "--backend", backend)
    trace = tmp_path / "replay.jsonl"
    capfd.readouterr()
    assert main(["replay", str(path), "--trace-json", str(trace)]) == EXIT_OK
    assert "matched all 203 exits" in capfd.readouterr().err
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(rows) == 203 and rows[0]["value"] == "0x60"  # answered from the record


def test_damaged_records_never_raise(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Bytes changed anywhere (header, metadata, frames, end): a status and one line, never a traceback."""
    import random

    good = record(tmp_path, "hello").read_bytes()
    rng = random.Random(13)
    statuses: Counter[int] = Counter()
    for n in range(40):
        damaged = bytearray(good)
        for _ in range(rng.choice((1, 1, 3))):
            at = rng.randrange(len(damaged)) if n % 4 else rng.randrange(0x130)  # a quarter in the header
            damaged[at] = rng.randrange(256)
        path = tmp_path / f"damaged{n}.rec"
        path.write_bytes(bytes(damaged))
        status = main(["replay", str(path)])
        err = capfd.readouterr().err.strip()
        assert status in (EXIT_OK, EXIT_DIVERGED, EXIT_IMAGE), err
        assert err.startswith("vmmio: ") and "\n" not in err, err
        statuses[status] += 1
    assert statuses[EXIT_IMAGE] and statuses[EXIT_DIVERGED]  # both kinds of damage were met
