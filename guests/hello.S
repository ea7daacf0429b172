/* hello: the smallest vmmio guest. Prints a greeting through the 16550 UART on MMIO and exits with
 * status 0 through the debug-exit port. Every UART access faults into vmmio's kernel, which emulates
 * it (the LSR poll is a TEST with an MMIO operand, the THR write a MOV to MMIO).
 */
    .intel_syntax noprefix
    .code64

    .equ UART_MMIO, 0xD0000000      /* THR at +0, LSR at +5 (register stride 1) */
    .equ LSR, 5
    .equ LSR_THRE, 0x20
    .equ DEBUG_EXIT_PORT, 0xF4

    .section .text.start, "ax"
    .globl _start
_start:
    lea rsi, [rip + message]
    mov rdi, UART_MMIO
next:
    mov al, [rsi]
    test al, al
    jz done
wait_thre:
    test byte ptr [rdi + LSR], LSR_THRE     /* F6 /0 ib on MMIO */
    jz wait_thre
    mov [rdi], al                           /* 88 /r on MMIO */
    inc rsi
    jmp next
done:
    xor eax, eax
    out DEBUG_EXIT_PORT, al                 /* status 0 ends the run */
    hlt
    jmp done

message:
    .ascii "Hello from vmmio!\n"
    .asciz "(MMIO UART: test m8,imm8 on LSR, mov m8,r8 to THR; exit: out imm8,al to port 0xf4)\n"
