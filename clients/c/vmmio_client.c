/* C client of `vmmio serve`: the transport of docs/transport.md, nothing else. */
#define _GNU_SOURCE
#include "vmmio_client.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HEADER_SIZE 16u
#define OFF_STATE 8u
#define OFF_STATUS 12u
#define OFF_NOTES 16u
#define OFF_ENTRY 64u
#define OFF_EXIT 128u
#define OFF_TEXT 256u
enum { ST_IDLE, ST_POSTED, ST_RUNNING, ST_DONE };

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

int vmmio_connect(vmmio_conn *c, const char *path, uint64_t caps)
{
    memset(c, 0, sizeof *c);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path) return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -errno;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = -errno;
        close(c->fd);
        return e;
    }
    uint8_t req[16], rep[32];
    put32(req, VMMIO_TRANSPORT_VERSION);
    put32(req + 4, VMMIO_TRANSPORT_VERSION);
    put64(req + 8, caps);
    size_t len;
    int st = vmmio_request(c, VMMIO_OP_HELLO, 0, req, sizeof req, rep, sizeof rep, &len, NULL, 0, NULL);
    if (st) return st;
    if (len != sizeof rep || get32(rep) != VMMIO_TRANSPORT_VERSION || get32(rep + 4) != VMMIO_ABI_VERSION)
        return VMMIO_E_VERSION;
    c->caps = get64(rep + 8);
    return 0;
}

void vmmio_close(vmmio_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

int vmmio_request(vmmio_conn *c, uint16_t op, uint16_t vcpu, const void *body, size_t body_len,
                  void *reply, size_t cap, size_t *len, int *fds, int max_fds, int *nfds)
{
    static uint8_t buf[VMMIO_MAX_MESSAGE];
    if (body_len > VMMIO_MAX_MESSAGE - HEADER_SIZE) return -EMSGSIZE;
    uint32_t tag = ++c->tag;
    memcpy(buf, "VSRQ", 4);
    put16(buf + 4, op);
    put16(buf + 6, vcpu);
    put32(buf + 8, tag);
    put32(buf + 12, 0);
    if (body_len) memcpy(buf + HEADER_SIZE, body, body_len);
    if (send(c->fd, buf, HEADER_SIZE + body_len, MSG_NOSIGNAL) < 0) return -errno;

    union { char space[CMSG_SPACE(sizeof(int) * (2 + 2 * VMMIO_MAX_VCPUS))]; struct cmsghdr align; } ctl;
    struct iovec iov = { buf, sizeof buf };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                          .msg_controllen = sizeof ctl.space };
    ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return -errno;
    int got = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
            if (fds && got < max_fds) fds[got++] = fd;
            else close(fd);
        }
    }
    if (nfds) *nfds = got;
    if (n < (ssize_t)HEADER_SIZE || memcmp(buf, "VSRP", 4) || get16(buf + 4) != op || get32(buf + 8) != tag)
        return -EPROTO;
    uint32_t status = get32(buf + 12);
    size_t payload = (size_t)n - HEADER_SIZE;
    if (status) {
        size_t t = payload < sizeof c->error - 1 ? payload : sizeof c->error - 1;
        memcpy(c->error, buf + HEADER_SIZE, t);
        c->error[t] = 0;
        return (int)status;
    }
    if (payload > cap) return -EMSGSIZE;
    if (payload) memcpy(reply, buf + HEADER_SIZE, payload);
    if (len) *len = payload;
    return 0;
}

int vmmio_create_vm(vmmio_conn *c, vmmio_vm *vm, const uint64_t (*regions)[2], uint32_t nregions,
                    uint32_t nvcpus)
{
    memset(vm, 0, sizeof *vm);
    vm->conn = c;
    if (nregions == 0 || nregions > VMMIO_MAX_REGIONS || nvcpus == 0 || nvcpus > VMMIO_MAX_VCPUS)
        return -EINVAL;
    uint8_t req[16 + 16 * VMMIO_MAX_REGIONS], rep[16 + 24 * VMMIO_MAX_REGIONS];
    put32(req, nvcpus);
    put32(req + 4, nregions);
    put32(req + 8, 1); /* unicorn */
    put32(req + 12, 0); /* default REP budget */
    for (uint32_t i = 0; i < nregions; i++) {
        put64(req + 16 + 16 * i, regions[i][0]);
        put64(req + 24 + 16 * i, regions[i][1]);
    }
    int fds[2 + 2 * VMMIO_MAX_VCPUS], nfds = 0;
    size_t len;
    int st = vmmio_request(c, VMMIO_OP_CREATE_VM, 0, req, 16 + 16 * nregions, rep, sizeof rep, &len, fds,
                           (int)(sizeof fds / sizeof fds[0]), &nfds);
    if (st) return st;
    if (nfds != (int)(2 + 2 * nvcpus) || len < 16) {
        for (int i = 0; i < nfds; i++) close(fds[i]);
        return -EPROTO;
    }
    vm->ram_size = get64(rep);
    vm->page_size = get32(rep + 8);
    vm->nregions = get32(rep + 12);
    vm->nvcpus = nvcpus;
    vm->ram = mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    vm->pages = mmap(NULL, (size_t)vm->page_size * nvcpus, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
    close(fds[0]);
    close(fds[1]);
    if (vm->ram == MAP_FAILED || vm->pages == MAP_FAILED) return -ENOMEM;
    for (uint32_t i = 0; i < vm->nregions && i < VMMIO_MAX_REGIONS; i++) {
        vmmio_region *r = &vm->regions[i];
        r->gpa = get64(rep + 16 + 24 * i);
        r->size = get64(rep + 24 + 24 * i);
        r->offset = get64(rep + 32 + 24 * i);
        r->host = vm->ram + r->offset;
    }
    for (uint32_t i = 0; i < nvcpus; i++) {
        vm->vcpus[i].page = vm->pages + (size_t)vm->page_size * i;
        vm->vcpus[i].kick = fds[2 + 2 * i];
        vm->vcpus[i].done = fds[3 + 2 * i];
    }
    return 0;
}

void vmmio_destroy_vm(vmmio_vm *vm)
{
    for (uint32_t i = 0; i < vm->nvcpus; i++) {
        close(vm->vcpus[i].kick);
        close(vm->vcpus[i].done);
    }
    if (vm->ram && vm->ram != MAP_FAILED) munmap(vm->ram, vm->ram_size);
    if (vm->pages && vm->pages != MAP_FAILED) munmap(vm->pages, (size_t)vm->page_size * vm->nvcpus);
    vm->nvcpus = 0;
}

uint8_t *vmmio_gpa(vmmio_vm *vm, uint64_t gpa, uint64_t len)
{
    for (uint32_t i = 0; i < vm->nregions; i++) {
        vmmio_region *r = &vm->regions[i];
        if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len) return r->host + (gpa - r->gpa);
    }
    return NULL;
}

int vmmio_add_device(vmmio_vm *vm, uint32_t kind, uint64_t base, uint64_t size)
{
    uint8_t req[24];
    put32(req, kind);
    put32(req + 4, 0);
    put64(req + 8, base);
    put64(req + 16, size);
    return vmmio_request(vm->conn, VMMIO_OP_ADD_DEVICE, 0, req, sizeof req, NULL, 0, NULL, NULL, 0, NULL);
}

int vmmio_get_regs(vmmio_vm *vm, uint16_t vcpu, vmmio_regs *r)
{
    uint8_t rep[144];
    size_t len;
    int st = vmmio_request(vm->conn, VMMIO_OP_GET_REGS, vcpu, NULL, 0, rep, sizeof rep, &len, NULL, 0, NULL);
    if (st) return st;
    if (len != sizeof rep) return -EPROTO;
    for (int i = 0; i < 16; i++) r->gpr[i] = get64(rep + 8 * i);
    r->rip = get64(rep + 128);
    r->rflags = get64(rep + 136);
    return 0;
}

int vmmio_set_regs(vmmio_vm *vm, uint16_t vcpu, const vmmio_regs *r)
{
    uint8_t req[144];
    for (int i = 0; i < 16; i++) put64(req + 8 * i, r->gpr[i]);
    put64(req + 128, r->rip);
    put64(req + 136, r->rflags);
    return vmmio_request(vm->conn, VMMIO_OP_SET_REGS, vcpu, req, sizeof req, NULL, 0, NULL, NULL, 0, NULL);
}

static void put_segment(uint8_t *p, const vmmio_segment *s)
{
    memset(p, 0, 24);
    put64(p, s->base);
    put32(p + 8, s->limit);
    put16(p + 12, s->selector);
    p[14] = s->type;
    p[15] = s->dpl;
    const uint8_t bits[6] = { s->s, s->present, s->db, s->l, s->g, s->unusable };
    for (int i = 0; i < 6; i++) p[16] |= (uint8_t)((bits[i] ? 1 : 0) << i);
}

int vmmio_set_control(vmmio_vm *vm, uint16_t vcpu, const vmmio_control *ctl)
{
    uint8_t req[128 + 8 * 24];
    memset(req, 0, sizeof req);
    put64(req, ctl->cr0);
    put64(req + 8, ctl->cr2);
    put64(req + 16, ctl->cr3);
    put64(req + 24, ctl->cr4);
    put64(req + 32, ctl->efer);
    put32(req + 40, ctl->cpl);
    put32(req + 44, ctl->pkru);
    put64(req + 48, ctl->gdt_base);
    put32(req + 56, ctl->gdt_limit);
    put64(req + 64, ctl->idt_base);
    put32(req + 72, ctl->idt_limit);
    put32(req + 80, ctl->has_pdptes ? 1 : 0);
    for (int i = 0; ctl->has_pdptes && i < 4; i++) put64(req + 88 + 8 * i, ctl->pdptes[i]);
    put64(req + 120, ctl->xcr0);
    for (int i = 0; i < 6; i++) put_segment(req + 128 + 24 * i, &ctl->segs[i]);
    put_segment(req + 128 + 24 * 6, &ctl->tr);
    put_segment(req + 128 + 24 * 7, &ctl->ldtr);
    return vmmio_request(vm->conn, VMMIO_OP_SET_CONTROL, vcpu, req, sizeof req, NULL, 0, NULL, NULL, 0, NULL);
}

int vmmio_stop(vmmio_vm *vm, uint16_t vcpu)
{
    return vmmio_request(vm->conn, VMMIO_OP_STOP, vcpu, NULL, 0, NULL, 0, NULL, NULL, 0, NULL);
}

static void record_header(uint8_t rec[VMMIO_RECORD_SIZE], uint16_t kind)
{
    memset(rec, 0, VMMIO_RECORD_SIZE);
    memcpy(rec, "VMEN", 4);
    put16(rec + 4, VMMIO_ABI_VERSION);
    put16(rec + 6, kind);
}

void vmmio_entry_default(uint8_t rec[VMMIO_RECORD_SIZE]) { record_header(rec, VMMIO_ENTRY_DEFAULT); }

void vmmio_entry_fulfill_mmio(uint8_t rec[VMMIO_RECORD_SIZE], const vmmio_exit *ex, uint64_t data)
{
    record_header(rec, VMMIO_ENTRY_FULFILL_MMIO);
    uint64_t mask = ex->size == 8 ? ~0ull : (1ull << (8 * ex->size)) - 1;
    put64(rec + 16, ex->gpa);
    put64(rec + 24, ex->is_write ? ex->data : data & mask);
    rec[32] = ex->size;
    rec[33] = ex->is_write;
}

void vmmio_entry_fulfill_inout(uint8_t rec[VMMIO_RECORD_SIZE], const vmmio_exit *ex, uint32_t data)
{
    record_header(rec, VMMIO_ENTRY_FULFILL_INOUT);
    uint32_t mask = ex->size == 4 ? ~0u : (1u << (8 * ex->size)) - 1;
    put16(rec + 16, ex->port);
    rec[18] = ex->size;
    rec[19] = ex->is_in;
    put32(rec + 20, ex->is_in ? data & mask : (uint32_t)ex->data);
}

int vmmio_exit_decode(const uint8_t rec[VMMIO_RECORD_SIZE], vmmio_exit *ex)
{
    memset(ex, 0, sizeof *ex);
    if (memcmp(rec, "VMEX", 4) || get16(rec + 4) != VMMIO_ABI_VERSION) return VMMIO_E_ENTRY;
    ex->kind = get16(rec + 6);
    switch (ex->kind) {
    case VMMIO_EXIT_MMIO:
        ex->gpa = get64(rec + 16);
        ex->data = get64(rec + 24);
        ex->size = rec[32];
        ex->is_write = rec[33];
        return ex->size == 1 || ex->size == 2 || ex->size == 4 || ex->size == 8 ? 0 : VMMIO_E_ENTRY;
    case VMMIO_EXIT_INOUT:
        ex->port = get16(rec + 16);
        ex->size = rec[18];
        ex->is_in = rec[19];
        ex->data = get32(rec + 20);
        return ex->size == 1 || ex->size == 2 || ex->size == 4 ? 0 : VMMIO_E_ENTRY;
    case VMMIO_EXIT_INST_EMUL:
        ex->rip = get64(rec + 16);
        ex->reason = get16(rec + 24);
        ex->insn_len = rec[26] <= 15 ? rec[26] : 15;
        memcpy(ex->insn, rec + 32, 15);
        return 0;
    case VMMIO_EXIT_SHUTDOWN:
        ex->reason = get16(rec + 16);
        return 0;
    case VMMIO_EXIT_HLT:
    case VMMIO_EXIT_SUSPENDED:
        return 0;
    default:
        return VMMIO_E_ENTRY;
    }
}

int vmmio_run(vmmio_vcpu *v, const uint8_t entry[VMMIO_RECORD_SIZE], uint8_t exit[VMMIO_RECORD_SIZE])
{
    _Atomic uint32_t *state = (_Atomic uint32_t *)(void *)(v->page + OFF_STATE);
    memcpy(v->page + OFF_ENTRY, entry, VMMIO_RECORD_SIZE);
    atomic_store_explicit(state, ST_POSTED, memory_order_release);  /* the entry is visible first */
    uint64_t one = 1, count;
    if (write(v->kick, &one, sizeof one) != (ssize_t)sizeof one) return -errno;
    while (atomic_load_explicit(state, memory_order_acquire) != ST_DONE) {
        /* A count left from an earlier ring only makes this loop once more. */
        if (read(v->done, &count, sizeof count) < 0 && errno != EINTR) return -errno;
    }
    uint32_t status = get32(v->page + OFF_STATUS);
    v->notes = get32(v->page + OFF_NOTES);
    if (status == 0) memcpy(exit, v->page + OFF_EXIT, VMMIO_RECORD_SIZE);
    return (int)status;
}

const char *vmmio_run_error(const vmmio_vcpu *v) { return (const char *)v->page + OFF_TEXT; }
