"""The vector state through every layer: the records, the Unicorn backend, the KVM reference, the host
CPU runner's wire format, and a vector move on MMIO through the kernel on Unicorn."""

from __future__ import annotations

import pytest
from oracles.vector_state import pack, unpack

from vmmio.abi import HltExit, MmioExit
from vmmio.backends.unicorn import UnicornBackend, UnicornBackendError
from vmmio.memory import GuestMemory
from vmmio.reference.kvm import KvmVcpu, kvm_usable
from vmmio.vmm.vm import Vm
from vmmio.x86.paging import Walker
from vmmio.x86.state import (
    CR0_SSE,
    CR4_SSE,
    XCR0_AVX512,
    Control,
    CpuState,
    Regs,
    VectorState,
    flat_protected_control,
)


def sample(zmm_bits: int = 512, regs: int = 32) -> VectorState:
    vec = VectorState()
    vec.zmm[:regs] = [((0x0123456789ABCDEF * (n + 1)) << (9 * n % (zmm_bits - 64))) | n for n in range(regs)]
    vec.mm = [0x1111_1111_1111_1111 * (n + 1) for n in range(8)]
    vec.mm_hi = [0xFFFF, 0x4000, 0, 0x7FFF, 0x1234, 0x8000, 0xC000, 1]
    vec.fsw, vec.ftw, vec.mxcsr = 3 << 11, 0xA5, 0x1F81
    return vec


def test_records_copy_and_print() -> None:
    ctl = Control(xcr0=0x7 | XCR0_AVX512)
    assert ctl.copy().xcr0 == 0xE7
    assert Control().xcr0 == 0x7  # what an OS that enabled AVX has
    vec = sample()
    vec.k[3] = 0x55
    copy = vec.copy()
    assert copy == vec and copy.zmm is not vec.zmm and copy.mm_hi is not vec.mm_hi
    text = repr(VectorState())
    assert text == "VectorState(mxcsr=0x1f80)"  # only what is not 0, in hex
    assert "k3=0x55" in repr(vec)


def test_host_runner_wire_format_round_trips() -> None:
    vec = sample()
    vec.k = [1 << n for n in range(8)]
    assert unpack(pack(vec)) == vec
    assert unpack(pack(None)) == VectorState()


def test_unicorn_backend_holds_ymm_mmx_x87_and_mxcsr() -> None:
    memory = GuestMemory()
    memory.add_ram(0, 0x10000)
    backend = UnicornBackend(memory, Walker(memory))
    vec = sample(256, 16)
    vec.ftw = 0xFF ^ 0x24  # the engine keeps valid/empty per register, as the abridged tag word does
    backend.set_vector(vec)
    assert backend.get_vector() == vec
    with pytest.raises(UnicornBackendError, match="AVX-512"):
        backend.set_vector(sample())
    backend.close()


def test_sse_move_from_mmio_through_the_kernel_on_unicorn() -> None:
    """movups xmm3, [0xd000_0010] at CPL 0 in flat protected mode: two 8-byte requests, XMM3 loaded and
    YMM3's upper half kept (legacy SSE), through the real engine's vector registers."""
    vm = Vm(ram_size=1 << 20)
    vm.memory.write(0x1000, bytes.fromhex("0f101d100000d0f4"))  # movups xmm3, [0xd0000010]; hlt
    ctl = flat_protected_control(cr0=1 | CR0_SSE, cr4=CR4_SSE)
    vcpu = vm.create_vcpu(state=CpuState(Regs(rip=0x1000), ctl))
    before = VectorState()
    before.zmm[3] = (1 << 256) - 1
    vcpu.set_vector(before)
    ex = vcpu.run()
    values = {0xD000_0010: 0x0706_0504_0302_0100, 0xD000_0018: 0x0F0E_0D0C_0B0A_0908}
    seen = []
    while isinstance(ex, MmioExit):
        seen.append((ex.gpa, ex.size, ex.is_write))
        ex = vcpu.run(ex.fulfill(values[ex.gpa]))
    assert isinstance(ex, HltExit)
    assert seen == [(0xD000_0010, 8, False), (0xD000_0018, 8, False)]
    assert vcpu.vector.zmm[3] == ((1 << 256) - 1) & ~((1 << 128) - 1) | 0x0F0E0D0C0B0A09080706050403020100


@pytest.mark.skipif(kvm_usable() is not None, reason=f"needs /dev/kvm: {kvm_usable()}")
def test_kvm_reference_holds_the_whole_vector_state_and_xcr0() -> None:
    memory = GuestMemory()
    memory.add_ram(0, 0x10000)
    with KvmVcpu(memory, CpuState()) as vcpu:
        assert vcpu.get_xcr0() & 3 == 3 or vcpu.get_xcr0() == 1  # KVM's reset value is x87 only
        vcpu.set_xcr0(0x7 | XCR0_AVX512)
        assert vcpu.get_xcr0() == 0xE7 and vcpu.get_control().xcr0 == 0xE7
        vec = sample()
        vec.k = [3 << n for n in range(8)]
        vcpu.set_vector(vec)
        assert vcpu.get_vector() == vec
