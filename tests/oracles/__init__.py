"""Differential oracles for vmmio's emulated forms.

`gen` draws instructions of every emulated form together with a register, flag and memory state that
puts their memory operand inside the MMIO window; `vmmio_run`, `unicorn_run` and `native_run` execute a
case on vmmio (scripted backend, operand in MMIO), raw Unicorn and the host CPU; `outcome` compares
what they report and checks vmmio's MMIO requests; `drive` holds the shared per-case check and budgets;
`known` lists where Unicorn is wrong (host-verified) and is kept out of the comparison. The oracle
tests are tests/test_oracle_unicorn.py and tests/test_oracle_native.py.
"""
