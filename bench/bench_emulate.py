"""Per-instruction cost of decoding and of emulating an MMIO access, against references in the same run.

Every row decodes the same bytes and reads the same eight fields of the result: the length, the memory
operand's base, index, scale, displacement and segment, the operand size and the instruction's identity
(vmmio: length, mem.base/index/scale/disp/seg, width, mnemonic; iced-x86: len, memory_base/index/
index_scale/displacement/segment, memory_size, code; capstone: size, the operands' mem fields, size, id).
Times are CPU-time medians over repeated batches (per form, then the median over forms); the load
average is printed and ratios are to iced-x86 in the same run.

  - uncached decode (vmmio.x86.decode.decode) over the emulated MMIO forms (goal: no slower than iced),
  - cached decode (decode_cached, the hot-path call; goal: <= 0.1 us),
  - iced-x86's Python API, capstone with detail on,
  - the floor of any pure-Python decoder returning vmmio's record: the record of each form built from
    its decoded fields (the decoder's own builder: slots filled, bytes sliced) and the eight fields read,
    with no decoding at all; what the uncached row costs above it is the decoding itself,
  - a full MMIO round trip on the scripted backend: fault -> MmioExit -> fulfill -> completion, the same
    instruction each time, as a driver's status poll (goal: <= 3 us).

Usage: .venv/bin/python bench/bench_emulate.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import MMIO, Guest

from vmmio.abi import FulfillMmio, HltExit, MmioExit
from vmmio.backends.base import NpfEvent
from vmmio.x86.decode import decode, decode_cached
from vmmio.x86.insn import DecodeError, Insn

# One representative encoding per emulated form (64-bit mode), as a guest driver would issue them.
FORMS = [
    "8b4308",  # mov eax, [rbx+8]
    "488b03",  # mov rax, [rbx]
    "8a03",  # mov al, [rbx]
    "668903",  # mov [rbx], ax
    "48890425" + "00100000",  # mov [0x1000], rax
    "c705" + "00100000" + "78563412",  # mov dword [rip+0x1000], imm32
    "c6037f",  # mov byte [rbx], 0x7f
    "a10800004000000000",  # mov eax, [moffs64]
    "0fb607",  # movzx eax, byte [rdi]
    "0fbf03",  # movsx eax, word [rbx]
    "486303",  # movsxd rax, [rbx]
    "f3a5",  # rep movsd
    "f348ab",  # rep stosq
    "0103",  # add [rbx], eax
    "66830f01",  # or word [rdi], 1
    "812b78563412",  # sub dword [rbx], imm32
    "3b03",  # cmp eax, [rbx]
    "f60380",  # test byte [rbx], 0x80
    "0fba2303",  # bt dword [rbx], 3
    "ff33",  # push qword [rbx]
    "8f03",  # pop qword [rbx]
    "0fae3b",  # clflush [rbx]
    "46894ca310",  # mov [rbx+r12*4+0x10], r9d
]
CODES = [bytes.fromhex(f) + bytes(15) for f in FORMS]  # as fetched: a 15-byte window


def per_call(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Median CPU seconds per call of `fn` over `repeat` batches of `calls` calls."""
    samples = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - t0) / calls)
    return statistics.median(samples)


def over_forms(make: Callable[[bytes], Callable[[], object]], calls: int, repeat: int) -> float:
    """Median over forms of the per-call median."""
    return statistics.median(per_call(make(code), calls, repeat) for code in CODES)


def _reader(decoder: Callable[[bytes, int], Insn | DecodeError], code: bytes) -> Callable[[], object]:
    """Decode `code` with `decoder` and read the eight fields, in one function as the iced row does."""

    def run() -> object:
        insn = decoder(code, 64)
        assert type(insn) is Insn
        mem = insn.mem
        if mem is None:  # string instructions: implicit operands
            return (insn.length, insn.width, insn.mnemonic)
        return (insn.length, mem.base, mem.index, mem.scale, mem.disp, mem.seg, insn.width, insn.mnemonic)

    return run


def vmmio_uncached(code: bytes) -> Callable[[], object]:
    return _reader(decode, code)


def vmmio_cached(code: bytes) -> Callable[[], object]:
    decode_cached(code, 64)
    return _reader(decode_cached, code)


def vmmio_cached_call(code: bytes) -> Callable[[], object]:
    decode_cached(code, 64)
    return lambda: decode_cached(code, 64)


def record_only(code: bytes) -> Callable[[], object]:
    """The record of `code` built again from its fields as `decode` builds it, without decoding."""
    from vmmio.x86 import decode as module

    done = decode(code, 64)
    assert type(done) is Insn
    (
        n,
        _,
        enc,
        opmap,
        op,
        mn,
        osz,
        width,
        asz,
        modrm,
        reg,
        rm,
        mem,
        imm,
        isz,
        rex,
        rep,
        lock,
        o66,
        seg,
        vl,
        _,
    ) = (getattr(done, name) for name in Insn.__slots__)
    builder = module._InsnBuilder

    def rebuild(window: bytes, mode: int) -> Insn:
        insn = builder()
        insn.length = n
        insn.mode = mode
        insn.encoding = enc
        insn.opmap = opmap
        insn.opcode = op
        insn.mnemonic = mn
        insn.opsize = osz
        insn.width = width
        insn.addr_size = asz
        insn.modrm = modrm
        insn.reg = reg
        insn.rm = rm
        insn.mem = mem
        insn.imm = imm
        insn.imm_size = isz
        insn.rex = rex
        insn.rep = rep
        insn.lock = lock
        insn.opsize_prefix = o66
        insn.seg_override = seg
        insn.vex_l = vl
        insn.raw = window[:n]
        insn.__class__ = Insn
        return insn  # type: ignore[no-any-return]

    assert rebuild(code, 64) == done
    return _reader(rebuild, code)


def iced(code: bytes) -> Callable[[], object]:
    from iced_x86 import Decoder

    def run() -> object:
        insn = Decoder(64, code).decode()
        return (
            insn.len,
            insn.memory_base,
            insn.memory_index,
            insn.memory_index_scale,
            insn.memory_displacement,
            insn.memory_segment,
            insn.memory_size,
            insn.code,
        )

    return run


def capstone(code: bytes) -> Callable[[], object]:
    import capstone as cs

    md = cs.Cs(cs.CS_ARCH_X86, cs.CS_MODE_64)
    md.detail = True

    def run() -> object:
        insn = next(md.disasm(code, 0x1000, 1))
        ops = [
            (op.type, op.size, op.mem.base, op.mem.index, op.mem.scale, op.mem.disp) for op in insn.operands
        ]
        return insn.size, insn.id, ops

    return run


def mmio_round_trip(calls: int, repeat: int) -> float:
    """Seconds per `mov eax, [rbx]` from MMIO: fault, exit, fulfill, completion."""
    g = Guest(bytes.fromhex("8b03") + bytes(13), {3: MMIO})
    vcpu, backend, regs = g.vcpu, g.backend, g.backend.regs
    event = NpfEvent(MMIO)
    fulfill = FulfillMmio(MMIO, 4, False, 0x1234)

    def once() -> None:
        regs.rip = 0x1000
        backend.events.append(event)
        ex = vcpu.run()
        assert type(ex) is MmioExit
        assert type(vcpu.run(fulfill)) is HltExit

    once()
    return per_call(once, calls, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    r = args.repeat
    load = os.getloadavg()[0]
    rows = [
        ("vmmio decode, uncached + 8 fields", over_forms(vmmio_uncached, 2000, r)),
        ("vmmio decode, cached + 8 fields", over_forms(vmmio_cached, 20000, r)),
        ("vmmio decode, cached (the call alone)", over_forms(vmmio_cached_call, 20000, r)),
        ("iced-x86 decode + 8 fields", over_forms(iced, 2000, r)),
        ("capstone decode + operand details", over_forms(capstone, 500, r)),
        ("floor: vmmio record + 8 fields, no decoding", over_forms(record_only, 2000, r)),
        ("vmmio MMIO mov round trip (scripted backend)", mmio_round_trip(5000, r)),
    ]
    iced_t = rows[3][1]
    print(f"{'measurement (median per instruction)':48} {'us':>8} {'vs iced-x86':>12}")
    for name, t in rows:
        print(f"{name:48} {t * 1e6:8.3f} {t / iced_t:11.2f}x")
    print(f"\n{len(FORMS)} forms; Python {sys.version.split()[0]}; repeat={r}; CPU-time medians")
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
