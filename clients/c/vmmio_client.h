/* C client of `vmmio serve` (transport version 1, ABI version 2): docs/transport.md is the contract.
 *
 * The control channel is a SOCK_SEQPACKET Unix socket; guest RAM and the per-vCPU run pages are
 * memfds the server passes at CREATE_VM and this client maps; a run is "write the entry on the run
 * page, ring the kick eventfd, wait for the done eventfd", with no socket traffic.
 *
 * Every function returns 0 on success, a positive status code (enum vmmio_err) when the server refused
 * the request, or a negative errno when the transport failed.
 */
#ifndef VMMIO_CLIENT_H
#define VMMIO_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#define VMMIO_TRANSPORT_VERSION 2u
#define VMMIO_ABI_VERSION 2u
#define VMMIO_RECORD_SIZE 48u
#define VMMIO_MAX_MESSAGE 65536u
#define VMMIO_MAX_VCPUS 8u
#define VMMIO_MAX_REGIONS 8u

enum vmmio_op {
    VMMIO_OP_HELLO = 1, VMMIO_OP_CREATE_VM, VMMIO_OP_GET_REGS, VMMIO_OP_SET_REGS, VMMIO_OP_GET_CONTROL,
    VMMIO_OP_SET_CONTROL, VMMIO_OP_GET_VECTOR, VMMIO_OP_SET_VECTOR, VMMIO_OP_READ_RAM, VMMIO_OP_WRITE_RAM,
    VMMIO_OP_ADD_DEVICE, VMMIO_OP_STOP, VMMIO_OP_INVALIDATE_CODE, VMMIO_OP_STATS,
};

enum vmmio_err {
    VMMIO_OK = 0, VMMIO_E_MALFORMED, VMMIO_E_VERSION, VMMIO_E_UNKNOWN_OP, VMMIO_E_STATE, VMMIO_E_VCPU,
    VMMIO_E_RANGE, VMMIO_E_INVALID, VMMIO_E_BUSY, VMMIO_E_PENDING, VMMIO_E_CAPABILITY, VMMIO_E_LIMIT,
    VMMIO_E_ENTRY, VMMIO_E_MISMATCH, VMMIO_E_RUN_STATE, VMMIO_E_BACKEND, VMMIO_E_INTERNAL,
};

enum vmmio_cap { VMMIO_CAP_VECTOR = 1, VMMIO_CAP_KERNEL_DEVICES = 2, VMMIO_CAP_STATS = 4, VMMIO_CAP_BATCHED_REP = 8 };
enum vmmio_device_kind { VMMIO_DEVICE_MMIO_MEMORY = 1, VMMIO_DEVICE_PORT_MEMORY = 2 };

enum vmmio_exit_kind { VMMIO_EXIT_MMIO = 1, VMMIO_EXIT_INOUT, VMMIO_EXIT_INST_EMUL, VMMIO_EXIT_HLT,
                       VMMIO_EXIT_SHUTDOWN, VMMIO_EXIT_SUSPENDED };
enum vmmio_entry_kind { VMMIO_ENTRY_DEFAULT = 1, VMMIO_ENTRY_FULFILL_MMIO, VMMIO_ENTRY_FULFILL_INOUT,
                        VMMIO_ENTRY_DISCARD };

typedef struct vmmio_conn {
    int fd;
    uint32_t tag;
    uint64_t caps;          /* granted at HELLO */
    char error[200];        /* text of the last refusal */
} vmmio_conn;

typedef struct vmmio_vcpu {
    uint8_t *page;          /* the run page (4 KiB, shared with the server) */
    int kick, done;         /* eventfds: client -> server, server -> client */
    uint32_t notes;         /* notes word of the last post */
} vmmio_vcpu;

typedef struct vmmio_region { uint64_t gpa, size, offset; uint8_t *host; } vmmio_region;

typedef struct vmmio_vm {
    vmmio_conn *conn;
    uint8_t *ram;           /* the RAM memfd, mapped whole; regions point into it */
    uint64_t ram_size;
    uint32_t nregions, nvcpus;
    vmmio_region regions[VMMIO_MAX_REGIONS];
    uint8_t *pages;
    uint32_t page_size;
    vmmio_vcpu vcpus[VMMIO_MAX_VCPUS];
} vmmio_vm;

typedef struct vmmio_regs { uint64_t gpr[16], rip, rflags; } vmmio_regs;

typedef struct vmmio_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type, dpl;
    uint8_t s, present, db, l, g, unusable;
} vmmio_segment;

typedef struct vmmio_control {
    uint64_t cr0, cr2, cr3, cr4, efer;
    uint32_t cpl, pkru;
    uint64_t gdt_base, idt_base;
    uint32_t gdt_limit, idt_limit;
    int has_pdptes;
    uint64_t pdptes[4];
    uint64_t xcr0;          /* bit 0 (x87) must be set */
    vmmio_segment segs[6];  /* ES CS SS DS FS GS */
    vmmio_segment tr, ldtr;
} vmmio_control;

typedef struct vmmio_exit {
    uint16_t kind;          /* enum vmmio_exit_kind */
    uint64_t gpa, data, rip;
    uint16_t port, reason;
    uint8_t size, is_write, is_in, insn_len;
    uint8_t insn[15];
} vmmio_exit;

int vmmio_connect(vmmio_conn *c, const char *path, uint64_t caps);
void vmmio_close(vmmio_conn *c);
/* One request; `reply` gets the payload (at most `cap` bytes, length in *len); descriptors passed
 * with the reply land in fds[0..*nfds). */
int vmmio_request(vmmio_conn *c, uint16_t op, uint16_t vcpu, const void *body, size_t body_len,
                  void *reply, size_t cap, size_t *len, int *fds, int max_fds, int *nfds);

int vmmio_create_vm(vmmio_conn *c, vmmio_vm *vm, const uint64_t (*regions)[2], uint32_t nregions,
                    uint32_t nvcpus);
void vmmio_destroy_vm(vmmio_vm *vm);
uint8_t *vmmio_gpa(vmmio_vm *vm, uint64_t gpa, uint64_t len);   /* NULL unless all of it is RAM */
int vmmio_add_device(vmmio_vm *vm, uint32_t kind, uint64_t base, uint64_t size);
int vmmio_get_regs(vmmio_vm *vm, uint16_t vcpu, vmmio_regs *r);
int vmmio_set_regs(vmmio_vm *vm, uint16_t vcpu, const vmmio_regs *r);
int vmmio_set_control(vmmio_vm *vm, uint16_t vcpu, const vmmio_control *ctl);
int vmmio_stop(vmmio_vm *vm, uint16_t vcpu);

/* Records: build an entry, decode an exit (VMMIO_E_ENTRY if the record is not a valid exit). */
void vmmio_entry_default(uint8_t rec[VMMIO_RECORD_SIZE]);
void vmmio_entry_fulfill_mmio(uint8_t rec[VMMIO_RECORD_SIZE], const vmmio_exit *ex, uint64_t data);
void vmmio_entry_fulfill_inout(uint8_t rec[VMMIO_RECORD_SIZE], const vmmio_exit *ex, uint32_t data);
int vmmio_exit_decode(const uint8_t rec[VMMIO_RECORD_SIZE], vmmio_exit *ex);

/* Post `entry` and wait for the answer: 0 and the exit record, or the run page's status code
 * (the page's text has the reason). */
int vmmio_run(vmmio_vcpu *v, const uint8_t entry[VMMIO_RECORD_SIZE], uint8_t exit[VMMIO_RECORD_SIZE]);
const char *vmmio_run_error(const vmmio_vcpu *v);

#endif
