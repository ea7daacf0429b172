/* inst_emul_imul: the guest of tests/test_inst_emul.py's imul test.
 *
 * Illumos bhyve-tests' inst_emul/imul reads a patterned MMIO device (each 16-bit word of a read holds
 * the low 16 bits of its own address, ascending) with MOV and with the two-operand IMUL at 16, 32 and
 * 64 bits. The harness maps such a device at 0xE0000000 (64 KiB); this guest runs those forms and the
 * other IMUL forms (three operands with imm8 and imm16/32, one operand at 8-64 bits) against it, and
 * stores RAX, RDX and RFLAGS after each case, in order, at 0x200000. The harness computes what each
 * case must give and compares. The exit status (port 0xF4) is the number of cases run.
 */
    .intel_syntax noprefix
    .code64

    .equ DEV, 0xE0000000
    .equ OUT, 0x200000
    .equ RDX_IN, 0x1111222233334444

/* One case: RAX and RDX loaded, RBX at the device, the instruction, then RAX, RDX, RFLAGS stored. */
    .macro ICASE insn, rax_in
    mov rax, \rax_in
    mov rdx, RDX_IN
    mov rbx, DEV
    \insn
    pushfq
    pop rcx
    mov [rdi], rax
    mov [rdi + 8], rdx
    mov [rdi + 16], rcx
    add rdi, 24
    .endm

    .section .text.start, "ax"
    .globl _start
_start:
    mov edi, OUT
    /* the pattern, read with MOV (what bhyve's test checks first) */
    ICASE "mov ax, [rbx + 0x1234]", 0x0123456789ABCDEF
    ICASE "mov eax, [rbx + 0x1232]", 0x0123456789ABCDEF
    ICASE "mov rax, [rbx + 0x1230]", 0x0123456789ABCDEF
    /* two operands, 0F AF (bhyve's three cases first) */
    ICASE "imul ax, [rbx + 0x1234]", 0xDEADBEEFCAFE0002
    ICASE "imul eax, [rbx + 0x1232]", 0xDEADBEEF00000002
    ICASE "imul rax, [rbx + 0x1230]", 0x10
    ICASE "imul eax, [rbx + 0x1232]", 0x10000
    ICASE "imul ax, [rbx + 0x9234]", 3
    ICASE "imul rax, [rbx + 0xFFF8]", -1
    /* three operands: 6B (imm8) and 69 (imm16/imm32), sign-extended */
    ICASE "imul ax, [rbx + 0x9234], -5", 0
    ICASE "imul eax, [rbx + 0x1232], 0x12345", 0
    ICASE "imul rax, [rbx + 0x9230], -0x7654321", 0
    ICASE "imul rax, [rbx + 0x1230], 0x7F", 0
    ICASE "imul ax, [rbx + 0x0100], 0x7FFF", 0
    /* one operand: F6 /5 and F7 /5, into AX, DX:AX, EDX:EAX, RDX:RAX */
    ICASE "imul byte ptr [rbx + 0x12F5]", 0xDEADBEEFCAFEBA0C
    ICASE "imul byte ptr [rbx + 0x1202]", 0x0000000000000003
    ICASE "imul word ptr [rbx + 0x9234]", 0x1234
    ICASE "imul dword ptr [rbx + 0x1232]", 0xFFFFFFFF80000000
    ICASE "imul qword ptr [rbx + 0x9230]", -7
    ICASE "imul qword ptr [rbx + 0x0010]", 2
    mov rax, rdi
    sub rax, OUT
    xor edx, edx
    mov ecx, 24
    div rcx
1:  out 0xF4, eax
    hlt
    jmp 1b
