/* inst_emul_inout: the guest of tests/test_inst_emul.py's inout test.
 *
 * Illumos bhyve-tests' inst_emul/inout runs REP INSB and REP OUTSB with a count of 1 on port 0x55AA and
 * expects one port exit each. This guest does that, then more shapes of string port I/O, halting after
 * each group so that the harness can check RCX/RSI/RDI and the buffer (RAM at 0x200000):
 *
 *   1  rep insb, count 1                 2  rep outsb, count 1 (the byte just read)
 *   3  rep insw / rep outsd, count 1     4  rep insb, count 0: no exit at all
 *   5  rep outsb, count 3                6  DF set: rep insb, count 2, downwards
 */
    .intel_syntax noprefix
    .code64

    .equ PORT, 0x55AA
    .equ BUF, 0x200000

    .section .text.start, "ax"
    .globl _start
_start:
    cld
    mov dx, PORT
    mov edi, BUF
    mov ecx, 1
    rep insb
    hlt
    mov esi, BUF
    mov ecx, 1
    rep outsb
    hlt
    mov edi, BUF + 0x10
    mov ecx, 1
    rep insw
    mov esi, BUF + 0x20
    mov ecx, 1
    rep outsd
    hlt
    mov edi, BUF + 0x30
    xor ecx, ecx
    rep insb
    hlt
    mov esi, BUF + 0x40
    mov ecx, 3
    rep outsb
    hlt
    std
    mov edi, BUF + 0x51
    mov ecx, 2
    rep insb
    cld
    hlt
