"""The KVM oracle: vmmio's generated cases (tests/oracles/gen.py) run under /dev/kvm with Linux's emulator.

`kvm_run` runs a case in one reused long-mode KVM guest with the window as an MMIO hole; `deviations`
holds the documented behaviours of Linux's emulator and the deviations from the CPU this oracle found;
`judge` compares KVM with vmmio case by case (the host CPU oracle as referee), and `run_campaign` judges
N cases and returns a summary. The test is tests/test_oracle_kvm.py.
"""
