"""Run a case on the host CPU: a small C runner executes the instruction with the exact case state.

The runner maps the case's layout at the same addresses (window, RAM area, code page; MAP_FIXED_NOREPLACE)
so no value needs relocating. Per case it sets FS/GS bases (arch_prctl), then enters the instruction with
IRETQ, which loads RSP, RFLAGS (with TF set) and RIP at once after all other GPRs were loaded. The
single-step trap after the instruction (or a fault in it) lands in a signal handler on an alternate stack
that copies every register from the signal context, including the RIP the CPU really reached, and
redirects the context back into the runner. A REP string instruction traps after each iteration with RIP
unchanged; the handler just lets it continue. A crash or hang of the runner is reported for the case and
the runner restarted; cases never share a process state that matters (all memory is rewritten).
"""

from __future__ import annotations

import platform
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

from oracles.gen import CODE, PAGE, RAM, RAM_SIZE, WINDOW, WINDOW_SIZE, Case
from oracles.outcome import Outcome
from oracles.vector_state import WIRE_SIZE as VECTOR_WIRE_SIZE
from oracles.vector_state import pack as pack_vector
from oracles.vector_state import unpack as unpack_vector
from oracles.vmmio_run import FILLER

__all__ = ["RUNNER_C", "NativeRunner", "build_runner", "unavailable_reason"]

RUNNER_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <cpuid.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define WINDOW 0x@WINDOW@UL
#define WINDOW_SIZE 0x@WINDOW_SIZE@UL
#define RAM 0x@RAM@UL
#define RAM_SIZE 0x@RAM_SIZE@UL
#define CODE 0x@CODE@UL
#define PAGE 0x@PAGE@UL
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003

/* Vector state (see VECTOR_STATE in Python): ZMM0-31, k0-7, MXCSR, x87 FCW/FSW/abridged FTW and the x87
 * registers R0-R7 by physical number (MMX mm0-7 are their low 64 bits). */
struct vecstate {
    uint8_t zmm[32][64];
    uint64_t k[8];
    uint32_t mxcsr;
    uint16_t fcw, fsw;
    uint8_t ftw, pad[7];
    uint8_t fpr[8][10];
} __attribute__((packed));
_Static_assert(sizeof(struct vecstate) == @VECTOR_WIRE_SIZE@, "as tests/oracles/vector_state.py packs it");

struct request {
    uint64_t code_len;
    uint8_t code[32];
    uint64_t gpr[16];
    uint64_t rflags, fs_base, gs_base;
    uint8_t window[WINDOW_SIZE];
    uint8_t ram[RAM_SIZE];
    uint8_t filler[PAGE];
    struct vecstate vec;
};

struct response {
    uint64_t status; /* 0 completed, else the signal; 1000 FS/GS base refused */
    uint64_t fault_addr, si_code, rip, rflags, steps, trapno, err;
    uint64_t sel[6]; /* ES CS SS DS FS GS after the instruction */
    uint64_t gpr[16];
    uint8_t window[WINDOW_SIZE];
    uint8_t ram[RAM_SIZE];
    struct vecstate vec;
    uint64_t xcr0;
};

/* Shared with the assembly: inputs, host state to return to, outputs. */
uint64_t g_in_gpr[16], g_in_rflags, g_in_fs, g_in_gs, g_host_fs, g_host_rsp, g_cs, g_ss, g_code, g_seg_err;
/* XRSTOR before the instruction and XSAVE after it, of the components in g_xmask (x87, SSE, AVX, opmask,
 * ZMM_Hi256, Hi16_ZMM as far as XCR0 has them), in the standard format at CPUID.0xD offsets. */
uint64_t g_xmask;
uint8_t g_xin[4096] __attribute__((aligned(64))), g_xout[4096] __attribute__((aligned(64)));
static uint32_t xoff[8];
volatile uint64_t g_status, g_fault_addr, g_si_code, g_out_rip, g_out_rflags, g_out_gpr[16], g_steps;
volatile uint64_t g_trapno, g_err, g_sel[6];

void run_insn(void);
void run_insn_landing(void);

__asm__(
    ".text\n"
    ".intel_syntax noprefix\n"
    ".globl run_insn\n"
    "run_insn:\n"
    "  push rbx\n  push rbp\n  push r12\n  push r13\n  push r14\n  push r15\n"
    "  mov [rip + g_host_rsp], rsp\n"
    /* A case's POPF/IRET may have set NT, which sigreturn keeps and the IRETQ below would #GP on. */
    "  push 2\n  popfq\n"
    /* Null DS/ES/FS/GS, as a Linux process has them, whatever the last case loaded (FS/GS bases next). */
    "  xor eax, eax\n  mov ds, eax\n  mov es, eax\n  mov fs, eax\n  mov gs, eax\n"
    "  mov eax, 158\n  mov edi, 0x1002\n  mov rsi, [rip + g_in_fs]\n  syscall\n"
    "  mov [rip + g_seg_err], rax\n"
    "  mov eax, 158\n  mov edi, 0x1001\n  mov rsi, [rip + g_in_gs]\n  syscall\n"
    "  or [rip + g_seg_err], rax\n"
    "  push qword ptr [rip + g_ss]\n"
    "  push qword ptr [rip + g_in_gpr + 32]\n"
    "  push qword ptr [rip + g_in_rflags]\n"
    "  push qword ptr [rip + g_cs]\n"
    "  push qword ptr [rip + g_code]\n"
    "  mov eax, [rip + g_xmask]\n  xor edx, edx\n  xrstor64 [rip + g_xin]\n"
    "  mov rax, [rip + g_in_gpr + 0]\n"
    "  mov rcx, [rip + g_in_gpr + 8]\n"
    "  mov rdx, [rip + g_in_gpr + 16]\n"
    "  mov rbx, [rip + g_in_gpr + 24]\n"
    "  mov rbp, [rip + g_in_gpr + 40]\n"
    "  mov rsi, [rip + g_in_gpr + 48]\n"
    "  mov rdi, [rip + g_in_gpr + 56]\n"
    "  mov r8, [rip + g_in_gpr + 64]\n"
    "  mov r9, [rip + g_in_gpr + 72]\n"
    "  mov r10, [rip + g_in_gpr + 80]\n"
    "  mov r11, [rip + g_in_gpr + 88]\n"
    "  mov r12, [rip + g_in_gpr + 96]\n"
    "  mov r13, [rip + g_in_gpr + 104]\n"
    "  mov r14, [rip + g_in_gpr + 112]\n"
    "  mov r15, [rip + g_in_gpr + 120]\n"
    "  iretq\n"
    ".globl run_insn_landing\n"
    "run_insn_landing:\n"
    "  mov rsp, [rip + g_host_rsp]\n"
    "  mov eax, [rip + g_xmask]\n  xor edx, edx\n  xsave64 [rip + g_xout]\n"
    "  mov eax, 158\n  mov edi, 0x1002\n  mov rsi, [rip + g_host_fs]\n  syscall\n"
    "  mov eax, 158\n  mov edi, 0x1001\n  xor esi, esi\n  syscall\n"
    "  cld\n"
    "  pop r15\n  pop r14\n  pop r13\n  pop r12\n  pop rbp\n  pop rbx\n"
    "  ret\n"
    ".att_syntax prefix\n");

/* Runs on the alternate stack with the case's FS base: no libc, no TLS. */
static void on_signal(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    if (sig == SIGTRAP && (uint64_t)g[REG_RIP] == CODE && ++g_steps < 1000000)
        return; /* one REP iteration done; keep stepping */
    g_status = sig == SIGTRAP ? 0 : (uint64_t)sig;
    g_fault_addr = (uint64_t)si->si_addr;
    g_si_code = (uint64_t)(int64_t)si->si_code;
    g_out_rip = g[REG_RIP];
    g_out_rflags = g[REG_EFL];
    g_out_gpr[0] = g[REG_RAX];
    g_out_gpr[1] = g[REG_RCX];
    g_out_gpr[2] = g[REG_RDX];
    g_out_gpr[3] = g[REG_RBX];
    g_out_gpr[4] = g[REG_RSP];
    g_out_gpr[5] = g[REG_RBP];
    g_out_gpr[6] = g[REG_RSI];
    g_out_gpr[7] = g[REG_RDI];
    g_out_gpr[8] = g[REG_R8];
    g_out_gpr[9] = g[REG_R9];
    g_out_gpr[10] = g[REG_R10];
    g_out_gpr[11] = g[REG_R11];
    g_out_gpr[12] = g[REG_R12];
    g_out_gpr[13] = g[REG_R13];
    g_out_gpr[14] = g[REG_R14];
    g_out_gpr[15] = g[REG_R15];
    g_trapno = g[REG_TRAPNO];
    g_err = g[REG_ERR];
    uint16_t ds, es, fs, gs;
    __asm__("mov %%ds, %0\n mov %%es, %1\n mov %%fs, %2\n mov %%gs, %3"
            : "=r"(ds), "=r"(es), "=r"(fs), "=r"(gs));
    uint64_t csgsfs = (uint64_t)g[REG_CSGSFS];
    g_sel[0] = es;
    g_sel[1] = csgsfs & 0xFFFF;
    g_sel[2] = (uc->uc_flags & 2) ? (csgsfs >> 48) & 0xFFFF : 0xFFFFFFFF; /* UC_SIGCONTEXT_SS */
    g_sel[3] = ds;
    g_sel[4] = fs;
    g_sel[5] = gs;
    /* Back to the runner's 64-bit code and stack segment, whatever far transfer the case made. */
    g[REG_CSGSFS] = (greg_t)((csgsfs & 0x0000FFFFFFFF0000ULL) | g_cs | (uint64_t)g_ss << 48);
    g[REG_RIP] = (greg_t)run_insn_landing;
    g[REG_RSP] = (greg_t)g_host_rsp;
    g[REG_EFL] = 0x202;
}

static int io_full(int fd, void *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        char *p = (char *)buf + done;
        ssize_t r = writing ? write(fd, p, n - done) : read(fd, p, n - done);
        if (r <= 0)
            return done == 0 && !writing ? 0 : -1;
        done += (size_t)r;
    }
    return 1;
}

static void *map_at(uint64_t addr, uint64_t size, int prot) {
    void *p = mmap((void *)addr, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != (void *)addr)
        _exit(90);
    return p;
}

static void to_xsave(const struct vecstate *v, uint8_t *x) {
    memset(x, 0, 4096);
    memcpy(x, &v->fcw, 2);
    memcpy(x + 2, &v->fsw, 2);
    x[4] = v->ftw;
    memcpy(x + 24, &v->mxcsr, 4);
    int top = v->fsw >> 11 & 7;
    for (int i = 0; i < 8; i++)
        memcpy(x + 32 + 16 * i, v->fpr[(top + i) & 7], 10); /* ST(i) = R[(TOP + i) mod 8] */
    for (int i = 0; i < 16; i++) {
        memcpy(x + 160 + 16 * i, v->zmm[i], 16);
        memcpy(x + xoff[2] + 16 * i, v->zmm[i] + 16, 16);
        memcpy(x + xoff[6] + 32 * i, v->zmm[i] + 32, 32);
        memcpy(x + xoff[7] + 64 * i, v->zmm[16 + i], 64);
    }
    memcpy(x + xoff[5], v->k, 64);
    memcpy(x + 512, &g_xmask, 8); /* XSTATE_BV */
}

static void from_xsave(const uint8_t *x, struct vecstate *v) {
    uint64_t bv;
    memcpy(&bv, x + 512, 8);
    memset(v, 0, sizeof *v);
    v->fcw = 0x37F; /* components not in use are in their initial state */
    memcpy(&v->mxcsr, x + 24, 4);
    if (bv & 1) {
        memcpy(&v->fcw, x, 2);
        memcpy(&v->fsw, x + 2, 2);
        v->ftw = x[4];
        int top = v->fsw >> 11 & 7;
        for (int i = 0; i < 8; i++)
            memcpy(v->fpr[(top + i) & 7], x + 32 + 16 * i, 10);
    }
    for (int i = 0; i < 16; i++) {
        if (bv & 2)
            memcpy(v->zmm[i], x + 160 + 16 * i, 16);
        if (bv & 4)
            memcpy(v->zmm[i] + 16, x + xoff[2] + 16 * i, 16);
        if (bv & 0x40)
            memcpy(v->zmm[i] + 32, x + xoff[6] + 32 * i, 32);
        if (bv & 0x80)
            memcpy(v->zmm[16 + i], x + xoff[7] + 64 * i, 64);
    }
    if (bv & 0x20)
        memcpy(v->k, x + xoff[5], 64);
}

static struct request req;
static struct response resp;

int main(void) {
    map_at(WINDOW, WINDOW_SIZE, PROT_READ | PROT_WRITE);
    map_at(RAM, RAM_SIZE, PROT_READ | PROT_WRITE);
    map_at(CODE, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC);
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    if (sigaltstack(&ss, 0))
        return 91;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    int sigs[] = {SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, 0))
            return 92;
    uint16_t cs, ssel;
    __asm__("mov %%cs, %0" : "=r"(cs));
    __asm__("mov %%ss, %0" : "=r"(ssel));
    g_cs = cs;
    g_ss = ssel;
    g_code = CODE;
    if (syscall(SYS_arch_prctl, ARCH_GET_FS, &g_host_fs))
        return 93;
    uint32_t xlo, xhi, a, b, c, d;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    g_xmask = ((uint64_t)xhi << 32 | xlo) & 0xE7;
    for (int i = 2; i < 8; i++) {
        xoff[i] = 3072; /* absent: a scratch place past every real component (never restored) */
        if (g_xmask >> i & 1 && __get_cpuid_count(0xD, i, &a, &b, &c, &d))
            xoff[i] = b;
    }
    for (;;) {
        int r = io_full(0, &req, sizeof req, 0);
        if (r == 0)
            return 0;
        if (r < 0 || req.code_len > 32)
            return 94;
        memcpy((void *)WINDOW, req.window, WINDOW_SIZE);
        memcpy((void *)RAM, req.ram, RAM_SIZE);
        memcpy((void *)CODE, req.filler, PAGE);
        memcpy((void *)CODE, req.code, req.code_len);
        memcpy(g_in_gpr, req.gpr, sizeof g_in_gpr);
        /* Status flags and DF from the case; IF and bit 1 as user mode needs them; TF to trap after. */
        g_in_rflags = (req.rflags & 0x40CD5) | 0x202 | 0x100; /* AC too: Linux runs with CR0.AM set */
        g_in_fs = req.fs_base;
        g_in_gs = req.gs_base;
        g_steps = 0;
        g_status = 999;
        to_xsave(&req.vec, g_xin);
        memset(g_xout, 0, sizeof g_xout);
        alarm(10);
        run_insn();
        alarm(0);
        resp.status = g_seg_err ? 1000 : g_status;
        resp.fault_addr = g_fault_addr;
        resp.si_code = g_si_code;
        resp.rip = g_out_rip;
        resp.rflags = g_out_rflags;
        resp.steps = g_steps;
        resp.trapno = g_trapno;
        resp.err = g_err;
        for (int i = 0; i < 6; i++)
            resp.sel[i] = g_sel[i];
        for (int i = 0; i < 16; i++)
            resp.gpr[i] = g_out_gpr[i];
        memcpy(resp.window, (void *)WINDOW, WINDOW_SIZE);
        memcpy(resp.ram, (void *)RAM, RAM_SIZE);
        from_xsave(g_xout, &resp.vec);
        resp.xcr0 = g_xmask;
        if (io_full(1, &resp, sizeof resp, 1) < 0)
            return 95;
    }
}
"""

_REQ_HEAD = struct.Struct("<Q32s16QQQQ")
_RESP_HEAD = struct.Struct("<QQqQQQQQ6Q16Q")
_VEC_TAIL = struct.Struct(f"<{VECTOR_WIRE_SIZE}sQ")  # the vector state after, and the XCR0 components saved
SI_KERNEL = 0x80
RF_FLAG = 1 << 16
TF_FLAG = 1 << 8
# Vectors named (with their error code) from the signal context's trap number.
_CODED = {10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 17: "#AC"}
BUS_ADRALN = 1
_CODE_PAGE = (FILLER * (PAGE // len(FILLER)))[:PAGE]
_EXIT_CODES = {
    90: "could not map the fixed layout",
    91: "sigaltstack failed",
    92: "sigaction failed",
    93: "arch_prctl(ARCH_GET_FS) failed",
    94: "bad request",
    95: "write failed",
}


def unavailable_reason() -> str | None:
    """Why the host CPU cannot serve as an oracle here, or None."""
    if sys.platform != "linux":
        return f"host CPU oracle needs Linux (signals, arch_prctl, fixed mappings), this is {sys.platform}"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"host CPU oracle needs an x86_64 host, this is {platform.machine()}"
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "host CPU oracle needs gcc (or cc) to build its runner; none on PATH"
    return None


def build_runner(directory: Path) -> Path:
    """Compile the runner into `directory` (once per session)."""
    source = RUNNER_C
    for name, value in (
        ("WINDOW", WINDOW),
        ("WINDOW_SIZE", WINDOW_SIZE),
        ("RAM", RAM),
        ("RAM_SIZE", RAM_SIZE),
        ("CODE", CODE),
        ("PAGE", PAGE),
    ):
        source = source.replace(f"@{name}@", f"{value:X}")
    source = source.replace("@VECTOR_WIRE_SIZE@", str(VECTOR_WIRE_SIZE))
    src = directory / "runner.c"
    src.write_text(source)
    exe = directory / "runner"
    cc = shutil.which("gcc") or shutil.which("cc") or "cc"
    # No stack protector (the handler runs with the case's FS base) and no CET marking (IRETQ and the
    # redirected signal return are not shadow-stack friendly).
    flags = ["-O1", "-fno-stack-protector", "-fcf-protection=none", "-o", str(exe), str(src)]
    subprocess.run([cc, *flags], check=True, capture_output=True, text=True)
    return exe


class NativeRunner:
    """A runner subprocess served case by case over pipes; restarted after a crash."""

    def __init__(self, exe: Path) -> None:
        self.exe = exe
        self.proc: subprocess.Popen[bytes] | None = None
        self.xcr0 = 0  # XCR0 components the runner saves and restores (known after the first case)

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [str(self.exe)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: nothing it does reaches the test run
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def _died(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        if code < 0:
            return f"host runner killed by {signal.Signals(-code).name}"
        return f"host runner exited with {code} ({_EXIT_CODES.get(code, 'unexpected')})"

    def run(self, case: Case) -> Outcome:
        stdin, stdout = self._pipes()
        head = _REQ_HEAD.pack(len(case.code), case.code, *case.gprs, case.rflags, case.fs_base, case.gs_base)
        try:
            stdin.write(head + case.window() + case.ram() + _CODE_PAGE + pack_vector(case.vector))
            stdin.flush()
        except BrokenPipeError:
            return _failed(case, self._died())
        size = _RESP_HEAD.size + WINDOW_SIZE + RAM_SIZE + _VEC_TAIL.size
        data = stdout.read(size)
        if len(data) != size:
            return _failed(case, self._died())
        status, fault_addr, si_code, rip, rflags, _steps, trapno, err, *rest = _RESP_HEAD.unpack_from(data)
        sel, gprs = rest[:6], rest[6:]
        window = data[_RESP_HEAD.size : _RESP_HEAD.size + WINDOW_SIZE]
        ram = data[_RESP_HEAD.size + WINDOW_SIZE : _RESP_HEAD.size + WINDOW_SIZE + RAM_SIZE]
        vec_raw, self.xcr0 = _VEC_TAIL.unpack_from(data, _RESP_HEAD.size + WINDOW_SIZE + RAM_SIZE)
        error = fault = ""
        error_code = None
        if status == 1000:
            error = f"host kernel refused fs_base {case.fs_base:#x} / gs_base {case.gs_base:#x}"
        elif status == signal.SIGILL:
            fault = "#UD"
        elif status == signal.SIGFPE:
            fault = "#DE"
        elif status in (signal.SIGSEGV, signal.SIGBUS) and trapno in _CODED:
            fault, error_code = _CODED[trapno], err & 0xFFFF
        elif status == signal.SIGSEGV:
            fault = "#GP" if si_code == SI_KERNEL else f"#PF at {fault_addr:#x}"
        elif status == signal.SIGBUS:
            fault = "#AC" if si_code == BUS_ADRALN else "#SS"
        elif status:
            error = f"host CPU raised {signal.Signals(status).name} at rip {rip:#x} (address {fault_addr:#x})"
        if fault and "ss-shadow" in case.tags and rip == CODE + len(case.code):
            # MOV SS held the single-step trap off for one instruction: the filler's UD2 after it faulted
            # instead (#UD, or #GP(0) on this host with the trap pending), with the state the instruction
            # left (RF set, as in any fault's image).
            fault, rflags, error_code = "", rflags & ~RF_FLAG, None
        if "pushf" in case.tags and not fault:
            window, ram = _untrace(case, window, ram)
        state: dict[str, object] = {}
        if case.env:
            state = dict(zip(("es", "cs", "ss", "ds", "fs", "gs"), sel, strict=True))
            if state["ss"] == 0xFFFFFFFF:
                del state["ss"]  # this kernel does not save SS in the signal context
            if "null-rpl" in case.tags:
                for name in ("es", "ds", "fs", "gs"):  # the kernel's IRET to the handler nulled them
                    del state[name]
        vector = unpack_vector(vec_raw) if case.vector is not None else None
        return Outcome(
            list(gprs),
            rip,
            rflags,
            window,
            ram,
            error=error,
            fault=fault,
            error_code=error_code,
            state=state,
            vector=vector,
        )

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc = None


def _untrace(case: Case, window: bytes, ram: bytes) -> tuple[bytes, bytes]:
    """PUSHF pushed the runner's TF (it single-steps the instruction): clear it in the pushed image."""
    slot = next(a for a in case.accesses if a.write)
    out = []
    for base, data in ((WINDOW, window), (RAM, ram)):
        buf = bytearray(data)
        at = slot.addr + 1 - base  # TF is bit 0 of the image's second byte
        if 0 <= at < len(buf):
            buf[at] &= ~(TF_FLAG >> 8)
        out.append(bytes(buf))
    return out[0], out[1]


def _failed(case: Case, why: str) -> Outcome:
    return Outcome(gprs=list(case.gprs), rip=CODE, rflags=case.rflags, window=b"", ram=b"", error=why)
