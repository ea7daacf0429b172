"""The same guest and device on the KVM reference: Linux's own instruction emulator produces the exits.

`Machine.vcpu(image, "kvm")` gives a vCPU with the same `run(entry) -> exit` boundary, so the device
model and the run loop do not change. Where /dev/kvm cannot run a vCPU, this says why and exits 0.
"""

from __future__ import annotations

import sys

from register_device import main

from vmmio.reference.kvm import kvm_usable

if __name__ == "__main__":
    why = kvm_usable()
    if why is not None:
        print(f"KVM reference unavailable here: {why}")
        sys.exit(0)
    sys.exit(main("kvm"))
