/* vmmio._fastpath: the exit path of planned MOVs on Unicorn, in C (optional; docs/fastpath.md).
 *
 * One call per exit does what the Python path does for a `Direct` form (vmmio/vmm/plan.py) whose one
 * access is a planned request to userspace: complete the pending instruction (the destination register
 * of a load, RIP), run the engine to its next stop, and, when that stop is a nested page fault, check it
 * against the learned plans exactly as `Plans.get` and `Vcpu._direct` do (the control state, RIP, the
 * instruction's bytes in RAM, the translations of its code page and of its access, the effective address,
 * RFLAGS.AC, the faulting page). A hit returns the plan's slot; anything else goes back to Python, which
 * stays the definition: every check here mirrors one there, and tests run both paths.
 *
 * libunicorn is reached through the function pointers the backend hands over (no link-time dependency),
 * the unmapped-memory hook is a C function recording the fault, and the registers and control state are
 * read from the engine's context blob after one uc_context_save, as UnicornBackend.get_control does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef int (*uc_emu_start_t)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);
typedef int (*uc_reg_write_t)(void *uc, int regid, const void *value);
typedef int (*uc_context_save_t)(void *uc, void *context);

#define TABLE 64 /* learned plans, by RIP (open addressing); cleared whole when full */
#define MAX_CHECKS 32
#define MAX_KEY 1024
#define MAX_CODE 15
#define AC_FLAG (1ULL << 18)

/* cycle() results besides a slot number */
#define R_STOPPED (-1) /* the engine stopped for something else than an NPF: Python takes it from there */
#define R_NPF (-2)     /* an NPF that no learned plan covers */
#define R_NOT_RUN (-3) /* nothing was done (the slot is empty) */

typedef struct {
    const uint64_t *ptr;
    uint64_t expected;
} Check;

typedef struct {
    int used;
    uint64_t tag; /* which learn() wrote it: a handle names a slot and this */
    uint64_t rip;
    const uint8_t *code;
    uint8_t code_bytes[MAX_CODE];
    int code_len;
    int n_checks;
    Check checks[MAX_CHECKS];
    /* the memory operand: base/index GPR (-1: none), scale, displacement; base -2: a constant address */
    int base, index;
    uint64_t scale, disp, ea_mask;
    /* the planned access */
    uint64_t off, ac, fault_page;
    /* the Direct form */
    int load, is_signed, source, width, reg, high, data_kind; /* data_kind: 0 load, 1 immediate, 2 register */
    uint64_t imm, next_rip;
} Entry;

typedef struct {
    PyObject_HEAD
    void *uc;
    uc_emu_start_t emu_start;
    uc_reg_write_t reg_write;
    uc_context_save_t context_save;
    void *context;
    const uint8_t *blob;
    Py_ssize_t key_off, key_len, regs_off;
    int reg_ids[16];
    uint64_t until;
    int read_type, write_type, err_read, err_write;
    uint8_t key[MAX_KEY];
    int have_key;
    uint64_t next_tag;
    /* the first unmapped access of the last run (the hook's record) */
    int npf_seen, npf_type;
    uint64_t npf_addr;
    /* the last cycle */
    int err;
    uint64_t data;
    uint64_t hits; /* exits made here: cycles that ended at a learned plan */
    Entry table[TABLE];
} FastPath;

static bool fp_hook(void *uc, int type, uint64_t address, int size, int64_t value, void *user_data) {
    FastPath *self = (FastPath *)user_data;
    (void)uc;
    (void)size;
    (void)value;
    if (!self->npf_seen) {
        self->npf_seen = 1;
        self->npf_type = type;
        self->npf_addr = address;
    }
    return false; /* the access faults: the engine stops with RIP at the instruction */
}

/* A handle: the slot and the tag of the entry in it, so that a slot written again is never mistaken for
 * the entry a caller learned. */
static long long handle_of(const Entry *e, unsigned slot) { return (long long)(e->tag * TABLE + slot); }

static unsigned slot_of(uint64_t rip) { return (unsigned)((rip * 0x9E3779B97F4A7C15ULL) >> 58) & (TABLE - 1); }

static const uint64_t MASKS[9] = {0, 0xFFULL, 0xFFFFULL, 0, 0xFFFFFFFFULL, 0, 0, 0, ~0ULL};

static int fp_init(FastPath *self, PyObject *args, PyObject *kwds) {
    unsigned long long uc, emu_start, reg_write, context_save, context, blob, until;
    PyObject *ids;
    (void)kwds;
    if (!PyArg_ParseTuple(args, "KKKKKKnnnOKiiii", &uc, &emu_start, &reg_write, &context_save, &context, &blob,
                          &self->key_off, &self->key_len, &self->regs_off, &ids, &until, &self->read_type,
                          &self->write_type, &self->err_read, &self->err_write))
        return -1;
    if (self->key_len <= 0 || self->key_len > MAX_KEY) {
        PyErr_SetString(PyExc_ValueError, "control key length out of range");
        return -1;
    }
    PyObject *seq = PySequence_Fast(ids, "reg_ids must be a sequence");
    if (seq == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 16) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "reg_ids must name the 16 GPRs");
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        self->reg_ids[i] = (int)v;
    }
    Py_DECREF(seq);
    self->uc = (void *)(uintptr_t)uc;
    self->emu_start = (uc_emu_start_t)(uintptr_t)emu_start;
    self->reg_write = (uc_reg_write_t)(uintptr_t)reg_write;
    self->context_save = (uc_context_save_t)(uintptr_t)context_save;
    self->context = (void *)(uintptr_t)context;
    self->blob = (const uint8_t *)(uintptr_t)blob;
    self->until = until;
    self->have_key = 0;
    memset(self->table, 0, sizeof self->table);
    return 0;
}

static PyObject *fp_hook_address(FastPath *self, void *closure) {
    (void)self;
    (void)closure;
    return PyLong_FromVoidPtr((void *)fp_hook);
}

static PyObject *fp_user_data(FastPath *self, void *closure) {
    (void)closure;
    return PyLong_FromVoidPtr((void *)self);
}

static PyObject *fp_get_data(FastPath *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->data);
}

static PyObject *fp_get_hits(FastPath *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->hits);
}

static PyObject *fp_get_err(FastPath *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->err);
}

/* take_npf() -> (address, type) of the first unmapped access of the last run, or None; forgets it. */
static PyObject *fp_take_npf(FastPath *self, PyObject *unused) {
    (void)unused;
    if (!self->npf_seen) Py_RETURN_NONE;
    self->npf_seen = 0;
    return Py_BuildValue("(Ki)", (unsigned long long)self->npf_addr, self->npf_type);
}

static PyObject *fp_clear(FastPath *self, PyObject *unused) {
    (void)unused;
    memset(self->table, 0, sizeof self->table);
    self->have_key = 0;
    Py_RETURN_NONE;
}

/* learn(rip, code_addr, code, checks, ea, access, direct, key) -> slot
 *   checks: ((address of a u64, expected value), ...) the translations the plan and its access depend on
 *   ea: (base, index, scale, disp, mask); base -2: the address is `disp`
 *   access: (off, ac, fault_page)
 *   direct: (load, signed, source, width, reg, high, data_kind, imm, next_rip)
 *   key: the control-state bytes the plans hold for; another key drops every plan first
 * Returns the entry's handle, or -1 when it has more checks than an entry holds (it stays in Python). */
static PyObject *fp_learn(FastPath *self, PyObject *args) {
    unsigned long long rip, code_addr;
    Py_buffer code, key;
    PyObject *checks;
    int base, index;
    unsigned long long scale, disp, mask, off, ac, fault_page, imm, next_rip;
    int load, is_signed, source, width, reg, high, data_kind;
    if (!PyArg_ParseTuple(args, "KKy*O(iiKKK)(KKK)(iiiiiiiKK)y*", &rip, &code_addr, &code, &checks, &base, &index,
                          &scale, &disp, &mask, &off, &ac, &fault_page, &load, &is_signed, &source, &width, &reg,
                          &high, &data_kind, &imm, &next_rip, &key))
        return NULL;
    PyObject *result = NULL;
    PyObject *seq = NULL;
    if (code.len <= 0 || code.len > MAX_CODE || key.len != self->key_len || reg < 0 || reg > 15 ||
        (width != 1 && width != 2 && width != 4 && width != 8) ||
        (source != 1 && source != 2 && source != 4 && source != 8) || base < -2 || base > 15 || index < -1 ||
        index > 15) {
        PyErr_SetString(PyExc_ValueError, "learn: a field is out of range");
        goto done;
    }
    seq = PySequence_Fast(checks, "checks must be a sequence");
    if (seq == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_CHECKS) {
        result = PyLong_FromLong(-1); /* too many entries to check: the plan stays on the Python path */
        goto done;
    }
    if (!self->have_key || memcmp(self->key, key.buf, (size_t)key.len) != 0) {
        memset(self->table, 0, sizeof self->table);
        memcpy(self->key, key.buf, (size_t)key.len);
        self->have_key = 1;
    }
    unsigned s = slot_of(rip);
    unsigned probes = 0;
    while (self->table[s].used && self->table[s].rip != rip) {
        s = (s + 1) & (TABLE - 1);
        if (++probes == TABLE) {
            memset(self->table, 0, sizeof self->table);
            s = slot_of(rip);
            break;
        }
    }
    Entry e;
    memset(&e, 0, sizeof e);
    e.rip = rip;
    e.code = (const uint8_t *)(uintptr_t)code_addr;
    memcpy(e.code_bytes, code.buf, (size_t)code.len);
    e.code_len = (int)code.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long addr, expected;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KK", &addr, &expected)) goto done;
        e.checks[i].ptr = (const uint64_t *)(uintptr_t)addr;
        e.checks[i].expected = expected;
    }
    e.n_checks = (int)n;
    e.base = base;
    e.index = index;
    e.scale = scale;
    e.disp = disp;
    e.ea_mask = mask;
    e.off = off;
    e.ac = ac;
    e.fault_page = fault_page;
    e.load = load;
    e.is_signed = is_signed;
    e.source = source;
    e.width = width;
    e.reg = reg;
    e.high = high;
    e.data_kind = data_kind;
    e.imm = imm;
    e.next_rip = next_rip;
    e.used = 1;
    e.tag = ++self->next_tag;
    self->table[s] = e;
    result = PyLong_FromLongLong(handle_of(&e, s));
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&code);
    PyBuffer_Release(&key);
    return result;
}

/* The value of `reg` at `width` bytes as the CPU reads it (AH..BH for `high`). */
static uint64_t read_reg(const uint64_t *regs, int reg, int high, int width) {
    if (high) return (regs[reg] >> 8) & 0xFF;
    return regs[reg] & MASKS[width];
}

/* cycle(handle, value, count, timeout) -> handle of the next exit's plan, or R_STOPPED / R_NPF / R_NOT_RUN.
 * Completes the Direct form `handle` whose request was answered with `value` (its destination register,
 * from the registers of the last context save, and RIP), runs the engine, and matches the stop. */
static PyObject *fp_cycle(FastPath *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "cycle(handle, value, count, timeout)");
        return NULL;
    }
    long long handle = PyLong_AsLongLong(args[0]);
    uint64_t value = PyLong_AsUnsignedLongLongMask(args[1]);
    size_t count = (size_t)PyLong_AsUnsignedLongLongMask(args[2]);
    uint64_t timeout = PyLong_AsUnsignedLongLongMask(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (handle < 0) return PyLong_FromLong(R_NOT_RUN);
    const Entry *done = &self->table[handle % TABLE];
    if (!done->used || done->tag != (uint64_t)(handle / TABLE)) return PyLong_FromLong(R_NOT_RUN);
    const uint64_t *regs = (const uint64_t *)(self->blob + self->regs_off);
    if (done->load) {
        uint64_t v = value & MASKS[done->source];
        if (done->is_signed && (v >> (8 * done->source - 1)) & 1) v |= ~MASKS[done->source];
        int hw = done->reg;
        uint64_t old = regs[hw], now;
        switch (done->width) {
        case 8: now = v; break;
        case 4: now = v & 0xFFFFFFFFULL; break;
        case 2: now = (old & ~0xFFFFULL) | (v & 0xFFFF); break;
        default: now = done->high ? (old & ~0xFF00ULL) | ((v & 0xFF) << 8) : (old & ~0xFFULL) | (v & 0xFF); break;
        }
        self->reg_write(self->uc, self->reg_ids[hw], &now);
    }
    uint64_t begin = done->next_rip;
    int err;
    self->npf_seen = 0;
    Py_BEGIN_ALLOW_THREADS;
    err = self->emu_start(self->uc, begin, self->until, timeout, count);
    Py_END_ALLOW_THREADS;
    self->err = err;
    if (!self->npf_seen || (err != self->err_read && err != self->err_write) ||
        (self->npf_type != self->read_type && self->npf_type != self->write_type))
        return PyLong_FromLong(R_STOPPED);
    self->context_save(self->uc, self->context);
    if (!self->have_key || memcmp(self->blob + self->key_off, self->key, (size_t)self->key_len) != 0)
        return PyLong_FromLong(R_NPF);
    uint64_t rip = regs[16];
    unsigned s = slot_of(rip);
    for (unsigned probes = 0; probes < TABLE; probes++, s = (s + 1) & (TABLE - 1)) {
        const Entry *e = &self->table[s];
        if (!e->used) break;
        if (e->rip != rip) continue;
        if (memcmp(e->code, e->code_bytes, (size_t)e->code_len) != 0) break;
        for (int i = 0; i < e->n_checks; i++)
            if (*e->checks[i].ptr != e->checks[i].expected) return PyLong_FromLong(R_NPF);
        if ((regs[17] & AC_FLAG) != e->ac || e->fault_page != self->npf_addr >> 12) break;
        uint64_t ea;
        if (e->base == -2) {
            ea = e->disp;
        } else {
            ea = e->disp;
            if (e->base >= 0) ea += regs[e->base];
            if (e->index >= 0) ea += regs[e->index] * e->scale;
            ea &= e->ea_mask;
        }
        if (ea != e->off) break;
        if (e->data_kind == 1)
            self->data = e->imm;
        else if (e->data_kind == 2)
            self->data = read_reg(regs, e->reg, e->high, e->width);
        else
            self->data = 0;
        self->npf_seen = 0; /* taken by the hit */
        self->hits++;
        return PyLong_FromLongLong(handle_of(e, s));
    }
    return PyLong_FromLong(R_NPF);
}

static PyMethodDef fp_methods[] = {
    {"take_npf", (PyCFunction)fp_take_npf, METH_NOARGS, "The first unmapped access of the last run, or None."},
    {"clear", (PyCFunction)fp_clear, METH_NOARGS, "Forget every learned plan."},
    {"learn", (PyCFunction)fp_learn, METH_VARARGS, "Learn a planned Direct form; its slot."},
    {"cycle", (PyCFunction)(void (*)(void))fp_cycle, METH_FASTCALL, "Complete, run, match: see the module."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fp_getset[] = {
    {"hook", (getter)fp_hook_address, NULL, "Address of the C unmapped-memory hook.", NULL},
    {"user_data", (getter)fp_user_data, NULL, "The hook's user_data: this object.", NULL},
    {"data", (getter)fp_get_data, NULL, "The data of the last store exit a cycle matched.", NULL},
    {"err", (getter)fp_get_err, NULL, "uc_emu_start's result in the last cycle.", NULL},
    {"hits", (getter)fp_get_hits, NULL, "Cycles that ended at a learned plan (exits made natively).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vmmio._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The exit path of one Unicorn vCPU's planned MOVs (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fp_init,
    .tp_methods = fp_methods,
    .tp_getset = fp_getset,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "vmmio._fastpath", "The native exit path of planned MOVs (optional).", -1, NULL, NULL,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&FastPathType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(m, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(&FastPathType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "STOPPED", R_STOPPED) < 0 || PyModule_AddIntConstant(m, "NPF", R_NPF) < 0 ||
        PyModule_AddIntConstant(m, "NOT_RUN", R_NOT_RUN) < 0 || PyModule_AddIntConstant(m, "TABLE", TABLE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
