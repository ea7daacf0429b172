"""The decoder on hostile bytes in every mode: it must never raise, and what it returns must be consistent.

Invariants, for every input: `decode` returns an `Insn` or a `DecodeError` and nothing else. An Insn is
1..15 bytes, within the input, `raw` is exactly those bytes, and decoding them alone, or followed by
other bytes, gives an equal record; every strict prefix of it is TRUNCATED. A DecodeError's length is
within the input and 15 bytes (TRUNCATED: the whole input, TOO_LONG: 15), and more bytes after a
non-truncated input change nothing. Nothing past byte 15 matters: the CPU never reads further.
`decode_cached` agrees with `decode` for bytes, bytearray and memoryview. Sampled cases compare the
length with iced-x86 where both decode the instruction; the documented differences of
tests/test_decode_oracles.py are all about inputs one side rejects, so comparing only instructions both
accept needs no exceptions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from time import perf_counter

from fuzz import x86gen
from fuzz.core import FIXED, Stats, Target, Violation
from vmmio.x86.decode import decode, decode_cached
from vmmio.x86.insn import MAX_INSN_LEN, DecodeError, DecodeStatus, Insn

MODES = (16, 32, 64)
ICED_EVERY = 20  # one case in this many is compared with iced-x86

try:
    from iced_x86 import Code, Decoder, DecoderError

    HAVE_ICED = True
except ImportError:  # pragma: no cover -- iced-x86 comes with the test extras
    HAVE_ICED = False


@dataclass(frozen=True)
class Case:
    code: bytes
    mode: int = field(metadata=FIXED)
    junk: bytes = b"\x0f"  # appended to check that bytes past the end change nothing
    iced: bool = False


def generate(rng: random.Random) -> Case:
    mode = rng.choice(MODES)
    return Case(
        x86gen.instruction(rng, mode),
        mode,
        rng.randbytes(rng.randint(1, 16)),
        HAVE_ICED and rng.randrange(ICED_EVERY) == 0,
    )


def _iced_length(code: bytes, mode: int) -> int | None:
    dec = Decoder(mode, code)
    ins = dec.decode()
    if dec.last_error != DecoderError.NONE or ins.code == Code.INVALID:
        return None
    return int(ins.len)


def _check_insn(code: bytes, mode: int, insn: Insn, case: Case, stats: Stats) -> None:
    n = insn.length
    if not 1 <= n <= MAX_INSN_LEN or n > len(code):
        raise Violation("insn-length", f"length {n} for {len(code)} input bytes")
    if insn.raw != code[:n] or type(insn.raw) is not bytes:
        raise Violation("insn-raw", f"raw {insn.raw!r} is not the first {n} input bytes")
    if insn.mode != mode:
        raise Violation("insn-mode", f"mode {insn.mode}, decoded for {mode}")
    alone = decode(code[:n], mode)
    if alone != insn:
        raise Violation("insn-alone", f"its own {n} bytes decode to {alone}, not {insn}")
    longer = decode(code[:n] + case.junk, mode)
    if longer != insn:
        raise Violation("insn-junk", f"followed by {case.junk.hex()} it decodes to {longer}")
    for k in range(n):
        part = decode(code[:k], mode)
        if type(part) is not DecodeError or part.status is not DecodeStatus.TRUNCATED or part.length != k:
            raise Violation("prefix-not-truncated", f"its first {k} bytes decode to {part}")
    if case.iced:
        theirs = _iced_length(code, mode)
        if theirs is not None:
            stats.notes["iced-compared"] += 1
            if theirs != n:
                raise Violation("iced-length", f"length {n} ({insn.mnemonic}), iced-x86 says {theirs}")


def _check_error(code: bytes, mode: int, err: DecodeError, case: Case) -> None:
    status, n = err.status, err.length
    if type(status) is not DecodeStatus or type(n) is not int:
        raise Violation("error-fields", repr(err))
    if status is DecodeStatus.TRUNCATED:
        if n != len(code) or n >= MAX_INSN_LEN:
            raise Violation("truncated-length", f"TRUNCATED length {n} for {len(code)} input bytes")
        return
    if status is DecodeStatus.TOO_LONG and (n != MAX_INSN_LEN or len(code) < MAX_INSN_LEN):
        raise Violation("too-long-length", f"TOO_LONG length {n} for {len(code)} input bytes")
    if not 0 < n <= min(len(code), MAX_INSN_LEN):
        raise Violation("error-length", f"{status.name} length {n} for {len(code)} input bytes")
    longer = decode(code + case.junk, mode)
    if longer != err:
        raise Violation("error-junk", f"followed by {case.junk.hex()} it decodes to {longer}, not {err}")


def check(case: Case, stats: Stats) -> int:
    code, mode = case.code, case.mode
    start = perf_counter()
    result = decode(code, mode)
    stats.time(perf_counter() - start)
    if type(result) is not Insn and type(result) is not DecodeError:
        raise Violation("result-type", f"decode returned {type(result).__name__}: {result!r}")
    wide = code if len(code) > MAX_INSN_LEN else code + case.junk
    if len(wide) > MAX_INSN_LEN:
        whole, window = decode(wide, mode), decode(wide[:MAX_INSN_LEN], mode)
        if whole != window:
            raise Violation("beyond-15", f"{wide.hex()} decodes to {whole}, its first 15 bytes to {window}")
    if isinstance(result, Insn):
        _check_insn(code, mode, result, case, stats)
        stats.notes["insn"] += 1
    else:
        _check_error(code, mode, result, case)
        stats.notes[result.status.name.lower()] += 1
    for buf in (code, bytearray(code), memoryview(code)):
        cached = decode_cached(buf, mode)
        if cached != result:
            raise Violation("cached", f"decode_cached({type(buf).__name__}) gives {cached}, decode {result}")
    return 1


TARGET = Target("decoder", "input", 1_000_000, 50_000, generate, check, __name__)
