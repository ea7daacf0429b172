"""Page walks under KVM: the same page tables and control state give the same fault and the same GPA.

Each trial builds page tables in guest RAM with test_paging's `Tables`, walks them with vmmio's
`Walker`, then runs a small guest on KVM (tests/paging_kvm_util.py) that performs the same access
through the same tables, from ring 0 or from ring 3 (reached by IRETQ; #PF runs on a TSS IST stack in
ring 0). Compared: fault or not; for a fault the vector, error code and CR2 (the guest's #PF handler
reports them); for a data access the GPA of the MMIO exit (the translation ends at the test device);
for a fetch the physical address of the code that ran; and every entry on the path afterwards, so the
accessed/dirty bits KVM set (or did not) must be the ones vmmio's walk sets.

- `test_random_walks_agree_with_kvm`: random tables (P/RW/US/NX/A/D at every level, reserved and
  ignored bits, 4 KiB/2 MiB pages, 1 GiB where KVM offers them), CR0.WP, EFER.NXE, CPL 0 or 3,
  read/write/fetch; SMEP/SMAP only if KVM's guest CPUID has them.
- `test_hand_computed_rows_agree_with_kvm`: test_paging's MAPS and FAULTS rows under KVM, where its
  guest CPU has the features a row needs; also checked against the row's own expectation.

Paging modes: whatever KVM runs (`mode_problem` probes each). On the PVM ("pagetable-based VM")
software KVM this was written on, only 4-level paging runs: KVM_SET_SREGS rejects CR4.LA57 (no LA57 in
its CPUID), and for PAE or 32-bit paging it keeps CR0.PG clear (a guest setting PG itself gets #GP).
Its guest CPUID also lacks SMEP, SMAP, PKU and 1-GByte pages. MAXPHYADDR is taken from its CPUID.

Where KVM and vmmio differ, the SDM decides. The documented exceptions below are KVM's; every other
difference fails the test. vmmio has shown no error against this KVM, so there is no xfail here.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from vmmio.reference.kvm import kvm_usable

if platform.machine() != "x86_64":
    pytest.skip("KVM page-walk cross-check is x86-64 only", allow_module_level=True)
_WHY_NOT = kvm_usable()
if _WHY_NOT is not None:
    pytest.skip(f"/dev/kvm not usable: {_WHY_NOT}", allow_module_level=True)

from paging_kvm_util import (  # noqa: E402
    KvmOutcome,
    guest_cpu,
    have_assembler,
    landing_code,
    map_system,
    run_access,
    write_system,
)

if not have_assembler():
    pytest.skip("needs GNU as and objcopy to build the guests", allow_module_level=True)

from test_paging import (  # noqa: E402
    FAULTS,
    G1,
    K4,
    LAYOUT,
    M2,
    MAPS,
    NX,
    OFFSET,
    PA,
    PS,
    RAM_SIZE,
    RW,
    US,
    A,
    D,
    Fault,
    I,
    P,
    Tables,
    U,
    W,
    control,
    setup,
)

from vmmio.machine import TESTDEV_MMIO  # noqa: E402
from vmmio.vmm.vm import Vm  # noqa: E402
from vmmio.x86.faults import PFEC_P, PFEC_RSVD, GuestFault  # noqa: E402
from vmmio.x86.paging import (  # noqa: E402
    TranslationError,
    Updates,
    Walker,
    apply_updates,
)
from vmmio.x86.state import CR4_PKE, CR4_SMAP, CR4_SMEP, Control  # noqa: E402

CPU = guest_cpu()
# Where fetches land, by page size (RAM: guest code there reports where it runs).
LANDING = {K4: 0x40_0000, M2: 0x60_0000, G1: 0x80_0000}
RANDOM_CASES = 1500  # 4-level; about 3 ms each on the PVM host


def bits_of(kind: str) -> int:
    return 64 if kind in ("4l", "5l") else 32


# -- one trial -------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One access through tables in a Vm's RAM: the walk vmmio does and the run KVM does."""

    vm: Vm
    kind: str
    path: list[int]  # the entries on the path of `la`, root first
    esize: int
    ctl: Control
    la: int
    access: str  # read, write, fetch
    cpl: int
    ac: bool


@dataclass
class Result:
    ours: KvmOutcome  # ("ok", gpa), ("ok", "fetched from MMIO", la), ("fault", 14, ec, cr2), ("abort", why)
    theirs: KvmOutcome  # the same shape when KVM did one of those, else what run_access reported
    before: list[int]  # the path's entries before the access
    ours_after: list[int]
    theirs_after: list[int]

    @property
    def agree(self) -> bool:
        return self.ours == self.theirs and self.ours_after == self.theirs_after


def pfec(access: str, cpl: int) -> int:
    return {"read": 0, "write": W, "fetch": I}[access] | (U if cpl == 3 else 0)


def vmmio_walk(t: Trial, maxphyaddr: int) -> tuple[KvmOutcome, Updates]:
    """vmmio's answer for the trial's access, in the form KVM's are put in, with the A/D updates."""
    try:
        gpa, updates = Walker(t.vm.memory, maxphyaddr).walk(t.ctl, t.la, pfec(t.access, t.cpl), t.ac)
    except GuestFault as fault:
        return ("fault", fault.vector, fault.error_code, fault.cr2), []
    except TranslationError as abort:
        return ("abort", str(abort)), []
    if t.access == "fetch" and t.vm.memory.ram_at(gpa, 1) is None:
        return ("ok", "fetched from MMIO", t.la), updates
    return ("ok", gpa), updates


def run_trial(t: Trial) -> Result:
    """Walk with vmmio (A/D updates applied, read back, undone), then run the access on KVM."""
    mem = t.vm.memory
    before = [mem.read_int(slot, t.esize) for slot in t.path]
    ours, updates = vmmio_walk(t, CPU.maxphyaddr)
    apply_updates(updates)
    ours_after = [mem.read_int(slot, t.esize) for slot in t.path]
    for slot, value in zip(t.path, before, strict=True):
        mem.write_int(slot, t.esize, value)
    raw = run_access(mem, t.ctl, bits_of(t.kind), t.la, t.access, t.cpl, t.ac)
    theirs = raw
    data_ok = t.access != "fetch" and raw[0] == "mmio" and raw[2:] == (4, t.access == "write")
    if data_ok or (t.access == "fetch" and raw[0] == "landed"):
        theirs = ("ok", raw[1])
    elif t.access == "fetch" and raw == ("inst_emul", t.la, "FETCH_FAILED"):
        theirs = ("ok", "fetched from MMIO", t.la)  # code in MMIO: Linux's emulator cannot fetch it
    return Result(ours, theirs, before, ours_after, [mem.read_int(slot, t.esize) for slot in t.path])


# -- documented exceptions (KVM's, by the SDM) -------------------------------------------------------


def pvm_slot_256(t: Trial, r: Result) -> bool:
    """A user-mode access in PML4 slot 256 faults as not present, whatever the tables say.

    The PVM KVM raises #PF with P=0 for every CPL-3 access to 0xFFFF8000_00000000-0xFFFF807F_FFFFFFFF
    (PML4 slot 256, the start of the x86-64 "guard hole, reserved for hypervisor"), sets no accessed
    bit, and reports I/D for a fetch even with EFER.NXE=0 and no SMEP, which a real walk never does
    (SDM 4.7): the fault is made up by the hypervisor, not found in the guest's tables. CPL-0 accesses
    there and CPL-3 accesses in every other slot walk normally (checked by the random sample). SDM 4.5:
    translation depends only on the paging structures, so vmmio's walk is the right one.
    """
    made_up = ("fault", 14, pfec(t.access, 3), t.la)
    return t.cpl == 3 and (t.la >> 39) & 0x1FF == 256 and r.theirs == made_up and r.theirs_after == r.before


def no_page1gb(t: Trial, r: Result) -> bool:
    """A 1-GByte page faults as a reserved-bit violation: KVM's guest CPUID has no Page1GB.

    SDM 4.5 (Table 4-17 note): with CPUID.80000001H:EDX.Page1GB = 0, PS in a PDPTE is reserved. KVM's
    software walker applies the CPUID it advertises; vmmio's Walker models a processor with 1-GByte
    pages, as the host CPU is (its /proc/cpuinfo has pdpe1gb) and as hardware walking the guest's tables
    (EPT/NPT) would behave. A configuration difference, not a walker error.
    """
    rsvd = ("fault", 14, pfec(t.access, t.cpl) | PFEC_P | PFEC_RSVD, t.la)
    leaf_in_pdpte = len(t.path) == len(LAYOUT[t.kind][1]) - 2
    return not CPU.page1gb and leaf_in_pdpte and r.theirs == rsvd and r.theirs_after == r.before


DOCUMENTED: list[Callable[[Trial, Result], bool]] = [pvm_slot_256, no_page1gb]


def documented(t: Trial, r: Result) -> str | None:
    """The name of the documented exception that explains a disagreement, if one does."""
    for rule in DOCUMENTED:
        if rule(t, r):
            return rule.__name__
    return None


def describe(t: Trial, r: Result, what: str) -> str:
    return (
        f"{what}\n  ours:   {fmt(r.ours)} {[hex(e) for e in r.ours_after]}\n"
        f"  theirs: {fmt(r.theirs)} {[hex(e) for e in r.theirs_after]}\n"
        f"  before: {[hex(e) for e in r.before]}"
    )


def fmt(outcome: KvmOutcome) -> str:
    return "(" + ", ".join(hex(v) if isinstance(v, int) else repr(v) for v in outcome) + ")"


# -- paging modes ------------------------------------------------------------------------------------


@functools.cache
def mode_problem(kind: str) -> str | None:
    """None if KVM runs a plain read through `kind` paging to the expected MMIO exit, else what it did."""
    vm, tables, la, _ = setup(kind, K4, TESTDEV_MMIO, P | RW, P | RW | US)
    write_system(vm.memory, bits_of(kind))
    map_system(tables)
    got = run_access(vm.memory, control(kind, tables.root), bits_of(kind), la, "read", 0, False)
    if got == ("mmio", TESTDEV_MMIO + OFFSET[K4], 4, False):
        return None
    return f"KVM does not run {kind} paging: {fmt(got)}"


def require_mode(kind: str) -> None:
    problem = mode_problem(kind)
    if kind == "4l":
        assert problem is None, problem  # long mode is what the KVM backend runs on: never a skip
    elif problem is not None:
        pytest.skip(problem)


# -- random tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvmCase:
    kind: str
    size: int
    la: int
    target: int  # the GPA the access reaches unless an extra bit moves it
    leaf: int  # the leaf's flags (no address)
    tables: tuple[int, ...]  # flags of the entries above the leaf, root first
    extra: tuple[int, int]  # (path index, bits set there afterwards)
    access: str
    cpl: int
    ac: bool
    wp: bool
    nxe: bool
    cr4: int

    def __str__(self) -> str:
        at, bits = self.extra
        return (
            f"KvmCase({self.kind!r}, {self.size:#x}, la={self.la:#x}, target={self.target:#x}, "
            f"leaf={self.leaf:#x}, tables={tuple(hex(f) for f in self.tables)}, extra=({at}, {bits:#x}), "
            f"{self.access!r}, cpl={self.cpl}, ac={self.ac}, wp={self.wp}, nxe={self.nxe}, cr4={self.cr4:#x})"
        )


def page_sizes(kind: str) -> list[int]:
    return [K4, M2, G1] if kind != "pae" and CPU.page1gb else [K4, M2]


def moves_address(bit: int, size: int) -> bool:
    """Whether `bit` of a leaf is a physical-address bit for a page of `size`."""
    return 12 <= bit < CPU.maxphyaddr and (size == K4 or 1 << bit >= size)


def random_case(rng: random.Random, kind: str) -> KvmCase:
    size = rng.choice(page_sizes(kind))
    access = rng.choice(["read", "write", "fetch"])
    if access == "fetch":
        room = {K4: K4 - 0x20, M2: M2 - 0x20, G1: 0x40_0000}[size]
        target = LANDING[size] + (rng.randrange(16) * K4 if size == K4 else 0) + rng.randrange(room)
    else:
        target = TESTDEV_MMIO + rng.randrange(0, 0xFFC, 4)
    # The linear address: random indices above the leaf (never root entry 0, the system pages' own),
    # the target's offset below it.
    shifts = LAYOUT[kind][1]
    depth = sum(1 for s in shifts if 1 << s > size)
    la = target & (size - 1)
    for n, shift in enumerate(shifts[:depth]):
        la |= rng.randrange(1 if n == 0 else 0, 4 if kind == "pae" and n == 0 else 512) << shift
    if kind != "pae" and la >> (shifts[0] + 8) & 1:
        la |= -1 << (shifts[0] + 8) & ((1 << 64) - 1)  # canonical

    def flags(p: float, rw: float, us: float, nx: float, a: float) -> int:
        f = (P if rng.random() < p else 0) | (RW if rng.random() < rw else 0)
        f |= (US if rng.random() < us else 0) | (NX if CPU.nx and rng.random() < nx else 0)
        return f | (A if rng.random() < a else 0)

    tables = tuple(flags(0.95, 0.85, 0.85, 0.1, 0.3) for _ in range(depth))
    if kind == "pae":
        tables = (P if rng.random() < 0.95 else 0, *tables[1:])  # PDPTEs: P only
    leaf = flags(0.93, 0.6, 0.6, 0.3, 0.3) | (D if rng.random() < 0.3 else 0)
    extra = (0, 0)
    if rng.random() < 0.35:
        # Reserved or ignored bits. Above the leaf only bits that keep the next table where it is.
        at = rng.randrange(depth + 1)
        m = CPU.maxphyaddr
        if kind == "pae" and at == 0:
            # Ignored PDPTE bits only: KVM loads PDPTEs at CR3 load, where reserved bits mean #GP.
            choices = [1 << 9, 1 << 11]
        elif at < depth:
            choices = [1 << 51, 1 << m, 1 << 9, 1 << 52, 1 << 62, D]
            if at == 0 or (kind == "5l" and at == 1):
                choices.append(PS)  # reserved in PML4Es and PML5Es
        else:
            choices = [1 << 51, 1 << m, 1 << (m - 1), 1 << 40, 1 << 29, 1 << 20, 1 << 13, 1 << 12]
            choices += [1 << 9, 1 << 52, 1 << 58, 1 << 62] + ([PS] if size == K4 else [])  # PS: PAT
            if access == "fetch":  # the landing code is at the target only
                choices = [b for b in choices if not moves_address(b.bit_length() - 1, size)]
        extra = (at, rng.choice(choices))
    cr4 = CR4_SMEP if CPU.smep and rng.random() < 0.4 else 0
    cr4 |= CR4_SMAP if CPU.smap and rng.random() < 0.4 else 0
    cpl = rng.choice([0, 3])
    ac = rng.random() < 0.3
    return KvmCase(
        kind,
        size,
        la,
        target,
        leaf,
        tables,
        extra,
        access,
        cpl,
        ac,
        rng.random() < 0.7,
        CPU.nx and rng.random() < 0.7,
        cr4,
    )


def build(case: KvmCase) -> Trial:
    vm = Vm(RAM_SIZE, CPU.maxphyaddr)
    tables = Tables(vm, case.kind)
    write_system(vm.memory, bits_of(case.kind))
    map_system(tables)
    path = tables.map(case.la, case.target & ~(case.size - 1), case.size, case.leaf)
    for slot, f in zip(path, case.tables, strict=False):
        tables.write(slot, (tables.read(slot) & ~(P | RW | US | NX | A)) | f)
    at, bits = case.extra
    if bits:
        tables.write(path[at], tables.read(path[at]) | bits)
    if case.access == "fetch":
        vm.memory.write(case.target, landing_code(case.target, bits_of(case.kind)))
    ctl = control(case.kind, tables.root, wp=case.wp, nxe=case.nxe, cr4=case.cr4, cpl=case.cpl)
    return Trial(vm, case.kind, path, tables.esize, ctl, case.la, case.access, case.cpl, case.ac)


def category(r: Result) -> str:
    if r.ours[0] != "fault":
        return str(r.ours[0])
    ec = r.ours[2]
    assert isinstance(ec, int)
    return "reserved" if ec & PFEC_RSVD else "protection" if ec & PFEC_P else "not present"


@pytest.mark.parametrize("kind", ["4l", "pae", "5l"])
def test_random_walks_agree_with_kvm(kind: str) -> None:
    require_mode(kind)
    rng = random.Random(f"kvm-walks-{kind}")
    cases = RANDOM_CASES if kind == "4l" else RANDOM_CASES // 3
    undocumented: list[str] = []
    seen: dict[str, int] = {}
    for _ in range(cases):
        case = random_case(rng, kind)
        trial = build(case)
        result = run_trial(trial)
        if result.agree:
            what = f"{case.access} {category(result)}"
        else:
            what = documented(trial, result) or "undocumented"
            if what == "undocumented":
                undocumented.append(describe(trial, result, str(case)))
        seen[what] = seen.get(what, 0) + 1
    assert not undocumented, f"{len(undocumented)} of {cases} disagree:\n" + "\n".join(undocumented[:10])
    wanted = {f"{a} {c}" for a in ("read", "write", "fetch") for c in ("ok", "not present", "protection")}
    wanted |= {"read reserved", "write reserved", "fetch reserved"}
    assert wanted <= seen.keys(), f"the sample misses {wanted - seen.keys()}: {seen}"


@pytest.mark.parametrize("kind", ["4l", "pae", "5l"])
def test_random_cases_are_well_formed(kind: str) -> None:
    """The generator in every mode, KVM or not: the walk stays in RAM, fetches land on their code and
    data accesses end at MMIO, so every KVM outcome above has the form the comparison expects."""
    rng = random.Random(f"kvm-walks-shape-{kind}")
    outcomes = set()
    for _ in range(300):
        case = random_case(rng, kind)
        trial = build(case)
        ours, _ = vmmio_walk(trial, CPU.maxphyaddr)
        outcomes.add(ours[0])
        assert ours[0] in ("ok", "fault"), (str(case), ours)
        if ours[0] == "ok" and case.access == "fetch":
            assert ours == ("ok", case.target), str(case)
        elif ours[0] == "ok":
            gpa = ours[1]
            assert isinstance(gpa, int) and trial.vm.memory.ram_at(gpa, 4) is None, str(case)
    assert outcomes == {"ok", "fault"}


# -- test_paging's rows ------------------------------------------------------------------------------


# A row as a Fault (MAPS rows become Faults: their poke is `at`/`set`), its physical address and what
# it expects without CR2: ("ok", gpa), ("fault", 14, error code), or None for "no fault".
Row = tuple[Fault, int, KvmOutcome | None]
ROWS: list[Row] = [
    (
        Fault(m.name, m.kind, m.access, None, size=m.size, leaf=m.leaf, at=m.poke[0], set=m.poke[1]),
        m.pa,
        ("ok", m.pa + OFFSET[m.size]),
    )
    for m in MAPS
] + [(f, PA, None if f.ec is None else ("fault", 14, f.ec)) for f in FAULTS]


def row_problem(row: Fault) -> str | None:
    """Why a row cannot run under this KVM, or None."""
    needs = [(CR4_SMEP, CPU.smep, "SMEP"), (CR4_SMAP, CPU.smap, "SMAP"), (CR4_PKE, CPU.pku, "PKU")]
    for bit, have, name in needs:
        if row.cr4 & bit and not have:
            return f"KVM's guest CPUID has no {name}"
    if row.size == G1 and not CPU.page1gb:
        return "KVM's guest CPUID has no Page1GB (see test_1g_pages_where_kvm_has_no_page1gb)"
    if row.nxe and not CPU.nx:
        return "KVM's guest CPUID has no NX"
    if row.cpl == 3 and not row.access & U:
        return "an implicit supervisor access at CPL 3: no plain instruction makes one"
    return None


@pytest.mark.parametrize(("row", "pa", "expect"), ROWS, ids=[r[0].name for r in ROWS])
def test_hand_computed_rows_agree_with_kvm(row: Fault, pa: int, expect: KvmOutcome | None) -> None:
    problem = row_problem(row)
    if problem is not None:
        pytest.skip(problem)
    require_mode(row.kind)
    vm, tables, la, path = setup(row.kind, row.size, pa, row.leaf, row.table)
    slot = path[row.at]
    tables.write(slot, (tables.read(slot) | row.set) & ~row.clear)
    write_system(vm.memory, bits_of(row.kind))
    map_system(tables)
    cpl = 3 if row.access & U else row.cpl
    ctl = control(row.kind, tables.root, wp=row.wp, nxe=row.nxe, cr4=row.cr4, cpl=cpl)
    access = "fetch" if row.access & I else "write" if row.access & W else "read"
    trial = Trial(vm, row.kind, path, tables.esize, ctl, la, access, cpl, row.ac)
    result = run_trial(trial)
    if result.ours[0] == "abort":
        pytest.skip(f"with KVM's MAXPHYADDR ({CPU.maxphyaddr}) the walk leaves RAM: {result.ours[1]}")
    assert result.agree, describe(trial, result, row.name)
    # The row's own expectation assumes MAXPHYADDR 46; where KVM's gives vmmio the same walk, KVM must
    # meet it too (a fetch from MMIO has no GPA to show).
    if vmmio_walk(trial, 46)[0] == result.ours:
        if expect is None:
            assert result.theirs[0] == "ok"
        elif expect[0] == "fault":
            assert result.theirs == (*expect, la)
        elif access != "fetch":
            assert result.theirs == expect


# -- the documented exceptions, one by one -----------------------------------------------------------


@pytest.mark.parametrize("access", ["read", "write", "fetch"])
def test_user_access_in_pml4_slot_256(access: str) -> None:
    """See pvm_slot_256: a fully permissive user mapping, which vmmio (rightly) translates."""
    require_mode("4l")
    target = LANDING[K4] + 0x234 if access == "fetch" else TESTDEV_MMIO + 0x234
    la = 0xFFFF_8000_0000_0000 | 0x12_3456_7000 | (target & 0xFFF)
    case = KvmCase(
        "4l", K4, la, target, P | RW | US, (P | RW | US,) * 3, (0, 0), access, 3, False, True, True, 0
    )
    trial = build(case)
    result = run_trial(trial)
    assert result.ours == ("ok", target)
    assert result.agree or pvm_slot_256(trial, result), describe(
        trial, result, "not the documented deviation"
    )
    # The same mapping one slot up, and at CPL 0 in slot 256, walk normally.
    for other in (dataclasses.replace(case, la=la + (1 << 39)), dataclasses.replace(case, cpl=0)):
        trial = build(other)
        result = run_trial(trial)
        assert result.agree, describe(trial, result, str(other))


@pytest.mark.parametrize("access", ["read", "write", "fetch"])
def test_1g_pages_where_kvm_has_no_page1gb(access: str) -> None:
    """See no_page1gb: where KVM offers 1-GByte pages the random sample covers them instead."""
    if CPU.page1gb:
        pytest.skip("KVM offers 1-GByte pages: the random sample compares them")
    require_mode("4l")
    target = LANDING[G1] + 0x123 if access == "fetch" else TESTDEV_MMIO + 0x40
    la = 3 << 39 | 5 << 30 | (target & (G1 - 1))
    case = KvmCase(
        "4l", G1, la, target, P | RW | US, (P | RW | US,) * 2, (0, 0), access, 0, False, True, True, 0
    )
    trial = build(case)
    result = run_trial(trial)
    assert result.ours == ("ok", target)
    assert result.agree or no_page1gb(trial, result), describe(trial, result, "not the documented deviation")
