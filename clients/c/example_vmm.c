/* A small VMM in C over `vmmio serve`: the machine contract of vmmio/machine.py, with its own device
 * models (a 16550 UART on MMIO 0xD0000000 and ports 0x3F8-0x3FF, the debug exit on port 0xF4 and MMIO
 * 0xD0001000) and the memory-like test device at 0xD0010000 mapped in the kernel (no exits).
 *
 *   example_vmm SOCKET IMAGE [--user-testdev]
 *
 * runs a flat 64-bit image (hello.bin, insntest.bin) loaded at 1 MiB; --user-testdev serves the test
 * device here instead of in the kernel (every access an exit: bench/bench_service.py uses it).
 *
 * Guest UART output goes to stdout unchanged; a summary (and insntest's verdict counts) to stderr.
 * Exit status: the guest's debug-exit status (insntest: its number of failed cases), 0 after HLT,
 * 100 + n when the run failed (n: what went wrong).
 */
#define _GNU_SOURCE
#include "vmmio_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RAM_SIZE (32u << 20)
#define LOAD_ADDR 0x100000u
#define GDT_BASE 0x800u
#define PT_BASE 0x1000u
#define UART_MMIO 0xD0000000ull
#define UART_PORT 0x3F8u
#define DEBUG_EXIT_PORT 0xF4u
#define DEBUG_EXIT_MMIO 0xD0001000ull
#define TESTDEV_MMIO 0xD0010000ull
#define TESTDEV_SIZE 0x2000u

/* --- the UART: an infinitely fast transmitter; what insntest and hello need of a 16550 --- */
struct uart {
    uint8_t ier, lcr, mcr, scr, dll, dlm;
    char line[256];
    size_t len;
    unsigned pass, fail, known, skip;
};

static void uart_byte(struct uart *u, uint8_t b)
{
    putchar(b);
    if (b != '\n') {
        if (u->len < sizeof u->line - 1) u->line[u->len++] = (char)b;
        return;
    }
    u->line[u->len] = 0;
    if (!strncmp(u->line, "PASS ", 5)) u->pass++;
    else if (!strncmp(u->line, "FAIL ", 5)) u->fail++;
    else if (!strncmp(u->line, "KNOWN ", 6)) u->known++;
    else if (!strncmp(u->line, "SKIP ", 5)) u->skip++;
    u->len = 0;
}

static uint32_t uart_read(struct uart *u, unsigned reg)
{
    int dlab = u->lcr & 0x80;
    switch (reg & 7) {
    case 0: return dlab ? u->dll : 0;          /* RBR: no input */
    case 1: return dlab ? u->dlm : u->ier;
    case 2: return 0x01;                        /* IIR: no interrupt pending */
    case 3: return u->lcr;
    case 4: return u->mcr;
    case 5: return 0x60;                        /* LSR: THR empty, transmitter empty */
    case 6: return 0xB0;                        /* MSR: DCD, DSR, CTS */
    default: return u->scr;
    }
}

static void uart_write(struct uart *u, unsigned reg, uint32_t value)
{
    int dlab = u->lcr & 0x80;
    uint8_t v = (uint8_t)value;
    switch (reg & 7) {
    case 0: if (dlab) u->dll = v; else uart_byte(u, v); break;
    case 1: if (dlab) u->dlm = v; else u->ier = v & 0x0F; break;
    case 3: u->lcr = v; break;
    case 4: u->mcr = v & 0x1F; break;
    case 7: u->scr = v; break;
    default: break;
    }
}

/* --- the machine ------------------------------------------------------------------------------- */

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }  /* x86-64 host: little-endian */

static int load(vmmio_vm *vm, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    uint8_t *dst = vmmio_gpa(vm, LOAD_ADDR, RAM_SIZE - LOAD_ADDR);
    size_t n = fread(dst, 1, RAM_SIZE - LOAD_ADDR - 0x10000, f);
    fclose(f);
    if (n == 0) { fprintf(stderr, "%s: empty image\n", path); return -1; }
    static const uint64_t gdt[4] = { 0, 0x00af9a000000ffffull, 0x00cf92000000ffffull, 0x00cf9a000000ffffull };
    for (int i = 0; i < 4; i++) put64(vmmio_gpa(vm, GDT_BASE + 8 * i, 8), gdt[i]);
    /* Identity map of the first 4 GiB with 2 MiB pages: PML4 at 0x1000, PDPT at 0x2000, PDs after. */
    put64(vmmio_gpa(vm, PT_BASE, 8), (PT_BASE + 0x1000) | 7);
    for (uint64_t i = 0; i < 4; i++) {
        put64(vmmio_gpa(vm, PT_BASE + 0x1000 + 8 * i, 8), (PT_BASE + 0x2000 + 0x1000 * i) | 7);
        for (uint64_t j = 0; j < 512; j++)
            put64(vmmio_gpa(vm, PT_BASE + 0x2000 + 0x1000 * i + 8 * j, 8), ((i * 512 + j) << 21) | 0x83);
    }
    return 0;
}

static void entry_state(vmmio_control *c, vmmio_regs *r)
{
    memset(c, 0, sizeof *c);
    c->cr0 = 0x80010033;  /* PE MP ET NE WP PG */
    c->cr3 = PT_BASE;
    c->cr4 = 0x620;       /* PAE OSFXSR OSXMMEXCPT */
    c->efer = 0xD00;      /* LME LMA NXE */
    c->xcr0 = 0x7;        /* x87 SSE AVX */
    c->gdt_base = GDT_BASE;
    c->gdt_limit = 31;
    c->idt_limit = 0xFFF;
    vmmio_segment data = { .selector = 0x10, .limit = 0xFFFFFFFF, .type = 3, .s = 1, .present = 1, .db = 1, .g = 1 };
    for (int i = 0; i < 6; i++) c->segs[i] = data;
    c->segs[1] = (vmmio_segment){ .selector = 0x08, .limit = 0xFFFFFFFF, .type = 11, .s = 1, .present = 1, .l = 1, .g = 1 };
    c->tr = (vmmio_segment){ .limit = 0xFFFF, .type = 11, .present = 1 };
    c->ldtr = (vmmio_segment){ .limit = 0xFFFF, .type = 2, .unusable = 1 };
    memset(r, 0, sizeof *r);
    r->rip = LOAD_ADDR;
    r->gpr[4] = (RAM_SIZE - 16) & ~0xFull;  /* rsp */
    r->rflags = 2;
}

int main(int argc, char **argv)
{
    int user_testdev = argc == 4 && !strcmp(argv[3], "--user-testdev");
    if (argc != 3 && !user_testdev) {
        fprintf(stderr, "usage: %s SOCKET IMAGE [--user-testdev]\n", argv[0]);
        return 100;
    }
    static uint8_t testdev[TESTDEV_SIZE];
    vmmio_conn conn;
    vmmio_vm vm;
    int st = vmmio_connect(&conn, argv[1], VMMIO_CAP_KERNEL_DEVICES | VMMIO_CAP_STATS);
    if (st) { fprintf(stderr, "connect %s: %d %s\n", argv[1], st, conn.error); return 101; }
    if (!(conn.caps & VMMIO_CAP_KERNEL_DEVICES)) { fprintf(stderr, "no in-kernel devices\n"); return 101; }
    const uint64_t regions[1][2] = { { 0, RAM_SIZE } };
    if ((st = vmmio_create_vm(&conn, &vm, regions, 1, 1))) { fprintf(stderr, "create: %d %s\n", st, conn.error); return 102; }
    if (load(&vm, argv[2])) return 103;
    if (!user_testdev && (st = vmmio_add_device(&vm, VMMIO_DEVICE_MMIO_MEMORY, TESTDEV_MMIO, TESTDEV_SIZE))) {
        fprintf(stderr, "test device: %d %s\n", st, conn.error);
        return 102;
    }
    vmmio_control ctl;
    vmmio_regs regs;
    entry_state(&ctl, &regs);
    if ((st = vmmio_set_control(&vm, 0, &ctl)) || (st = vmmio_set_regs(&vm, 0, &regs))) {
        fprintf(stderr, "entry state: %d %s\n", st, conn.error);
        return 102;
    }

    struct uart uart = { 0 };
    uint8_t entry[VMMIO_RECORD_SIZE], exit_rec[VMMIO_RECORD_SIZE];
    vmmio_entry_default(entry);
    unsigned long exits = 0;
    int status = -1;
    const char *how = "exit";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (status < 0) {
        if ((st = vmmio_run(&vm.vcpus[0], entry, exit_rec))) {
            fprintf(stderr, "run: status %d: %s\n", st, vmmio_run_error(&vm.vcpus[0]));
            return 104;
        }
        exits++;
        vmmio_exit ex;
        if (vmmio_exit_decode(exit_rec, &ex)) { fprintf(stderr, "bad exit record\n"); return 105; }
        switch (ex.kind) {
        case VMMIO_EXIT_MMIO: {
            uint64_t value = ~0ull;  /* unclaimed: reads as all ones, writes are dropped */
            if (ex.gpa >= UART_MMIO && ex.gpa < UART_MMIO + 0x1000) {
                if (ex.is_write) uart_write(&uart, (unsigned)(ex.gpa - UART_MMIO), (uint32_t)ex.data);
                else value = uart_read(&uart, (unsigned)(ex.gpa - UART_MMIO));
            } else if (user_testdev && ex.gpa >= TESTDEV_MMIO && ex.gpa - TESTDEV_MMIO + ex.size <= TESTDEV_SIZE) {
                uint8_t *cell = testdev + (ex.gpa - TESTDEV_MMIO);
                if (ex.is_write) memcpy(cell, &ex.data, ex.size);  /* little-endian host */
                else { value = 0; memcpy(&value, cell, ex.size); }
            } else if (ex.gpa >= DEBUG_EXIT_MMIO && ex.gpa < DEBUG_EXIT_MMIO + 0x1000) {
                if (ex.is_write) status = (int)ex.data;
                else value = 0;
            }
            vmmio_entry_fulfill_mmio(entry, &ex, value);
            break;
        }
        case VMMIO_EXIT_INOUT: {
            uint32_t value = ~0u;
            if (ex.port >= UART_PORT && ex.port < UART_PORT + 8) {
                if (!ex.is_in) uart_write(&uart, ex.port - UART_PORT, (uint32_t)ex.data);
                else value = uart_read(&uart, ex.port - UART_PORT);
            } else if (ex.port == DEBUG_EXIT_PORT) {
                if (!ex.is_in) status = (int)ex.data;
                else value = 0;
            }
            vmmio_entry_fulfill_inout(entry, &ex, value);
            break;
        }
        case VMMIO_EXIT_SUSPENDED:
            vmmio_entry_default(entry);
            break;
        case VMMIO_EXIT_HLT:
            status = 0;
            how = "hlt";
            break;
        default:
            fflush(stdout);
            fprintf(stderr, "example_vmm: guest stopped: exit kind %u (rip %#llx, reason %u)\n", ex.kind,
                    (unsigned long long)ex.rip, ex.reason);
            return 106;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fflush(stdout);
    fprintf(stderr, "example_vmm: %s, status %d after %lu exits in %.6f s\n", how, status, exits, secs);
    uint8_t stats[32];
    size_t len = 0;
    if ((conn.caps & VMMIO_CAP_STATS) &&
        !vmmio_request(&conn, VMMIO_OP_STATS, 0, NULL, 0, stats, sizeof stats, &len, NULL, 0, NULL) && len == 32) {
        uint64_t q[4];
        memcpy(q, stats, sizeof q);
        fprintf(stderr, "example_vmm: server stats: posts %llu rejected %llu run_ns %llu serve_ns %llu\n",
                (unsigned long long)q[0], (unsigned long long)q[1], (unsigned long long)q[2], (unsigned long long)q[3]);
    }
    if (uart.pass + uart.fail + uart.known + uart.skip)
        fprintf(stderr, "example_vmm: insntest verdict: %u cases, %u passed, %u failed, %u known, %u skipped\n",
                uart.pass + uart.fail + uart.known + uart.skip, uart.pass, uart.fail, uart.known, uart.skip);
    vmmio_destroy_vm(&vm);
    vmmio_close(&conn);
    return status & 0xFF;
}
