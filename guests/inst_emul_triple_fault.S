/* inst_emul_triple_fault: the guest of tests/test_inst_emul.py's triple_fault test.
 *
 * Illumos bhyve-tests' inst_emul/triple_fault runs UD2 with no usable IDT and expects the vCPU to shut
 * down (triple fault) at once. The harness picks the fault with RDI at entry:
 *
 *   0  UD2 (raised by the execution backend) through the machine's IDT of not-present gates
 *   1  UD2 with an IDT limit of 0 (every vector beyond the limit: #GP, then #DF, then shutdown)
 *   2  #UD raised by vmmio's kernel while emulating (LOCK MOV from MMIO at 0xD0010000)
 *   3  #GP(0) from a non-canonical address (raised by the execution backend)
 */
    .intel_syntax noprefix
    .code64

    .equ MMIO, 0xD0010000
    .equ NONCANON, 0x8000000000000000

    .section .text.start, "ax"
    .globl _start
_start:
    lea rax, [rip + variants]
    jmp [rax + rdi * 8]

ud:
    ud2
    hlt
no_idt:
    lidt [rip + empty_idtr]
    ud2
    hlt
kernel_ud:
    mov edx, MMIO
    .byte 0xF0, 0x8B, 0x02          /* lock mov eax, [rdx] */
    hlt
gp:
    mov rbx, NONCANON
    mov rax, [rbx]
    hlt

    .section .rodata
    .balign 8
variants:
    .quad ud, no_idt, kernel_ud, gp
empty_idtr:
    .word 0
    .quad 0
