/* insntest: a self-checking test of the instruction forms vmmio's kernel emulates.
 *
 * Every case runs one instruction (or a short sequence) twice from identical register, flag and memory
 * states: once with its memory operand on the test device (MMIO at 0xD0010000, so the access faults into
 * vmmio's kernel and is emulated) and once with the operand in an identical RAM buffer (executed by the
 * backend itself, the reference). It then compares the destination registers, the status flags, any
 * exception, and the bytes of both buffers, and prints one line per case through the MMIO UART:
 *
 *     PASS <name> <digest>       the two runs agree (digest: 32 bits of FNV-1a over the result)
 *     FAIL <name> <digest>       they differ; indented lines below say where
 *     KNOWN <name> ...           a failure of vmmio's kernel that is known and analysed (not counted)
 *     SKIP <name>                (native build only) a case that needs the vmmio machine's devices
 *
 * A second part checks that faults the kernel raises while emulating reach this guest's IDT with the
 * right vector, error code, CR2 and RIP (#PF, #GP, #SS, #UD). The exit status is the number of failures.
 *
 * Built with `as --defsym NATIVE=1` the same cases run as a Linux x86-64 program, both runs in RAM, on
 * the host CPU: its digests are the hardware's answer for each case (see tests/test_guests.py).
 *
 * Memory the guest uses besides its image (guest-physical = virtual through the identity map):
 *   ARAM 0x200000 (8 KiB)  RAM twin of the test device      BRAM 0x210000 (8 KiB) second operand (RAM)
 *   0x220000-0x222fff      page tables of the window W      0x230000-0x243fff pages mapped in W / W2
 *   0x250000 IDT, 0x251000 TSS, 0x258000 top of the IST stack used by every exception
 * W = 0x80_0000_0000 (PML4 slot 1, 4 KiB pages), W2 = W + 0x10000 (its all-RAM mirror):
 *   W+0x0000 RAM    W+0x1000 testdev page 0   W+0x2000 testdev page 1   W+0x3000 RAM
 *   W+0x4000 not present   W+0x5000 RAM read-only   W+0x6000 testdev page 0 read-only
 *   W2+0x0000..0x3fff RAM   W+0x8000 and W2+0x8000: the .riprel code (RIP-relative cases)
 */
    .intel_syntax noprefix
    .code64

    .equ UART_MMIO, 0xD0000000
    .equ TESTDEV, 0xD0010000
    .equ ARAM, 0x200000
    .equ BRAM, 0x210000
    .equ PDPT_W, 0x220000
    .equ PD_W, 0x221000
    .equ PT_W, 0x222000
    .equ WRAM0, 0x230000            /* W+0x0000 */
    .equ WRAM1, 0x231000            /* W+0x3000 */
    .equ WRO, 0x232000              /* W+0x5000, read-only */
    .equ W2RAM, 0x240000            /* W2+0x0000 .. W2+0x3fff */
    .equ IDT, 0x250000
    .equ TSS, 0x251000
    .equ IST_TOP, 0x258000
    .equ SCRATCH, 0x200000          /* native: everything above is one anonymous mapping */
    .equ SCRATCH_SIZE, 0x60000
    .equ PML4, 0x1000               /* the machine's identity-map PML4 */
    .equ W, 0x8000000000
    .equ WSTEP, 0x10000
    .equ W2, W + WSTEP

    .equ WIN, 256                   /* bytes of each buffer initialised and compared per case */

    /* Flags: what a case starts with by default (CF, AF, SF set), and the compared masks. */
    .equ CF, 0x1
    .equ PF, 0x4
    .equ AF, 0x10
    .equ ZF, 0x40
    .equ SF, 0x80
    .equ DF, 0x400
    .equ OF, 0x800
    .equ FL_IN, 0x2 | CF | AF | SF
    .equ FM_ALL, CF | PF | AF | ZF | SF | OF | DF
    .equ FM_LOGIC, FM_ALL & ~AF     /* AND OR XOR TEST: AF undefined (SDM) */
    .equ FM_BT, CF | ZF | DF        /* BT*: OF SF AF PF undefined; ZF unaffected */

    /* Register bits for the a= / b= masks: the register holds an offset into buffer A / B. */
    .equ _RAX, 1 << 0
    .equ _RCX, 1 << 1
    .equ _RDX, 1 << 2
    .equ _RBX, 1 << 3
    .equ _RSP, 1 << 4
    .equ _RBP, 1 << 5
    .equ _RSI, 1 << 6
    .equ _RDI, 1 << 7
    .equ _R8, 1 << 8
    .equ _R9, 1 << 9
    .equ _R10, 1 << 10
    .equ _R11, 1 << 11
    .equ _R12, 1 << 12
    .equ _R13, 1 << 13
    .equ _R14, 1 << 14
    .equ _R15, 1 << 15

    .equ OPT_FSGS, 1                /* FS and GS bases = buffer A's base during the case */
    .equ OPT_NONATIVE, 2            /* port I/O: cannot run as a Linux program */
    .equ OPT_NOKVM, 4               /* Linux's emulator cannot emulate it: skipped under KVM (guest build) */

    /* need=: the CPUID feature a case's instruction needs (leaf code << 8 | register << 6 | bit; leaf
     * codes 1 and 7 are those leaves, 0x81 is 0x80000001; registers 0-3 are EAX-EDX). A CPU without it
     * makes the case a SKIP: insntest compares the kernel with the CPU, not what no CPU does. */
    .equ NEED_cx16, 1 << 8 | 2 << 6 | 13
    .equ NEED_sse4_2, 1 << 8 | 2 << 6 | 20
    .equ NEED_movbe, 1 << 8 | 2 << 6 | 22
    .equ NEED_popcnt, 1 << 8 | 2 << 6 | 23
    .equ NEED_bmi1, 7 << 8 | 1 << 6 | 3
    .equ NEED_bmi2, 7 << 8 | 1 << 6 | 8
    .equ NEED_adx, 7 << 8 | 1 << 6 | 19
    .equ NEED_abm, 0x81 << 8 | 2 << 6 | 5

    /* Default register values: distinct, high halves set so that zero/sign-extension shows. */
    .equ D_RAX, 0x0123456789ABCDEF
    .equ D_RCX, 0xFEDCBA9876543210
    .equ D_RDX, 0x8877665544332211
    .equ D_RBX, 0x1122334455667788
    .equ D_RSP, 0x0F0E0D0C0B0A0908  /* no case uses the stack unless it sets RSP */
    .equ D_RBP, 0x5A5A5A5AA5A5A5A5
    .equ D_RSI, 0x13579BDF02468ACE
    .equ D_RDI, 0xECA86420FDB97531
    .equ D_R8, 0x08F8E8D8C8B8A898
    .equ D_R9, 0x7766554433221100
    .equ D_R10, 0x1010101010101010
    .equ D_R11, 0xB0B1B2B3B4B5B6B7
    .equ D_R12, 0x00000000FFFFFFFF
    .equ D_R13, 0xFFFFFFFF00000000
    .equ D_R14, 0x8000000000000001
    .equ D_R15, 0x7FFFFFFFFFFFFFFF

    /* Case record (see CASE). */
    .equ C_NAME, 0
    .equ C_BODYM, 8
    .equ C_BODYR, 16
    .equ C_AM, 24
    .equ C_AR, 32
    .equ C_AMASK, 40
    .equ C_BMASK, 48
    .equ C_FLAGS, 56
    .equ C_FMASK, 64
    .equ C_WIN, 72
    .equ C_BWIN, 80
    .equ C_PAOFF, 88
    .equ C_PAVAL, 96
    .equ C_PBOFF, 104
    .equ C_PBVAL, 112
    .equ C_OPT, 120
    .equ C_KNOWN, 128
    .equ C_NEED, 136
    .equ C_NEEDNAME, 144
    .equ C_REGS, 152
    .equ CASE_SIZE, C_REGS + 16 * 8

    /* Result of one run: normalised registers, masked flags, exception, both buffers. */
    .equ R_REGS, 0
    .equ R_FLAGS, 128
    .equ R_VEC, 136
    .equ R_EC, 144
    .equ R_MEMA, 152
    .equ R_MEMB, R_MEMA + WIN
    .equ RES_SIZE, R_MEMB + WIN

/* CASE name, insn [, key=value ...]: one MMIO-vs-RAM case.
 *   insn        the instruction(s) under test (';' separates several); ABASE is the base of buffer A
 *               in the run being assembled (for moffs and 32-bit-address forms)
 *   ram=        a different instruction for the RAM run (an equivalent encoding the reference accepts)
 *   a= / b=     registers (_RBX|...) holding offsets into buffer A / B; the runner adds the base and
 *               subtracts it again from the result, so both runs compare equal
 *   am= / ar=   base of A in the MMIO / RAM run (default: the test device / its RAM twin)
 *   win= bwin=  offset of the WIN-byte window of A / B that is initialised and compared
 *   paoff= paval= pboff= pbval=   a qword patched into window A / B after the pattern
 *   flags= mask=  RFLAGS at entry; flags compared (undefined flags are left out)
 *   opt=        OPT_* bits;  known="why"  a known, analysed failure of vmmio (reported, not counted)
 *   need=       a CPUID feature (movbe, popcnt, ...: NEED_*) without which the case is skipped
 *   rip=1       RIP-relative case: the body goes to .riprel and runs at W+0x8000 / W2+0x8000
 *   rax= ... r15=  register values (offsets for the registers named in a= / b=)
 */
    .macro CASE name, insn, ram, a=0, b=0, am=TESTDEV, ar=ARAM, win=0x100, bwin=0x100, paoff=-1, paval=0, pboff=-1, pbval=0, flags=FL_IN, mask=FM_ALL, opt=0, known, need, rip=0, rax=D_RAX, rcx=D_RCX, rdx=D_RDX, rbx=D_RBX, rsp=D_RSP, rbp=D_RBP, rsi=D_RSI, rdi=D_RDI, r8=D_R8, r9=D_R9, r10=D_R10, r11=D_R11, r12=D_R12, r13=D_R13, r14=D_R14, r15=D_R15
    .pushsection .rodata.names, "a"
case_name\@: .asciz "\name"
    .ifnb \known
case_known\@: .asciz "\known"
    .endif
    .ifnb \need
case_need\@: .asciz "\need"
    .endif
    .popsection
    .if \rip
    .pushsection .riprel, "ax"
case_bm\@:
    \insn
    jmp qword ptr [rip + riprel_done]
    .popsection
    .set case_br\@, case_bm\@ + WSTEP
    .else
    .pushsection .text.bodies, "ax"
    .set ABASE, \am
case_bm\@:
    \insn
    jmp body_done
    .set ABASE, \ar
case_br\@:
    .ifnb \ram
    \ram
    .else
    \insn
    .endif
    jmp body_done
    .popsection
    .endif
    .pushsection .data.cases, "aw"
    .quad case_name\@, case_bm\@, case_br\@, \am, \ar, \a, \b, \flags, \mask, \win, \bwin
    .quad \paoff, \paval, \pboff, \pbval, \opt
    .ifnb \known
    .quad case_known\@
    .else
    .quad 0
    .endif
    .ifnb \need
    .quad NEED_\need, case_need\@
    .else
    .quad 0, 0
    .endif
    .quad \rax, \rcx, \rdx, \rbx, \rsp, \rbp, \rsi, \rdi, \r8, \r9, \r10, \r11, \r12, \r13, \r14, \r15
    .popsection
    .endm

/* --- entry --------------------------------------------------------------------------------------- */

    .section .text.start, "ax"
    .globl _start
_start:
    cld
    call platform_setup
    lea rsi, [rip + s_banner]
    call puts
    call run_cases
    call run_xtests
    call run_ctl_xtests
    call run_int_xtests
    call run_vxtests
    lea rsi, [rip + s_sum1]
    call puts
    mov rax, [rip + ncases]
    add rax, [rip + nxtests]
    call putdec
    lea rsi, [rip + s_sum2]
    call puts
    mov rax, [rip + nfail]
    call putdec
    lea rsi, [rip + s_sum3]
    call puts
    mov rax, [rip + nknown]
    call putdec
    lea rsi, [rip + s_sum4]
    call puts
    mov rax, [rip + nfail]
    jmp platform_exit

    .text

/* --- platform: the vmmio machine, or Linux ----------------------------------------------------------- */

.ifndef NATIVE

platform_setup:
    /* Own GDT (the machine's four descriptors plus a TSS) so every exception can use IST1. */
    lgdt [rip + gdtr]
    mov rdi, TSS
    xor eax, eax
    mov ecx, 104 / 8
1:  mov [rdi], rax
    add rdi, 8
    dec ecx
    jnz 1b
    mov rdi, TSS
    mov rax, IST_TOP
    mov [rdi + 36], rax             /* IST1 */
    mov word ptr [rdi + 102], 104   /* no I/O bitmap */
    mov ax, 0x20
    ltr ax

    /* IDT: 32 interrupt gates, selector 0x08, IST1. */
    mov rdi, IDT
    lea rsi, [rip + isr_stubs]
    xor ecx, ecx
2:  mov rax, rsi
    and eax, 0xFFFF
    or rax, 0x08 << 16
    mov rdx, 0x8E01                 /* P, DPL 0, 64-bit interrupt gate; IST 1 */
    shl rdx, 32
    or rax, rdx
    mov rdx, rsi
    shr rdx, 16
    and edx, 0xFFFF
    shl rdx, 48
    or rax, rdx
    mov [rdi], rax
    mov rdx, rsi
    shr rdx, 32
    mov [rdi + 8], rdx
    add rdi, 16
    add rsi, 16
    inc ecx
    cmp ecx, 32
    jb 2b
    lidt [rip + idtr]

    /* The window W: PML4[1] -> PDPT_W -> PD_W -> PT_W, entries from pte_table. */
    mov rdi, PDPT_W
    xor eax, eax
    mov ecx, 3 * 4096 / 8
3:  mov [rdi], rax
    add rdi, 8
    dec ecx
    jnz 3b
    mov rdi, PDPT_W
    mov qword ptr [rdi], PD_W | 3
    mov rdi, PD_W
    mov qword ptr [rdi], PT_W | 3
    lea rsi, [rip + pte_table]
4:  mov rcx, [rsi]
    cmp rcx, -1
    je 5f
    mov rax, [rsi + 8]
    mov rdi, PT_W
    mov [rdi + rcx * 8], rax
    add rsi, 16
    jmp 4b
5:  mov rdi, PML4
    mov qword ptr [rdi + 8], PDPT_W | 3
    mov rax, cr3
    mov cr3, rax                    /* flush the TLB */
    ret

/* putc(al): THR of the MMIO UART. This machine's UART is always ready, so no LSR poll (hello shows it). */
putc:
    push rdx
    mov rdx, UART_MMIO
    mov [rdx], al
    pop rdx
    ret

/* Exit with status rax through the debug-exit port (32-bit OUT: the status is the whole value). */
platform_exit:
    out 0xF4, eax
    hlt
    jmp platform_exit

/* set_fsgs(rax): FS.base = GS.base = rax. */
set_fsgs:
    push rcx
    push rdx
    push rax
    mov rdx, rax
    shr rdx, 32
    mov ecx, 0xC0000100
    wrmsr
    mov rax, [rsp]
    mov ecx, 0xC0000101
    wrmsr
    pop rax
    pop rdx
    pop rcx
    ret

    .include "isr_stubs.inc"

/* The handler records vector, error code, CR2 and RIP. If a test expects an exception (exc_skip != 0)
 * it resumes after the faulting instruction; while a case body runs (recover_rip != 0) it keeps the
 * body's registers as the run's result and returns to the runner; anything else is fatal. */
isr_common:
    mov [rip + isr_rax], rax
    mov rax, [rsp]
    mov [rip + exc_vec], rax
    mov rax, [rsp + 8]
    mov [rip + exc_ec], rax
    mov rax, [rsp + 16]
    mov [rip + exc_rip], rax
    mov rax, cr2
    mov [rip + exc_cr2], rax
    inc qword ptr [rip + exc_count]
    mov rax, [rip + exc_skip]
    test rax, rax
    jz 1f
    add [rsp + 16], rax
    mov rax, [rip + isr_rax]
    add rsp, 16
    iretq
1:  mov rax, [rip + recover_rip]
    test rax, rax
    jz isr_fatal
    mov [rip + out_regs + 8 * 1], rcx
    mov [rip + out_regs + 8 * 2], rdx
    mov [rip + out_regs + 8 * 3], rbx
    mov [rip + out_regs + 8 * 5], rbp
    mov [rip + out_regs + 8 * 6], rsi
    mov [rip + out_regs + 8 * 7], rdi
    mov [rip + out_regs + 8 * 8], r8
    mov [rip + out_regs + 8 * 9], r9
    mov [rip + out_regs + 8 * 10], r10
    mov [rip + out_regs + 8 * 11], r11
    mov [rip + out_regs + 8 * 12], r12
    mov [rip + out_regs + 8 * 13], r13
    mov [rip + out_regs + 8 * 14], r14
    mov [rip + out_regs + 8 * 15], r15
    mov rcx, [rip + isr_rax]
    mov [rip + out_regs], rcx
    mov rcx, [rsp + 40]
    mov [rip + out_regs + 8 * 4], rcx
    mov rcx, [rsp + 32]
    mov [rip + out_flags], rcx
    mov [rsp + 16], rax             /* resume at the runner's recovery point */
    mov rax, [rip + framework_rsp]
    mov [rsp + 40], rax
    mov qword ptr [rsp + 32], 2
    add rsp, 16
    iretq
isr_fatal:
    mov rsp, IST_TOP - 256
    lea rsi, [rip + s_fatal]
    call puts
    mov rax, [rip + exc_vec]
    call putdec
    lea rsi, [rip + s_ec]
    call puts
    mov rax, [rip + exc_ec]
    mov ecx, 4
    call puthex
    lea rsi, [rip + s_rip]
    call puts
    mov rax, [rip + exc_rip]
    mov ecx, 16
    call puthex
    mov al, 10
    call putc
    mov eax, 0xEE
    jmp platform_exit

.else /* NATIVE */

    .equ SYS_WRITE, 1
    .equ SYS_MMAP, 9
    .equ SYS_ARCH_PRCTL, 158
    .equ SYS_EXIT_GROUP, 231
    .equ ARCH_SET_GS, 0x1001
    .equ ARCH_SET_FS, 0x1002

/* mmap_fixed(rdi = address, rsi = length, rdx = prot): anonymous private memory at that address. */
mmap_fixed:
    mov r10, 0x22 | 0x100000        /* MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE */
    mov r8, -1
    xor r9d, r9d
    push rdi
    mov eax, SYS_MMAP
    syscall
    pop rdi
    cmp rax, rdi
    jne 1f
    ret
1:  lea rsi, [rip + s_mmap]
    call puts
    mov eax, 0xEE
    jmp platform_exit

platform_setup:
    mov rdi, SCRATCH
    mov rsi, SCRATCH_SIZE
    mov edx, 3
    call mmap_fixed
    mov rdi, TESTDEV
    mov esi, 0x2000
    mov edx, 3
    call mmap_fixed
    mov rdi, W
    mov esi, 0x4000
    mov edx, 3
    call mmap_fixed
    mov rdi, W2
    mov esi, 0x4000
    mov edx, 3
    call mmap_fixed
    /* The .riprel code is loaded at W+0x8000 by the kernel; copy it to W2+0x8000. */
    mov rdi, W2 + 0x8000
    lea rsi, [rip + riprel_size]
    add rsi, 0xFFF
    and rsi, -0x1000
    mov edx, 7
    call mmap_fixed
    mov rdi, W2 + 0x8000
    mov rsi, W + 0x8000
    lea rcx, [rip + riprel_size]
    rep movsb
    ret

/* putc(al): line-buffered write(1, ...). */
putc:
    push rcx
    push rdx
    push rdi
    push rsi
    push r11
    push rax
    mov rdx, [rip + nat_len]
    lea rdi, [rip + nat_buf]
    mov [rdi + rdx], al
    inc rdx
    mov [rip + nat_len], rdx
    cmp al, 10
    je 1f
    cmp rdx, 200
    jb 2f
1:  mov rsi, rdi
    mov edi, 1
    mov eax, SYS_WRITE
    syscall
    mov qword ptr [rip + nat_len], 0
2:  pop rax
    pop r11
    pop rsi
    pop rdi
    pop rdx
    pop rcx
    ret

platform_exit:
    mov rdi, rax
    mov eax, SYS_EXIT_GROUP
    syscall
    hlt

set_fsgs:
    push rcx
    push rdx
    push rsi
    push rdi
    push r11
    push rax
    mov rsi, rax
    mov edi, ARCH_SET_FS
    mov eax, SYS_ARCH_PRCTL
    syscall
    mov rsi, [rsp]
    mov edi, ARCH_SET_GS
    mov eax, SYS_ARCH_PRCTL
    syscall
    pop rax
    pop r11
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    ret

.endif

/* --- output helpers (clobber nothing but flags, except where said) --------------------------------- */

/* puts(rsi = NUL-terminated string) */
puts:
    push rax
    push rsi
1:  mov al, [rsi]
    test al, al
    jz 2f
    call putc
    inc rsi
    jmp 1b
2:  pop rsi
    pop rax
    ret

/* puthex(rax = value, ecx = digits) */
puthex:
    push rax
    push rcx
    push rdx
    mov rdx, rax
1:  dec ecx
    js 2f
    mov rax, rdx
    shl ecx, 2
    shr rax, cl
    shr ecx, 2
    and eax, 0xF
    cmp al, 10
    jb 3f
    add al, 'a' - '0' - 10
3:  add al, '0'
    call putc
    jmp 1b
2:  pop rdx
    pop rcx
    pop rax
    ret

/* putdec(rax = unsigned value) */
putdec:
    push rax
    push rcx
    push rdx
    push rdi
    sub rsp, 32
    lea rdi, [rsp + 31]
    mov byte ptr [rdi], 0
    mov ecx, 10
1:  xor edx, edx
    div rcx
    add dl, '0'
    dec rdi
    mov [rdi], dl
    test rax, rax
    jnz 1b
    push rsi
    mov rsi, rdi
    call puts
    pop rsi
    add rsp, 32
    pop rdi
    pop rdx
    pop rcx
    pop rax
    ret

/* --- the MMIO-vs-RAM runner -------------------------------------------------------------------------- */

run_cases:
    lea rax, [rip + cases_start]
    mov [rip + cur_case], rax
1:  mov rax, [rip + cur_case]
    lea rdx, [rip + cases_end]
    cmp rax, rdx
    jae 2f
    call run_case
    add qword ptr [rip + cur_case], CASE_SIZE
    jmp 1b
2:  ret

run_case:
    inc qword ptr [rip + ncases]
    call make_pattern
    call skip_reason
    test rsi, rsi
    jz 2f
    push rdx
    push rsi
    lea rsi, [rip + s_skip]
    call puts
    mov rbx, [rip + cur_case]
    mov rsi, [rbx + C_NAME]
    call puts
    pop rsi
    call puts
    pop rsi
    test rsi, rsi
    jz 1f
    call puts
1:  mov al, 10
    call putc
    ret
2:
.ifdef NATIVE
    mov rbx, [rip + cur_case]
    test qword ptr [rbx + C_OPT], OPT_NONATIVE
    jz 1f
    lea rsi, [rip + s_skip]
    call puts
    mov rsi, [rbx + C_NAME]
    call puts
    mov al, 10
    call putc
    ret
1:
.endif
    mov qword ptr [rip + cur_run], 0
    call run_once
    mov qword ptr [rip + cur_run], 1
    call run_once
    jmp report_case

/* skip_reason: why the current case cannot run here, or rsi = 0: rsi = " cpu lacks " and rdx = the
 * feature's name, or rsi = " not emulated by Linux's KVM emulator" (and rdx = 0). Clobbers rax, rbx,
 * rcx, rdi. */
skip_reason:
    xor edx, edx
    mov rdi, [rip + cur_case]
    mov rdi, [rdi + C_NEED]
    test rdi, rdi
    jz 2f
    mov eax, edi
    shr eax, 8
    cmp eax, 0x80
    jb 1f
    and eax, 0x7F
    or eax, 0x80000000
1:  xor ecx, ecx
    cpuid
    mov [rip + cpuid_out], eax
    mov [rip + cpuid_out + 4], ebx
    mov [rip + cpuid_out + 8], ecx
    mov [rip + cpuid_out + 12], edx
    xor edx, edx
    mov ecx, edi
    shr ecx, 6
    and ecx, 3
    lea rax, [rip + cpuid_out]
    mov eax, [rax + rcx * 4]
    mov ecx, edi
    and ecx, 0x3F
    bt eax, ecx
    jc 2f
    mov rdi, [rip + cur_case]
    mov rdx, [rdi + C_NEEDNAME]
    lea rsi, [rip + s_nocpu]
    ret
2:
.ifndef NATIVE
    mov rdi, [rip + cur_case]
    test qword ptr [rdi + C_OPT], OPT_NOKVM
    jz 3f
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    xor edx, edx
    cmp ebx, 0x4B4D564B             /* "KVMKVMKVM": the KVM reference */
    jne 3f
    cmp ecx, 0x564B4D56
    jne 3f
    lea rsi, [rip + s_nokvm]
    ret
3:
.endif
    xor esi, esi
    xor edx, edx
    ret

/* A per-case pseudo-random pattern (xorshift64), the same for both runs and both buffers. */
make_pattern:
    mov rax, [rip + ncases]
    mov rdx, 0x9E3779B97F4A7C15
    imul rax, rdx
    mov rdx, 0xD1B54A32D192ED03
    xor rax, rdx
    lea rdi, [rip + pattern]
    mov ecx, WIN / 8
1:  mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    mov [rdi], rax
    add rdi, 8
    dec ecx
    jnz 1b
    ret

/* fill_window(rdi): copy the pattern there with aligned qword stores (plain MOVs, also on MMIO). */
fill_window:
    lea rsi, [rip + pattern]
    mov ecx, WIN / 8
1:  mov rax, [rsi]
    mov [rdi], rax
    add rsi, 8
    add rdi, 8
    dec ecx
    jnz 1b
    ret

/* copy_window(rsi = window, rdi = destination) with aligned qword loads. */
copy_window:
    mov ecx, WIN / 8
1:  mov rax, [rsi]
    mov [rdi], rax
    add rsi, 8
    add rdi, 8
    dec ecx
    jnz 1b
    ret

/* One run of the current case: cur_run 0 = operand A on MMIO, 1 = in RAM. */
run_once:
    mov rbx, [rip + cur_case]
    mov rcx, [rbx + C_AM]
    mov rdx, [rbx + C_BODYM]
    cmp qword ptr [rip + cur_run], 0
    je 1f
    mov rcx, [rbx + C_AR]
    mov rdx, [rbx + C_BODYR]
1:  mov [rip + cur_base], rcx
    mov [rip + cur_body], rdx
    mov rdi, rcx
    add rdi, [rbx + C_WIN]
    call fill_window
    mov rax, [rbx + C_PAOFF]
    cmp rax, -1
    je 2f
    mov rdi, [rip + cur_base]
    add rdi, [rbx + C_WIN]
    mov rdx, [rbx + C_PAVAL]
    mov [rdi + rax], rdx
2:  mov rdi, BRAM
    add rdi, [rbx + C_BWIN]
    call fill_window
    mov rax, [rbx + C_PBOFF]
    cmp rax, -1
    je 3f
    mov rdi, BRAM
    add rdi, [rbx + C_BWIN]
    mov rdx, [rbx + C_PBVAL]
    mov [rdi + rax], rdx
3:  xor ecx, ecx
    lea rdi, [rip + in_regs]
4:  mov rax, [rbx + C_REGS + rcx * 8]
    bt qword ptr [rbx + C_AMASK], rcx
    jnc 5f
    add rax, [rip + cur_base]
5:  bt qword ptr [rbx + C_BMASK], rcx
    jnc 6f
    add rax, BRAM
6:  mov [rdi + rcx * 8], rax
    inc ecx
    cmp ecx, 16
    jb 4b
    test qword ptr [rbx + C_OPT], OPT_FSGS
    jz 7f
    mov rax, [rip + cur_base]
    call set_fsgs
7:  lea rax, [rip + body_recover]
    mov [rip + recover_rip], rax
    mov qword ptr [rip + exc_skip], 0
    mov [rip + framework_rsp], rsp
    push qword ptr [rbx + C_FLAGS]
    popfq
    mov rax, [rip + in_regs + 8 * 0]
    mov rcx, [rip + in_regs + 8 * 1]
    mov rdx, [rip + in_regs + 8 * 2]
    mov rbx, [rip + in_regs + 8 * 3]
    mov rbp, [rip + in_regs + 8 * 5]
    mov rsi, [rip + in_regs + 8 * 6]
    mov rdi, [rip + in_regs + 8 * 7]
    mov r8, [rip + in_regs + 8 * 8]
    mov r9, [rip + in_regs + 8 * 9]
    mov r10, [rip + in_regs + 8 * 10]
    mov r11, [rip + in_regs + 8 * 11]
    mov r12, [rip + in_regs + 8 * 12]
    mov r13, [rip + in_regs + 8 * 13]
    mov r14, [rip + in_regs + 8 * 14]
    mov r15, [rip + in_regs + 8 * 15]
    mov rsp, [rip + in_regs + 8 * 4]
    jmp qword ptr [rip + cur_body]

/* Every body ends here: record what it left, back on the runner's stack. */
body_done:
    mov [rip + out_regs + 8 * 0], rax
    mov [rip + out_regs + 8 * 1], rcx
    mov [rip + out_regs + 8 * 2], rdx
    mov [rip + out_regs + 8 * 3], rbx
    mov [rip + out_regs + 8 * 4], rsp
    mov [rip + out_regs + 8 * 5], rbp
    mov [rip + out_regs + 8 * 6], rsi
    mov [rip + out_regs + 8 * 7], rdi
    mov [rip + out_regs + 8 * 8], r8
    mov [rip + out_regs + 8 * 9], r9
    mov [rip + out_regs + 8 * 10], r10
    mov [rip + out_regs + 8 * 11], r11
    mov [rip + out_regs + 8 * 12], r12
    mov [rip + out_regs + 8 * 13], r13
    mov [rip + out_regs + 8 * 14], r14
    mov [rip + out_regs + 8 * 15], r15
    mov rsp, [rip + framework_rsp]
    pushfq
    pop qword ptr [rip + out_flags]
    cld
    mov qword ptr [rip + out_vec], -1
    mov qword ptr [rip + out_ec], -1
    jmp 8f
/* The exception handler sends a faulting body here (registers already in out_regs). */
body_recover:
    mov rsp, [rip + framework_rsp]
    cld
    mov rax, [rip + exc_vec]
    mov [rip + out_vec], rax
    mov rax, [rip + exc_ec]
    mov [rip + out_ec], rax
8:  mov qword ptr [rip + recover_rip], 0
    mov rbx, [rip + cur_case]
    test qword ptr [rbx + C_OPT], OPT_FSGS
    jz 9f
    xor eax, eax
    call set_fsgs
9:  lea rdi, [rip + res0]
    cmp qword ptr [rip + cur_run], 0
    je 10f
    lea rdi, [rip + res1]
10: xor ecx, ecx
    lea rsi, [rip + out_regs]
11: mov rax, [rsi + rcx * 8]
    bt qword ptr [rbx + C_AMASK], rcx
    jnc 12f
    sub rax, [rip + cur_base]
12: bt qword ptr [rbx + C_BMASK], rcx
    jnc 13f
    sub rax, BRAM
13: mov [rdi + R_REGS + rcx * 8], rax
    inc ecx
    cmp ecx, 16
    jb 11b
    mov rax, [rip + out_flags]
    and rax, [rbx + C_FMASK]
    mov [rdi + R_FLAGS], rax
    mov rax, [rip + out_vec]
    mov [rdi + R_VEC], rax
    mov rax, [rip + out_ec]
    mov [rdi + R_EC], rax
    push rdi
    mov rsi, [rip + cur_base]
    add rsi, [rbx + C_WIN]
    add rdi, R_MEMA
    call copy_window
    pop rdi
    mov rsi, BRAM
    add rsi, [rbx + C_BWIN]
    add rdi, R_MEMB
    call copy_window
    ret

    .section .riprel, "ax"
/* RIP-relative bodies run in the windows, too far for a rel32 jump back. */
riprel_done:
    .quad body_done
    .text

/* Compare res0 with res1, print the verdict and, on a mismatch, where they differ. */
report_case:
    mov rbx, [rip + cur_case]
    lea rsi, [rip + res0]
    lea rdi, [rip + res1]
    xor ecx, ecx
    xor edx, edx
1:  mov rax, [rsi + rcx * 8]
    cmp rax, [rdi + rcx * 8]
    setne al
    or dl, al
    inc ecx
    cmp ecx, RES_SIZE / 8
    jb 1b
    mov [rip + differ], rdx
    /* FNV-1a over res0 */
    mov rax, 0xCBF29CE484222325
    mov r8, 0x100000001B3
    xor ecx, ecx
2:  movzx edx, byte ptr [rsi + rcx]
    xor rax, rdx
    imul rax, r8
    inc ecx
    cmp ecx, RES_SIZE
    jb 2b
    mov [rip + digest], rax

    cmp qword ptr [rip + differ], 0
    jne 3f
    lea rsi, [rip + s_pass]
    jmp 5f
3:  cmp qword ptr [rbx + C_KNOWN], 0
    je 4f
    inc qword ptr [rip + nknown]
    lea rsi, [rip + s_known]
    jmp 5f
4:  inc qword ptr [rip + nfail]
    lea rsi, [rip + s_fail]
5:  call puts
    mov rsi, [rbx + C_NAME]
    call puts
    mov al, ' '
    call putc
    mov rax, [rip + digest]
    mov ecx, 8
    call puthex
    cmp qword ptr [rip + differ], 0
    je 20f
    cmp qword ptr [rbx + C_KNOWN], 0
    je 6f
    lea rsi, [rip + s_knownsep]
    call puts
    mov rsi, [rbx + C_KNOWN]
    call puts
6:  mov al, 10
    call putc
    /* Details: registers, flags, exception, memory (first few differing qwords of each buffer). */
    lea r12, [rip + res0]
    lea r13, [rip + res1]
    xor r14d, r14d
7:  mov rax, [r12 + R_REGS + r14 * 8]
    cmp rax, [r13 + R_REGS + r14 * 8]
    je 8f
    lea rsi, [rip + s_ind]
    call puts
    lea rsi, [rip + regnames]
    lea rsi, [rsi + r14 * 4]
    call puts
    mov r15, R_REGS
    lea r15, [r15 + r14 * 8]
    call print_pair
8:  inc r14d
    cmp r14d, 16
    jb 7b
    lea rsi, [rip + s_flags]
    mov r15, R_FLAGS
    call print_if_differs
    lea rsi, [rip + s_vec]
    mov r15, R_VEC
    call print_if_differs
    lea rsi, [rip + s_ecd]
    mov r15, R_EC
    call print_if_differs
    lea rsi, [rip + s_mema]
    mov r15, R_MEMA
    call print_mem_diffs
    lea rsi, [rip + s_memb]
    mov r15, R_MEMB
    call print_mem_diffs
20: mov al, 10
    cmp qword ptr [rip + differ], 0
    jne 21f
    call putc
21: ret

/* print_if_differs(rsi = label, r15 = offset in the result) */
print_if_differs:
    mov rax, [r12 + r15]
    cmp rax, [r13 + r15]
    je 1f
    push rsi
    lea rsi, [rip + s_ind]
    call puts
    pop rsi
    call puts
    call print_pair
1:  ret

/* print_pair(r15 = offset in the result): " mmio=<hex> ram=<hex>\n" */
print_pair:
    lea rsi, [rip + s_mmio]
    call puts
    mov rax, [r12 + r15]
    mov ecx, 16
    call puthex
    lea rsi, [rip + s_ram]
    call puts
    mov rax, [r13 + r15]
    mov ecx, 16
    call puthex
    mov al, 10
    call putc
    ret

/* print_mem_diffs(rsi = label, r15 = offset of the buffer in the result): up to 4 differing qwords. */
print_mem_diffs:
    mov r8, rsi
    xor r9d, r9d                    /* byte offset in the window */
    xor r10d, r10d                  /* printed */
1:  lea rax, [r15 + r9]
    mov rdx, [r12 + rax]
    cmp rdx, [r13 + rax]
    je 2f
    cmp r10d, 4
    jae 2f
    inc r10d
    lea rsi, [rip + s_ind]
    call puts
    mov rsi, r8
    call puts
    mov rax, r9
    add rax, [rbx + C_WIN]
    cmp r15, R_MEMB
    jne 3f
    sub rax, [rbx + C_WIN]
    add rax, [rbx + C_BWIN]
3:  mov ecx, 4
    call puthex
    push r15
    add r15, r9
    call print_pair
    pop r15
2:  add r9d, 8
    cmp r9d, WIN
    jb 1b
    ret

/* --- exception tests ---------------------------------------------------------------------------------- */

/* xt_start(rsi = name): clear the recorded exception before a test. */
xt_start:
    inc qword ptr [rip + nxtests]
    mov [rip + xt_name], rsi
    mov qword ptr [rip + exc_count], 0
    mov qword ptr [rip + exc_vec], -1
    mov qword ptr [rip + exc_ec], -1
    mov qword ptr [rip + exc_cr2], 0
    mov qword ptr [rip + exc_rip], 0
    mov qword ptr [rip + xt_bad], 0
    mov qword ptr [rip + recover_rip], 0
    ret

/* xt_finish(rax = vector, rdx = error code or -1 for none, r8 = CR2 or -1 for don't care,
 * r9 = RIP of the faulting instruction): check what the handler recorded and report. */
xt_finish:
    mov qword ptr [rip + exc_skip], 0
    xor ebx, ebx
    cmp qword ptr [rip + exc_count], 1
    setne bl
    cmp rax, [rip + exc_vec]
    setne cl
    or bl, cl
    cmp rdx, -1
    jne 1f
    xor edx, edx                    /* the stub pushed 0 */
1:  cmp rdx, [rip + exc_ec]
    setne cl
    or bl, cl
    cmp r8, -1
    je 2f
    cmp r8, [rip + exc_cr2]
    setne cl
    or bl, cl
2:  cmp r9, [rip + exc_rip]
    setne cl
    or bl, cl
    cmp qword ptr [rip + xt_bad], 0
    setne cl
    or bl, cl
    push rax
    push rdx
    push r8
    push r9
    lea rsi, [rip + s_pass]
    test bl, bl
    jz 3f
    inc qword ptr [rip + nfail]
    lea rsi, [rip + s_fail]
3:  call puts
    mov rsi, [rip + xt_name]
    call puts
    lea rsi, [rip + s_got]
    call puts
    call print_exc
    test bl, bl
    jz 4f
    lea rsi, [rip + s_want]
    call puts
    mov rax, [rsp + 24]
    call putdec
    lea rsi, [rip + s_ec]
    call puts
    mov rax, [rsp + 16]
    mov ecx, 4
    call puthex
    lea rsi, [rip + s_cr2]
    call puts
    mov rax, [rsp + 8]
    mov ecx, 16
    call puthex
    lea rsi, [rip + s_rip]
    call puts
    mov rax, [rsp]
    mov ecx, 16
    call puthex
    mov rsi, [rip + xt_bad]
    test rsi, rsi
    jz 4f
    push rsi
    lea rsi, [rip + s_badreg]
    call puts
    pop rsi
    call puts
4:  mov al, 10
    call putc
    add rsp, 32
    ret

print_exc:
    cmp qword ptr [rip + exc_count], 0
    jne 1f
    lea rsi, [rip + s_noexc]
    jmp puts
1:  mov rax, [rip + exc_vec]
    call putdec
    lea rsi, [rip + s_ec]
    call puts
    mov rax, [rip + exc_ec]
    mov ecx, 4
    call puthex
    lea rsi, [rip + s_cr2]
    call puts
    mov rax, [rip + exc_cr2]
    mov ecx, 16
    call puthex
    lea rsi, [rip + s_rip]
    call puts
    mov rax, [rip + exc_rip]
    mov ecx, 16
    call puthex
    ret

/* XEXPECT reg, value: note a mismatch (the register's name) for xt_finish. Clobbers r11 and flags. */
    .macro XEXPECT reg, value
    .pushsection .rodata.names, "a"
xmsg\@: .asciz "\reg"
    .popsection
    mov r11, \value
    cmp \reg, r11
    je xok\@
    lea r11, [rip + xmsg\@]
    mov [rip + xt_bad], r11
xok\@:
    .endm

    .include "insntest_xcases.inc"
    .include "insntest_vxcases.inc"
    .include "insntest_ctlx.inc"

/* --- data ---------------------------------------------------------------------------------------------- */

    .section .rodata
s_banner:   .asciz "insntest: every case runs against the test device (MMIO) and against RAM\n"
s_pass:     .asciz "PASS "
s_fail:     .asciz "FAIL "
s_known:    .asciz "KNOWN "
s_skip:     .asciz "SKIP "
s_nocpu:    .asciz " cpu lacks "
s_nokvm:    .asciz " not emulated by Linux's KVM emulator"
s_knownsep: .asciz " known failure: "
s_ind:      .asciz "    "
s_mmio:     .asciz " mmio="
s_ram:      .asciz " ram="
s_flags:    .asciz "rflags"
s_vec:      .asciz "exception"
s_ecd:      .asciz "error-code"
s_mema:     .asciz "A+"
s_memb:     .asciz "B+"
s_got:      .asciz " vector="
s_want:     .asciz " expected vector="
s_ec:       .asciz " ec="
s_cr2:      .asciz " cr2="
s_rip:      .asciz " rip="
s_noexc:    .asciz "none"
s_badreg:   .asciz " wrong: "
s_fatal:    .asciz "FATAL unexpected exception "
s_mmap:     .asciz "FATAL mmap failed\n"
s_sum1:     .asciz "insntest: "
s_sum2:     .asciz " cases, "
s_sum3:     .asciz " failed, "
s_sum4:     .asciz " known failures\n"
regnames:
    .ascii "rax\0rcx\0rdx\0rbx\0rsp\0rbp\0rsi\0rdi\0"
    .ascii "r8\0\0r9\0\0r10\0r11\0r12\0r13\0r14\0r15\0"

    .balign 8
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF        /* 0x10: data */
    .quad 0x00CF9A000000FFFF        /* 0x18: 32-bit code */
    .quad 0x0000892510000067        /* 0x20: 64-bit TSS at 0x251000, limit 0x67 (16 bytes) */
    .quad 0
    .quad 0x00CF12000000FFFF        /* 0x30: data, not present (insntest_ctlx.inc) */
gdt_end:
gdtr:
    .word gdt_end - gdt - 1
    .quad gdt
idtr:
    .word 32 * 16 - 1
    .quad IDT

/* Entries of the window's page table: (index, PTE); P = 1, RW = 2. */
pte_table:
    .quad 0, WRAM0 | 3
    .quad 1, TESTDEV | 3
    .quad 2, (TESTDEV + 0x1000) | 3
    .quad 3, WRAM1 | 3
    .quad 5, WRO | 1
    .quad 6, TESTDEV | 1
    .quad 8, riprel_lma + 3
    .quad 9, riprel_lma + 0x1000 + 3
    .quad 16, W2RAM | 3
    .quad 17, (W2RAM + 0x1000) | 3
    .quad 18, (W2RAM + 0x2000) | 3
    .quad 19, (W2RAM + 0x3000) | 3
    .quad 24, riprel_lma + 3
    .quad 25, riprel_lma + 0x1000 + 3
    .quad -1

    .section .data.cases, "aw"
    .balign 8
cases_start:
    .include "insntest_cases.inc"
    .include "insntest_vcases.inc"
    .section .data.cases, "aw"
    .include "insntest_int.inc"
    .section .data.cases, "aw"
    .include "insntest_ctl.inc"
    .section .data.cases, "aw"
cases_end:

    .bss
    .balign 16
in_regs:    .skip 16 * 8
out_regs:   .skip 16 * 8
out_flags:  .skip 8
out_vec:    .skip 8
out_ec:     .skip 8
res0:       .skip RES_SIZE
res1:       .skip RES_SIZE
pattern:    .skip WIN
cur_case:   .skip 8
cur_run:    .skip 8
cur_base:   .skip 8
cur_body:   .skip 8
framework_rsp: .skip 8
recover_rip: .skip 8
differ:     .skip 8
digest:     .skip 8
ncases:     .skip 8
nxtests:    .skip 8
nfail:      .skip 8
nknown:     .skip 8
exc_skip:   .skip 8
exc_count:  .skip 8
exc_vec:    .skip 8
exc_ec:     .skip 8
exc_cr2:    .skip 8
exc_rip:    .skip 8
isr_rax:    .skip 8
xt_name:    .skip 8
xt_bad:     .skip 8
xt_rsp:     .skip 8
nat_len:    .skip 8
cpuid_out:  .skip 16
nat_buf:    .skip 256
