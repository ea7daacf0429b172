"""What an executor reports for a case, and the comparison of two reports.

Compared: the 16 GPRs, RIP, the status flags outside the form's undefined mask, DF, the MMIO window
bytes and the RAM area bytes. vmmio's MMIO request sequence is checked separately against the planned
accesses (`check_requests`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oracles.gen import CODE, FLAG_NAMES, PAGE, RAM, STATUS, WINDOW, WINDOW_SIZE, Case
from vmmio.abi import split_access
from vmmio.x86.regs import DF, GPR_NAMES
from vmmio.x86.state import VectorState

__all__ = ["Outcome", "Request", "check_requests", "compare", "disassemble", "failure_message"]


@dataclass(frozen=True)
class Request:
    """One MMIO request vmmio sent to userspace."""

    gpa: int
    size: int
    write: bool
    data: int


@dataclass
class Outcome:
    """The state after running a case.

    `fault` names an architectural exception the instruction raised ("#UD", "#GP", "#PF at 0x...");
    the state is then the state before it. `error` says why the executor could not run the case at all.
    """

    gprs: list[int]
    rip: int
    rflags: int
    window: bytes
    ram: bytes
    error: str = ""
    fault: str = ""
    requests: list[Request] = field(default_factory=list)
    error_code: int | None = None  # of the fault, where the executor can tell (#GP/#SS/#NP/#TS)
    # Selectors ("cs", ...), "gdtr"/"idtr" (base, limit), "ldtr"/"tr" selectors, "cr0" (bits 15:0): what
    # the executor can report; compared key by key where both do.
    state: dict[str, object] = field(default_factory=dict)
    gdt: bytes = b""  # the GDT after the case (gen_ctl environments), where the executor can read it
    vector: VectorState | None = None  # the vector registers after, where the executor has them


def _flag_text(value: int) -> str:
    names = " ".join(name for name, bit in FLAG_NAMES.items() if value & bit)
    others = value & ~sum(FLAG_NAMES.values()) & ~0x2
    return (names + (f" +{others:#x}" if others else "")).strip() or "-"


def _byte_diffs(base: int, a: bytes, b: bytes, a_name: str, b_name: str) -> list[str]:
    """Differing byte ranges, merged when closer than 8 bytes, each shown from both sides."""
    out: list[str] = []
    n = 0
    while n < len(a):
        if a[n] == b[n]:
            n += 1
            continue
        end = n
        k = n
        while k < len(a) and k - end < 8:
            if a[k] != b[k]:
                end = k
            k += 1
        lo, hi = a[n : end + 1].hex(), b[n : end + 1].hex()
        out.append(f"memory {base + n:#x}..{base + end + 1:#x}: {a_name} {lo} {b_name} {hi}")
        n = end + 1
    return out


def compare(case: Case, want: Outcome, got: Outcome, want_name: str, got_name: str) -> list[str]:
    """Differences between the oracle's outcome (`want`) and vmmio's (`got`), as readable lines."""
    if want.error or got.error:
        if want.error == got.error:
            return []
        return [f"{want_name}: {want.error or 'completed'}; {got_name}: {got.error or 'completed'}"]
    diffs: list[str] = []
    if want.fault != got.fault:
        diffs.append(f"{want_name}: {want.fault or 'completed'}; {got_name}: {got.fault or 'completed'}")
    elif None not in (want.error_code, got.error_code) and want.error_code != got.error_code:
        diffs.append(f"error code: {want_name} {want.error_code:#x} {got_name} {got.error_code:#x}")
    for key in sorted(want.state.keys() & got.state.keys()):
        if want.state[key] != got.state[key]:
            diffs.append(f"{key}: {want_name} {_text(want.state[key])} {got_name} {_text(got.state[key])}")
    if want.gdt and got.gdt and want.gdt != got.gdt:
        diffs += _byte_diffs(0, want.gdt, got.gdt, f"{want_name} GDT", f"{got_name} GDT")
    for n in range(16):
        if want.gprs[n] != got.gprs[n]:
            diffs.append(f"{GPR_NAMES[8][n]}: {want_name} {want.gprs[n]:#x} {got_name} {got.gprs[n]:#x}")
    if want.rip != got.rip:
        diffs.append(f"rip: {want_name} {want.rip:#x} {got_name} {got.rip:#x}")
    checked = (STATUS & ~case.undefined) | DF | case.extra_flags
    if (want.rflags ^ got.rflags) & checked:
        masked = f" (not compared: {_flag_text(case.undefined)})" if case.undefined else ""
        mine, theirs = _flag_text(want.rflags & checked), _flag_text(got.rflags & checked)
        diffs.append(f"flags: {want_name} {mine} {got_name} {theirs}{masked}")
    diffs += _byte_diffs(WINDOW, want.window, got.window, want_name, got_name)
    diffs += _byte_diffs(RAM, want.ram, got.ram, want_name, got_name)
    return diffs


def _text(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(hex(v) for v in value) + ")"
    return hex(value) if isinstance(value, int) else str(value)


def _in_window(addr: int) -> bool:
    return WINDOW <= addr < WINDOW + WINDOW_SIZE


def check_requests(case: Case, requests: list[Request], iterations: int) -> list[str]:
    """vmmio's MMIO requests against the planned accesses of `iterations` executions.

    Each planned access that touches the window must appear, in order, as requests of the same
    direction that cover exactly its bytes in ascending address order, each of 1, 2, 4 or 8 bytes and
    within one page; an access that stays within a page is exactly the pieces the ABI's split_access gives
    (one request, two qwords for 16 bytes). Nothing else may appear.
    """
    problems: list[str] = []
    planned = [a for a in case.expected_accesses(iterations) if _in_window(a.addr)]
    pos = 0
    for access in planned:
        covered = access.addr
        end = access.addr + access.size
        pieces: list[Request] = []
        while covered < end and pos < len(requests):
            r = requests[pos]
            if r.gpa != covered or r.write != access.write or r.gpa + r.size > end:
                break
            pieces.append(r)
            covered += r.size
            pos += 1
        where = f"{'write' if access.write else 'read'} of {access.size} at {access.addr:#x}"
        if covered != end:
            got = requests[pos] if pos < len(requests) else None
            problems.append(f"expected the {where}, got {_req_text(got) if got else 'no more requests'}")
            return problems
        crosses = access.addr // PAGE != (end - 1) // PAGE
        for r in pieces:
            if r.size not in (1, 2, 4, 8) or r.gpa // PAGE != (r.gpa + r.size - 1) // PAGE:
                problems.append(f"{where}: request {_req_text(r)} is not 1/2/4/8 bytes within one page")
        # Within a page: one request, or for a 6/10/16-byte access (far pointers, descriptor-table
        # registers, CMPXCHG16B) the naturally aligned pieces the ABI's split_access gives.
        if not crosses and [(r.gpa, r.size) for r in pieces] != [
            (g, n) for _o, g, n in split_access(access.addr, access.size)
        ]:
            problems.append(f"{where} fits in a page but came as {len(pieces)} requests, not split_access's")
    for r in requests[pos:]:
        problems.append(f"unexpected request {_req_text(r)}")
    return problems


def _req_text(r: Request) -> str:
    return f"{'W' if r.write else 'R'}{r.size}@{r.gpa:#x}={r.data:#x}"


def disassemble(code: bytes, ip: int) -> str:
    """Intel-syntax text by iced-x86 (an independent decoder), for reports."""
    try:
        import iced_x86
    except ImportError:  # pragma: no cover - the test extra installs it
        return "?"
    insn = iced_x86.Decoder(64, code, ip=ip).decode()
    return str(iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL).format(insn))


def failure_message(case: Case, oracle: str, diffs: list[str], requests: list[Request] | None = None) -> str:
    lines = [
        f"vmmio disagrees with {oracle} on {case.form!r}: {case.code.hex()} ({disassemble(case.code, CODE)})"
    ]
    lines += ["  " + d for d in diffs]
    lines.append("inputs: " + case.describe())
    if requests is not None:
        shown = ", ".join(_req_text(r) for r in requests[:16]) or "-"
        more = f" and {len(requests) - 16} more" if len(requests) > 16 else ""
        lines.append(f"  vmmio requests: {shown}{more}")
    if case.undefined:
        lines.append(f"  flags not compared ({_flag_text(case.undefined)}): {case.reason}")
    return "\n".join(lines)


def iterations(case: Case, before_rcx: int, after_rcx: int) -> int:
    """Executions of the (string) instruction, from the oracle's count register."""
    if not case.rep:
        return 1
    mask = (1 << (8 * case.addr_size)) - 1
    return ((before_rcx & mask) - (after_rcx & mask)) & mask
