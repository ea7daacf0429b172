"""What the Unicorn backend's primitives cost: the exit cycle, register batches and control reads.

Rows: an MMIO-read exit plus re-entry past the instruction (with and without reading the control state,
as the kernel does on each exit), an OUT exit plus re-entry, get_regs / set_regs (all, RIP only),
get_control when unchanged and when rebuilt, against Unicorn's own Python binding per register.
Usage: .venv/bin/python bench/bench_backend.py [--count N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench_exits import assemble
from unicorn import x86_const as ux
from unicorn.unicorn_const import UC_ARCH_X86, UC_MODE_64
from unicorn.unicorn_py3.unicorn import Uc

from vmmio.backends.base import IoEvent, NpfEvent
from vmmio.backends.unicorn import UnicornBackend
from vmmio.machine import TESTDEV_MMIO, Machine
from vmmio.x86.state import DIRTY_ALL, DIRTY_RIP


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20000, help="iterations per row")
    n = parser.parse_args().count
    code = assemble(f"1: mov eax, [{TESTDEV_MMIO}]\njmp 1b\n2: out 0x80, al\njmp 2b\n")
    m = Machine()
    image = m.load(code)
    vcpu = m.vm.create_vcpu("unicorn", state=m.entry_state(image))
    backend = vcpu.backend
    assert isinstance(backend, UnicornBackend)
    mov_len, out_at = 7, code.index(b"\xe6\x80")

    def cycle(start: int, length: int, event: type, kernel_like: bool) -> float:
        regs = backend.get_regs()
        regs.rip = start
        backend.set_regs(regs, DIRTY_RIP)
        t = time.perf_counter()
        for _ in range(n):
            assert type(backend.run()) is event
            regs = backend.get_regs()
            if kernel_like:
                backend.get_control()
            regs.rip += length
            backend.set_regs(regs, DIRTY_RIP)
        return float(n / (time.perf_counter() - t))

    npf = cycle(image.entry, mov_len, NpfEvent, False)
    npf_kernel = cycle(image.entry, mov_len, NpfEvent, True)
    io = cycle(image.entry + out_at, 2, IoEvent, False)
    regs = backend.get_regs()
    get_us = per_call_us(backend.get_regs, n)
    set_all_us = per_call_us(lambda: backend.set_regs(regs, DIRTY_ALL), n)
    set_rip_us = per_call_us(lambda: backend.set_regs(regs, DIRTY_RIP), n)

    def control_unchanged() -> None:
        backend._ctl = None  # what run() does: re-read, reuse the Control if the state is unchanged
        backend.get_control()

    def control_rebuilt() -> None:
        backend._forget_control()
        backend.get_control()

    ctl_same_us = per_call_us(control_unchanged, n)
    ctl_new_us = per_call_us(control_rebuilt, n)
    binding = Uc(UC_ARCH_X86, UC_MODE_64)
    names = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", *(f"R{n}" for n in range(8, 16)))
    ids = [getattr(ux, f"UC_X86_REG_{name}") for name in names]
    binding_us = per_call_us(lambda: [binding.reg_read(r) for r in ids], n // 10) / 16
    print(f"MMIO-read exit + re-entry          {npf:10,.0f}/s")
    print(f"  ... with get_control             {npf_kernel:10,.0f}/s")
    print(f"OUT exit + re-entry                {io:10,.0f}/s")
    print(f"get_regs (18 registers, one batch) {get_us:10.2f} us")
    print(f"set_regs all / RIP only            {set_all_us:10.2f} us / {set_rip_us:.2f} us")
    print(f"get_control unchanged / rebuilt    {ctl_same_us:10.2f} us / {ctl_new_us:.2f} us")
    print(f"Python binding reg_read            {binding_us:10.2f} us per register")


if __name__ == "__main__":
    main()
