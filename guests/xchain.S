/* xchain: chains of exceptions raised one after another, each handled by this guest and resumed.
 *
 * Why: on the Unicorn backend the engine itself raises most guest exceptions (#GP for a non-canonical
 * address, #PF from its page walk, #UD, INT3) and the backend delivers them through the IDT. QEMU inside
 * Unicorn must not go on believing that the first one is still being delivered, or the second becomes
 * #DF and the third a triple fault. Each case runs a straight line of faulting instructions (2, 3 or
 * 100 of them, or a mix); the handler logs every exception and resumes after the instruction, or, for
 * the demand-paging case, maps the missing page and lets the instruction run again.
 *
 * Nothing is printed: the guest writes a results table and a log to RAM, and tests/test_xchain.py
 * reads them after the run (on Unicorn and on the KVM reference) and checks every entry. The exit
 * status (debug-exit port 0xF4) is the number of cases whose count was wrong or that were aborted.
 *
 * Memory besides the image (guest-physical = virtual through the machine's identity map):
 *   0x200000 IDT (32 gates)                0x210000-0x212fff page tables of the window W
 *   0x300000 results: "XCHAIN01", number of cases, then one 72-byte record per case:
 *            name (24 bytes, NUL-padded), first faulting RIP, expected count, count, first log
 *            entry, flags (bit 0: aborted, bit 1: skipped), value the body computed
 *   0x320000 log: 32 bytes per exception: vector, error code (0 if none), CR2, RIP in the frame
 *   0x400000-0x5fffff frames mapped on demand into W = 0x80_0000_0000 (PML4 slot 1, 4 KiB pages)
 */
    .intel_syntax noprefix
    .code64

    .equ IDT, 0x200000
    .equ PDPT_W, 0x210000
    .equ PD_W, 0x211000
    .equ PT_W, 0x212000
    .equ RESULTS, 0x300000
    .equ LOG, 0x320000
    .equ LOG_END, 0x340000
    .equ FRAMES, 0x400000
    .equ PML4, 0x1000               /* the machine's identity-map PML4 */
    .equ W, 0x8000000000
    .equ W_NP, W + 0x1FF000         /* a page of W never mapped */
    .equ TESTDEV, 0xD0010000        /* the machine's test device (MMIO) */
    .equ NONCANON, 0x8000000000000000

    .equ R_NAME, 0
    .equ R_FIRST, 24
    .equ R_EXPECT, 32
    .equ R_COUNT, 40
    .equ R_LOG, 48
    .equ R_FLAGS, 56
    .equ R_VALUE, 64
    .equ RECORD, 72

    .equ F_DEMAND, 1                /* #PF maps the page and the instruction runs again */
    .equ F_NOKVM, 2                 /* the KVM reference cannot run it (skipped there: flags bit 1) */

/* CHAIN name, count, skip, vectors, insn [, setup, flags]: a case whose body runs `setup`, then
 * `insn` (';' separates several instructions), expecting `count` exceptions of the vectors in the mask
 * `vectors`; the handler adds `skip` to the RIP of each (0 for traps such as INT3). */
    .macro CHAIN name, count, skip, vectors, insn, setup, flags=0
    .pushsection .rodata.names, "a"
chain_name\@: .asciz "\name"
    .popsection
    .pushsection .text.bodies, "ax"
chain_body\@:
    \setup
chain_first\@:
    \insn
    ret
    .popsection
    .pushsection .data.cases, "aw"
    .quad chain_name\@, chain_body\@, chain_first\@, \count, \skip, \vectors, \flags
    .popsection
    .endm
    .equ C_NAME, 0
    .equ C_BODY, 8
    .equ C_FIRST, 16
    .equ C_COUNT, 24
    .equ C_SKIP, 32
    .equ C_VECS, 40
    .equ C_FLAGS, 48
    .equ CASE_SIZE, 56

    .equ V_UD, 1 << 6
    .equ V_BP, 1 << 3
    .equ V_GP, 1 << 13
    .equ V_PF, 1 << 14

    /* The faulting instructions, 3 bytes each. */
    .macro GP                       /* #GP(0): RBX is not canonical */
    mov rax, [rbx]
    .endm
    .macro PF                       /* #PF(0): RCX is in a page that is not present */
    mov rax, [rcx]
    .endm
    .macro UD3                      /* #UD, padded to 3 bytes (the handler skips the padding too) */
    ud2
    nop
    .endm
    .macro KUD                      /* lock mov eax, [rdx] on the test device: #UD from vmmio's kernel */
    .byte 0xF0, 0x8B, 0x02
    .endm
    .macro SETUP
    mov rbx, NONCANON
    mov rcx, W_NP
    mov rdx, TESTDEV
    .endm

/* --- entry ----------------------------------------------------------------------------------------- */

    .section .text.start, "ax"
    .globl _start
_start:
    cld
    call setup
    lea rsi, [rip + cases]
    lea rdi, [rip + cases_end]
    mov r15, RESULTS + 16           /* the next result record */
    xor r14d, r14d                  /* failed cases */
    mov qword ptr [rip + log_ptr], LOG
1:  cmp rsi, rdi
    jae 2f
    call run_case
    add rsi, CASE_SIZE
    add r15, RECORD
    jmp 1b
2:  mov rax, 0x31304E4941484358     /* "XCHAIN01" */
    mov [RESULTS], rax
    lea rax, [rip + cases_end]
    lea rcx, [rip + cases]
    sub rax, rcx
    xor edx, edx
    mov ecx, CASE_SIZE
    div rcx
    mov [RESULTS + 8], rax
    mov eax, r14d
3:  out 0xF4, eax
    hlt
    jmp 3b

    .text

/* run_case(rsi = case, r15 = its result record): r14 counts it if it went wrong. */
run_case:
    push rsi
    push rdi
    /* the record: name, first RIP, expected count, where its log starts */
    mov rdi, r15
    xor eax, eax
    mov ecx, RECORD / 8
1:  mov [rdi + rcx * 8 - 8], rax
    dec ecx
    jnz 1b
    mov rax, [rsi + C_NAME]
2:  mov cl, [rax]
    mov [rdi], cl
    inc rax
    inc rdi
    test cl, cl
    jnz 2b
    mov rax, [rsi + C_FIRST]
    mov [r15 + R_FIRST], rax
    mov rax, [rsi + C_COUNT]
    mov [r15 + R_EXPECT], rax
    mov [rip + limit], rax
    mov rax, [rip + log_ptr]
    sub rax, LOG
    shr rax, 5
    mov [r15 + R_LOG], rax
    mov rax, [rsi + C_SKIP]
    mov [rip + skip], rax
    mov rax, [rsi + C_VECS]
    mov [rip + allowed], rax
    mov rax, [rsi + C_FLAGS]
    mov [rip + flags], rax
    mov qword ptr [rip + count], 0
    mov qword ptr [rip + aborted], 0
    test rax, F_NOKVM
    jz 1f
    cmp byte ptr [rip + on_kvm], 0
    je 1f
    mov qword ptr [r15 + R_FLAGS], 2
    pop rdi
    pop rsi
    ret
1:  call clear_window
    mov rax, [rsi + C_BODY]
    mov [rip + runner_rsp], rsp
    call rax
recover:                            /* the handler resumes here when it aborts the case */
    mov [r15 + R_VALUE], rdx
    mov rax, [rip + count]
    mov [r15 + R_COUNT], rax
    mov rcx, [rip + aborted]
    mov [r15 + R_FLAGS], rcx
    pop rdi
    pop rsi
    cmp rax, [rsi + C_COUNT]
    jne 3f
    test rcx, rcx
    jz 4f
3:  inc r14d
4:  ret

/* clear_window: every page of W not present again, and the TLB flushed. */
clear_window:
    mov rdi, PT_W
    xor eax, eax
    mov ecx, 512
    rep stosq
    mov rax, cr3
    mov cr3, rax
    ret

setup:
    /* The KVM reference says so in its hypervisor CPUID leaf ("KVMKVMKVM"). */
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    cmp ebx, 0x4B4D564B
    jne 3f
    cmp ecx, 0x564B4D56
    jne 3f
    mov byte ptr [rip + on_kvm], 1
3:
    /* IDT: 32 interrupt gates, selector 0x08 (the machine's GDT), no IST. */
    mov rdi, IDT
    lea rsi, [rip + isr_stubs]
    xor ecx, ecx
1:  mov rax, rsi
    and eax, 0xFFFF
    or rax, 0x08 << 16
    mov rdx, 0x8E00                 /* P, DPL 0, 64-bit interrupt gate */
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
    jb 1b
    lidt [rip + idtr]
    /* W: PML4[1] -> PDPT_W -> PD_W -> PT_W (cleared per case). Frame n holds n in its first qword. */
    mov rdi, PDPT_W
    xor eax, eax
    mov ecx, 2 * 4096 / 8
    rep stosq
    mov qword ptr [PDPT_W], PD_W | 3
    mov qword ptr [PD_W], PT_W | 3
    mov qword ptr [PML4 + 8], PDPT_W | 3
    mov rdi, FRAMES
    xor eax, eax
2:  mov [rdi], rax
    add rdi, 0x1000
    inc eax
    cmp eax, 512
    jb 2b
    mov rax, cr3
    mov cr3, rax
    ret

    .include "isr_stubs.inc"

/* Log the exception; then resume after the instruction (RIP += skip), or map the page (demand
 * paging), or, for a vector the case does not expect (#DF above all), one too many, or a page fault
 * outside W, abort the case: resume at `recover` on the runner's stack. Frame after the three saved
 * registers: vector +24, error code +32, RIP +40, CS +48, RFLAGS +56, RSP +64, SS +72. */
isr_common:
    push rax
    push rbx
    push rcx
    mov rbx, [rip + log_ptr]
    cmp rbx, LOG_END
    jae 9f
    mov rax, [rsp + 24]
    mov [rbx], rax
    mov rax, [rsp + 32]
    mov [rbx + 8], rax
    mov rax, cr2
    mov [rbx + 16], rax
    mov rax, [rsp + 40]
    mov [rbx + 24], rax
    add rbx, 32
    mov [rip + log_ptr], rbx
    inc qword ptr [rip + count]
    mov rax, [rip + count]
    cmp rax, [rip + limit]
    ja 9f
    mov rax, [rsp + 24]
    bt [rip + allowed], rax
    jnc 9f
    cmp eax, 14
    jne 2f
    test qword ptr [rip + flags], F_DEMAND
    jz 2f
    mov rax, cr2                    /* demand paging: map the frame for this page of W */
    mov rcx, W
    sub rax, rcx
    cmp rax, 0x200000
    jae 9f
    shr rax, 12
    mov rcx, rax
    shl rcx, 12
    add rcx, FRAMES | 3
    mov [PT_W + rax * 8], rcx
    mov rax, cr2
    invlpg [rax]
    jmp 3f
2:  mov rax, [rip + skip]
    add [rsp + 40], rax
3:  pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
9:  mov qword ptr [rip + aborted], 1
    lea rax, [rip + recover]
    mov [rsp + 40], rax
    mov rax, [rip + runner_rsp]
    mov [rsp + 64], rax
    mov qword ptr [rsp + 56], 2     /* RFLAGS: interrupts stay off */
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    .section .rodata
    .balign 8
idtr:
    .word 32 * 16 - 1
    .quad IDT

    .section .data.cases, "aw"
    .balign 8
cases:
/* --- the cases ----------------------------------------------------------------------------------- */

    CHAIN "gp_x2", 2, 3, V_GP, ".rept 2; GP; .endr", SETUP
    CHAIN "gp_x3", 3, 3, V_GP, ".rept 3; GP; .endr", SETUP
    CHAIN "gp_x100", 100, 3, V_GP, ".rept 100; GP; .endr", SETUP
    CHAIN "pf_x2", 2, 3, V_PF, ".rept 2; PF; .endr", SETUP
    CHAIN "pf_x3", 3, 3, V_PF, ".rept 3; PF; .endr", SETUP
    CHAIN "pf_x100", 100, 3, V_PF, ".rept 100; PF; .endr", SETUP
    CHAIN "ud_x2", 2, 2, V_UD, ".rept 2; ud2; .endr", SETUP
    CHAIN "ud_x3", 3, 2, V_UD, ".rept 3; ud2; .endr", SETUP
    CHAIN "ud_x100", 100, 2, V_UD, ".rept 100; ud2; .endr", SETUP
    /* Linux's emulator cannot run INT3 on this KVM reference (KVM_INTERNAL_ERROR_EMULATION) */
    CHAIN "int3_x100", 100, 0, V_BP, ".rept 100; int3; .endr", SETUP, F_NOKVM
    /* #GP, #PF, #UD in turn */
    CHAIN "mix_x100", 100, 3, V_GP | V_PF | V_UD, ".rept 33; GP; PF; UD3; .endr; GP", SETUP
    /* an engine-raised #GP, then a #UD that vmmio's kernel raises while emulating, in turn */
    CHAIN "kernel_engine_x100", 100, 3, V_GP | V_UD, ".rept 50; GP; KUD; .endr", SETUP
    /* 100 pages of W touched in turn, each mapped by the #PF handler; RDX sums what the reads found */
    CHAIN "demand_x100", 100, 0, V_PF, ".rept 100; mov rax, [rcx]; add rdx, rax; add rcx, 0x1000; .endr", "mov rcx, W; xor edx, edx", F_DEMAND
    .section .data.cases, "aw"
cases_end:

    .data
    .balign 8
log_ptr: .quad 0
count: .quad 0
limit: .quad 0
skip: .quad 0
allowed: .quad 0
flags: .quad 0
aborted: .quad 0
runner_rsp: .quad 0
on_kvm: .byte 0
