"""In-repo fuzzing of vmmio's hostile-input surfaces: `make fuzz` (or `python -m fuzz`).

Five targets, one module each under `fuzz.targets`: the decoder, the ABI records, the entry protocol,
whole instructions through `Vcpu.run` in every mode, and image loading. Each generates structured
cases from a seeded RNG, checks invariants that must hold for every input, and on a violation shrinks
the case and prints a Python snippet that replays it. `fuzz.runner` spreads shards of cases over
processes and prints the summary; `fuzz.known` lists vmmio bugs found here and not fixed yet, so they
stay visible without failing the run.
"""
