"""The kernel: Vm, Vcpu, the emulation state machine, guest address translation."""
