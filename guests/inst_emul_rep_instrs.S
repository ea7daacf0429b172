/* inst_emul_rep_instrs: the guest of tests/test_inst_emul.py's rep_instrs test.
 *
 * Illumos bhyve-tests' inst_emul/rep_instrs runs REP MOVS and REP STOS against the in-kernel local APIC
 * and REP INSB from the in-kernel PIT, and checks that each ran to completion: RCX at 0, RSI/RDI at the
 * end of the range. Here the harness maps the same two device models in vmmio's kernel (served without
 * an exit); this guest halts after each step so that the harness can read its registers:
 *
 *   1  rep movsd: 16 dwords from the APIC page (0xFEE00000) into RAM at 0x200000
 *   2  rep stosb: 64 bytes of 0x61 onto the APIC page
 *   3  rep insb: 64 bytes from PIT port 0x40 into RAM at 0x200040
 *   4  rep stosd: 300 dwords onto the APIC page from offset 0x400 (more than one kernel REP budget)
 */
    .intel_syntax noprefix
    .code64

    .equ APIC, 0xFEE00000
    .equ PIT0, 0x40
    .equ BUF, 0x200000

    .section .text.start, "ax"
    .globl _start
_start:
    cld
    mov esi, APIC
    mov edi, BUF
    mov ecx, 16
    rep movsd
    hlt
    mov edi, APIC
    mov al, 0x61
    mov ecx, 64
    rep stosb
    hlt
    mov dx, PIT0
    mov edi, BUF + 64
    mov ecx, 64
    rep insb
    hlt
    mov edi, APIC + 0x400
    mov eax, 0x0BADF00D
    mov ecx, 300
    rep stosd
    hlt
