"""The lowest level: a Vm, a vCPU on the default backend, and a loop that answers its requests by hand."""

from vmmio import CpuState, InoutExit, MmioExit, Regs, Vm, flat_protected_control

DEVICE = 0xD000_0000  # guest-physical address of a two-register device: nothing is mapped there
GUEST = bytes.fromhex(
    "a1000000d0"  # mov eax, [0xd0000000]    read register 0
    "83c001"  # add eax, 1
    "a3040000d0"  # mov [0xd0000004], eax    write register 1
    "e6f4"  # out 0xf4, al               a port write: the guest says it is done
    "f4"  # hlt
)

vm = Vm(ram_size=1 << 20)  # guest RAM, owned by the Vm; the backend maps it without copying
vm.memory.write(0x1000, GUEST)
vcpu = vm.create_vcpu(state=CpuState(Regs(rip=0x1000), flat_protected_control()))

registers = {0: 41, 4: 0}  # the device model: offset -> value
entry = None
while True:
    ex = vcpu.run(entry)  # the only way through the boundary
    print(ex)
    if isinstance(ex, MmioExit) and ex.is_write:
        registers[ex.gpa - DEVICE] = ex.data
        entry = ex.fulfill()
    elif isinstance(ex, MmioExit):
        entry = ex.fulfill(registers[ex.gpa - DEVICE])
    elif isinstance(ex, InoutExit) and ex.port == 0xF4:
        break  # leaving the OUT unanswered: the run is over
    else:
        raise SystemExit(f"unexpected exit {ex}")
print(f"register 1 = {registers[4]}, eax = {vcpu.regs.rax:#x}")
