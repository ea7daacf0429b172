/* inst_emul_exit_consistent: the guest of tests/test_inst_emul.py's exit_consistent test.
 *
 * It checks what illumos bhyve-tests' inst_emul/exit_consistent checks on its MMIO half (an entry
 * carrying exit_consistent finishes the instruction in flight and stops before the next one; asked
 * again, it makes no progress), plus a read-modify-write and a REP string instruction. The harness
 * answers every request itself; the guest only runs the instructions, 0xC0000000 being no RAM:
 *
 *   mov ecx, [rax]                     one read (2 bytes: 8B 08)
 *   add dword ptr [rax + 4], 0x11      a read, then a write (4 bytes: 83 40 04 11)
 *   rep movsd                          four reads into RAM at 0x200000 (2 bytes: F3 A5)
 */
    .intel_syntax noprefix
    .code64

    .equ MMIO, 0xC0000000
    .equ BUF, 0x200000

    .section .text.start, "ax"
    .globl _start
_start:
    mov eax, MMIO
    mov ecx, 0x5A5A5A5A
    mov ecx, [rax]
    nop
    nop
    add dword ptr [rax + 4], 0x11
    nop
    lea rsi, [rax + 0x10]
    mov edi, BUF
    mov ecx, 4
    rep movsd
    nop
    hlt
