# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench verify docs fuzz fuzz-atheris corpus guests guests-check clean \
	kvm-unit-tests c-client fuzz-service linux

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vmmio demo

SOURCES := vmmio tests bench guests examples docs fuzz

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_emulate.py
	$(BIN)/python bench/bench_exits.py
	$(BIN)/python bench/bench_backend.py
	$(BIN)/python bench/bench_service.py

# The C client of `vmmio serve` and its example VMM, built into the ignored build/c.
c-client:
	$(MAKE) -C clients/c OUT=$(CURDIR)/build/c

# Hostile input against `vmmio serve`, compared with an in-process reference (docs/transport.md).
FUZZ_COUNT ?= 100000
FUZZ_SEED ?= 0
fuzz-service: $(STAMP)
	$(BIN)/python -m vmmio.service.fuzz --count $(FUZZ_COUNT) --seed $(FUZZ_SEED)

# The long differential campaign: CASES generated cases per oracle test module (host CPU, Unicorn, KVM
# where usable), run on JOBS cores (pytest-xdist; default all) with a progress line; a summary by oracle
# and form, with the KVM oracle's own, in verify-summary.txt; then the real-code decoder sweep and the
# emulation coverage figure over INSNS instructions of the host's binaries.
CASES ?= 50000
INSNS ?= 2000000
JOBS  ?= auto
verify: $(STAMP)
	rm -f verify-log.jsonl; \
	VMMIO_ORACLE_CASES=$(CASES) $(BIN)/python bench/verify_run.py --log verify-log.jsonl --jobs $(JOBS) \
		tests/test_oracle_native.py tests/test_oracle_unicorn.py \
		$(wildcard tests/test_oracle_kvm.py) tests/test_oracle_vector.py; status=$$?; \
	$(BIN)/python bench/verify_summary.py verify-log.jsonl --out verify-summary.txt && \
	$(BIN)/python bench/verify_coverage.py --count $(INSNS) && exit $$status

# The API reference from the docstrings (pdoc, the `docs` extra, in the test venv too), with the
# examples linked from every page: build/docs/index.html.
docs: $(STAMP)
	$(BIN)/python docs/api.py --out build/docs

# Fuzzing that lives in the repo (fuzz/): per target, the count run, failures (each printed with a shrunk
# reproducer), the worst time of one unit and the wall time. Counts, JOBS and SEED are make variables
# (`make fuzz INSNS=1000`); each shard of a target derives its own seed from SEED, so results do not
# depend on JOBS. Target-specific defaults, because `verify` has its own INSNS.
fuzz: DECODER = 1000000
fuzz: ABI = 100000
fuzz: ENTRIES = 100000
fuzz: INSNS = 200000
fuzz: IMAGES = 20000
fuzz: JOBS = 2
fuzz: SEED = 1
fuzz: $(STAMP)
	$(BIN)/python -m fuzz --decoder $(DECODER) --abi $(ABI) --entries $(ENTRIES) --insns $(INSNS) \
		--images $(IMAGES) --jobs $(JOBS) --seed $(SEED)

# Optional coverage-guided fuzzing of the decoder and the ABI with atheris (installed on first use), for
# SECONDS seconds each; findings are printed with the same replay snippets, crash inputs go to build/.
fuzz-atheris: SECONDS = 120
fuzz-atheris: $(STAMP)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install -q atheris
	mkdir -p build/atheris
	$(BIN)/python -m fuzz.atheris_main decoder -max_total_time=$(SECONDS) -artifact_prefix=build/atheris/
	$(BIN)/python -m fuzz.atheris_main abi -max_total_time=$(SECONDS) -artifact_prefix=build/atheris/

# Optional extra real code for the decoder oracles (a Debian kernel image and modules, 32-bit libc);
# without it those parts of the real-code tests skip and say why. Needs root and Debian's apt.
corpus:
	apt-get update -q && apt-get install -y -q --no-install-recommends linux-image-amd64 libc6-i386

# kvm-unit-tests (GPLv2, upstream sources in ../shared/peer, never copied into the project), built in
# the ignored build/ folder; tests/test_peer_kvm_unit_tests.py runs x86/emulator.flat on both backends.
PEER ?= $(firstword $(wildcard ../shared/peer /work/shared/peer))
KUT := build/kvm-unit-tests
kvm-unit-tests: $(KUT)/x86/emulator.flat

$(KUT)/x86/emulator.flat:
	@test -n "$(PEER)" || { echo "no ../shared/peer with the kvm-unit-tests sources"; exit 1; }
	rm -rf $(KUT) && mkdir -p build && tar xJf $(PEER)/kvm-unit-tests-*.tar.xz -C build
	cd $(KUT) && ./configure --arch=x86_64 > /dev/null && $(MAKE) -s x86/emulator.flat

# Rebuild the shipped guest images and the test guests from guests/ (needs GNU as and ld), or check that
# the committed ones match the sources.
guests:
	$(PYTHON) guests/build.py

# The Linux guest: Debian's cloud kernel and busybox-static (apt-get download into build/cache), an
# initramfs whose /init exercises the devices and reboots. Then: vmmio run --kernel ... --initrd ...
linux: $(STAMP)
	$(BIN)/python guests/linux/linux_guest.py

guests-check:
	$(PYTHON) guests/build.py --check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
