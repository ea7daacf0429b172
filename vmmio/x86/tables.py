"""The opcode table: one declarative row per instruction form, and the lookup lists built from it.

Rows are plain text (`_LEGACY_ROWS`, one form per line) so the table reads like an opcode map and a new
form costs one line. At import time the rows are compiled into direct-indexed lists (`LEGACY[mode][map]`,
256 entries each) so the decoder's hot path is list indexing and integer tests only.

Row syntax: ``<opcode>[/<reg>|=<modrm>] [<pfx>] <mnemonic> <flag>... [: <operands>]``

- ``<opcode>``: hex bytes joined by dots (``0f.38.f0``); the last byte may be a range (``50-57``), in which
  case the mnemonic may be a comma list with one name per opcode.
- ``/N`` or ``/N-M`` restricts ModRM.reg (comma list of mnemonics for a range); ``=XX`` or ``=XX-YY``
  gives exact register-form ModRM bytes.
- ``<pfx>``: mandatory prefix ``np``, ``66``, ``f3`` or ``f2`` (the last F2/F3 wins, then 66). Without it
  the row applies to every prefix not claimed by a more specific row. ``*`` is shorthand for four rows:
  it is followed by the np/66/f3/f2 mnemonics, ``-`` where that prefix has no form.
- A mnemonic ``a|b|c`` is chosen by operand size 16/32/64 (by address size with flag ``asz``).
- Flags: ``r`` ModRM follows; ``b`` byte operand; ``lock`` LOCK allowed (memory destination only);
  ``d64``/``f64`` 64-bit default/forced operand size in 64-bit mode; ``i64`` invalid in 64-bit mode;
  ``o64`` only in 64-bit mode; ``a32`` only with 32-bit addressing; ``no66`` #UD with 66;
  ``nw`` REX.W ignored (no 64-bit operand size);
  ``mem``/``reg`` restrict ModRM.mod; ``nomod`` mod is ignored (always a register operand: mov to/from
  CR/DR); ``plusr`` register in the opcode's low 3 bits; ``xchg90`` 90 with REX.B is xchg; immediates
  ``ib iw iz iv moffs iwib far i32 ibib``; ``3dnow`` the 0F 0F form (ModRM, then the opcode byte).
- ``<operands>``: the Intel-syntax operand list, read by the formatter only (never compiled into decoder
  entries; the codes are described in `vmmio.x86.format`): comma-separated codes, or a ``;`` list with
  one operand list per mnemonic (per live mnemonic of a ``*`` row).

Undefined encodings are simply absent. VEX, EVEX and XOP opcode spaces are described coarsely (which
opcode bytes exist per map and which take an immediate): enough for exact lengths, not for full #UD
checking of every vector length and W combination.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

from vmmio.x86.insn import OpMap

# Flag bits kept in compiled entries (the hot path tests these).
F_MODRM = 1 << 0
F_BYTE = 1 << 1
F_LOCK = 1 << 2
F_PLUSR = 1 << 3
F_NOMOD = 1 << 4
F_D64 = 1 << 5
F_F64 = 1 << 6
F_SPECIAL = 1 << 7  # C4/C5/62/8F: may start a VEX/EVEX/XOP prefix; the decoder looks further
F_3DNOW = 1 << 8
F_SIZED = 1 << 9  # mnemonic is a (16, 32, 64) tuple chosen by operand size
F_ASIZED = 1 << 10  # ... chosen by address size
F_A32 = 1 << 11  # only with 32-bit addressing (VIA MONTMUL)
F_SUB = 1 << 12  # dispatch entry: the form depends on the mandatory prefix and/or ModRM
F_XCHG = 1 << 13  # 90: xchg rather than nop when REX.B names r8
F_NO66 = 1 << 14  # #UD with a 66 prefix (PTWRITE)
# Build-time only.
F_I64 = 1 << 16
F_O64 = 1 << 17
F_MEM = 1 << 18
F_REG = 1 << 19
F_NW = 1 << 20  # REX.W ignored: the form has no 64-bit operand size (IN/OUT/INS/OUTS, XBEGIN, x87 state)

# Immediate kinds.
I_NONE = 0
I_B = 1  # imm8
I_W = 2  # imm16
I_Z = 3  # imm16 or imm32 by operand size (imm32 sign-extended with REX.W)
I_V = 4  # imm16/32/64 by operand size (B8+r)
I_MOFFS = 5  # offset of address size (A0-A3), stored as the memory operand
I_WB = 6  # imm16 then imm8 (ENTER)
I_FAR = 7  # ptr16:16 / ptr16:32 (offset by operand size, then a 16-bit selector)
I_D = 8  # imm32 whatever the operand size (XOP map A)
I_BB = 9  # imm8 then imm8 (EXTRQ/INSERTQ)

_FLAG_NAMES = {
    "r": F_MODRM,
    "b": F_BYTE,
    "lock": F_LOCK,
    "d64": F_D64,
    "f64": F_F64,
    "plusr": F_PLUSR,
    "nomod": F_NOMOD | F_MODRM,
    "3dnow": F_3DNOW | F_MODRM,
    "i64": F_I64,
    "o64": F_O64,
    "mem": F_MEM,
    "reg": F_REG,
    "asz": F_ASIZED,
    "a32": F_A32,
    "xchg90": F_XCHG,
    "no66": F_NO66,
    "nw": F_NW,
}
_IMM_NAMES = {
    "ib": I_B,
    "iw": I_W,
    "iz": I_Z,
    "iv": I_V,
    "moffs": I_MOFFS,
    "iwib": I_WB,
    "far": I_FAR,
    "i32": I_D,
    "ibib": I_BB,
}
_PFX_NAMES = {"np": 0, "66": 1, "f3": 2, "f2": 3}

_CC = "o,no,b,ae,e,ne,be,a,s,ns,p,np,l,ge,le,g"


def _cc(prefix: str) -> str:
    return ",".join(prefix + c for c in _CC.split(","))


_LEGACY_ROWS = f"""
# ---- one-byte map ----
00 add r b lock : Eb,Gb
01 add r lock : Ev,Gv
02 add r b : Gb,Eb
03 add r : Gv,Ev
04 add ib b : al,Ib
05 add iz : rAX,Iv
06 push i64 : +osz es
07 pop i64 : +osz es
08 or r b lock : Eb,Gb
09 or r lock : Ev,Gv
0a or r b : Gb,Eb
0b or r : Gv,Ev
0c or ib b : al,Ib
0d or iz : rAX,Iv
0e push i64 : +osz cs
10 adc r b lock : Eb,Gb
11 adc r lock : Ev,Gv
12 adc r b : Gb,Eb
13 adc r : Gv,Ev
14 adc ib b : al,Ib
15 adc iz : rAX,Iv
16 push i64 : +osz ss
17 pop i64 : +osz ss
18 sbb r b lock : Eb,Gb
19 sbb r lock : Ev,Gv
1a sbb r b : Gb,Eb
1b sbb r : Gv,Ev
1c sbb ib b : al,Ib
1d sbb iz : rAX,Iv
1e push i64 : +osz ds
1f pop i64 : +osz ds
20 and r b lock : Eb,Gb
21 and r lock : Ev,Gv
22 and r b : Gb,Eb
23 and r : Gv,Ev
24 and ib b : al,Ib
25 and iz : rAX,Iv
27 daa i64
28 sub r b lock : Eb,Gb
29 sub r lock : Ev,Gv
2a sub r b : Gb,Eb
2b sub r : Gv,Ev
2c sub ib b : al,Ib
2d sub iz : rAX,Iv
2f das i64
30 xor r b lock : Eb,Gb
31 xor r lock : Ev,Gv
32 xor r b : Gb,Eb
33 xor r : Gv,Ev
34 xor ib b : al,Ib
35 xor iz : rAX,Iv
37 aaa i64
38 cmp r b : Eb,Gb
39 cmp r : Ev,Gv
3a cmp r b : Gb,Eb
3b cmp r : Gv,Ev
3c cmp ib b : al,Ib
3d cmp iz : rAX,Iv
3f aas i64
40-47 inc plusr i64 : Zv
48-4f dec plusr i64 : Zv
50-57 push plusr d64 : Zv
58-5f pop plusr d64 : Zv
60 pusha|pushad|pusha i64
61 popa|popad|popa i64
62 bound r mem i64 : Gv,Mv2
63 arpl r i64 : Ew,Gw
63 movsxd r o64 : Gv,Evd
68 push iz d64 : +osz Iv
69 imul r iz : Gv,Ev,Iv
6a push ib d64 : +osz Iv
6b imul r ib : Gv,Ev,Iv
6c insb b : +rep Yb,dx
6d insw|insd|insd nw : +rep Yv,dx
6e outsb b : +rep dx,Xb
6f outsw|outsd|outsd nw : +rep dx,Xv
70-7f {_cc("j")} ib f64 : +osz +bnd +hint J
80/0-6 add,or,adc,sbb,and,sub,xor r ib b lock : Eb,Ib
80/7 cmp r ib b : Eb,Ib
81/0-6 add,or,adc,sbb,and,sub,xor r iz lock : Ev,Iv
81/7 cmp r iz : Ev,Iv
82/0-6 add,or,adc,sbb,and,sub,xor r ib b lock i64 : Eb,Ib
82/7 cmp r ib b i64 : Eb,Ib
83/0-6 add,or,adc,sbb,and,sub,xor r ib lock : Ev,Iv
83/7 cmp r ib : Ev,Iv
84 test r b : Eb,Gb
85 test r : Ev,Gv
86 xchg r b lock : +hle Eb,Gb
87 xchg r lock : +hle Ev,Gv
88 mov r b : +xrelease Eb,Gb
89 mov r : +xrelease Ev,Gv
8a mov r b : Gb,Eb
8b mov r : Gv,Ev
8c/0-5 mov r : Rv/Mw,S
8d lea r mem : Gv,A
8e/0 mov r : S,Rw/Mw
8e/2-5 mov r : S,Rw/Mw
8f/0 pop r d64 : Ev
90 nop plusr xchg90 : Zv,rAX
90 f3 pause plusr
91-97 xchg plusr : Zv,rAX
98 cbw|cwde|cdqe
99 cwd|cdq|cqo
9a call far i64 : +osz Ap
9b wait
9c pushf|pushfd|pushfq d64
9d popf|popfd|popfq d64
9e sahf
9f lahf
a0 mov moffs b : +asz al,Eb
a1 mov moffs : +asz rAX,Ev
a2 mov moffs b : +asz Eb,al
a3 mov moffs : +asz Ev,rAX
a4 movsb b : +rep Yb,Xb
a5 movsw|movsd|movsq : +rep Yv,Xv
a6 cmpsb b : +repe Xb,Yb
a7 cmpsw|cmpsd|cmpsq : +repe Xv,Yv
a8 test ib b : al,Ib
a9 test iz : rAX,Iv
aa stosb b : +rep Yb
ab stosw|stosd|stosq : +rep Yv
ac lodsb b : +rep Xb
ad lodsw|lodsd|lodsq : +rep Xv
ae scasb b : +repe Yb
af scasw|scasd|scasq : +repe Yv
b0-b7 mov ib b plusr : Zb,Ib
b8-bf mov iv plusr : Zv,Iv
c0/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r ib b : Eb,Ib
c1/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r ib : Ev,Ib
c2 ret iw f64 : +osz +bnd Iw
c3 ret f64 : +osz +bnd +repret
c4 les r mem i64 : Gv,Mp
c5 lds r mem i64 : Gv,Mp
c6/0 mov r ib b : +xrelease Eb,Ib
c6=f8 xabort r ib : Ib
c7/0 mov r iz : +xrelease Ev,Iv
c7=f8 xbegin r iz nw : J
c8 enter iwib d64 : +osz Iw,Ib2
c9 leave d64 : +osz
ca retf iw : +osz Iw
cb retf : +osz
cc int3
cd int ib : Ib
ce into i64
cf iret|iretd|iretq
d0/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r b : Eb,1
d1/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r : Ev,1
d2/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r b : Eb,cl
d3/0-7 rol,ror,rcl,rcr,shl,shr,sal,sar r : Ev,cl
d4 aam ib i64 : Ib
d5 aad ib i64 : Ib
d6 salc i64
d7 xlatb : T
e0 loopne ib f64 : +osz +asz J
e1 loope ib f64 : +osz +asz J
e2 loop ib f64 : +osz +asz J
e3 jcxz|jecxz|jrcxz ib f64 asz : +osz J
e4 in ib b : al,Ib
e5 in ib nw : rAX,Ib
e6 out ib b : Ib,al
e7 out ib nw : Ib,rAX
e8 call iz f64 : +osz +bnd J
e9 jmp iz f64 : +osz +bnd J
ea jmp far i64 : +osz Ap
eb jmp ib f64 : +osz J
ec in b : al,dx
ed in nw : rAX,dx
ee out b : dx,al
ef out nw : dx,rAX
f1 int1
f4 hlt
f5 cmc
f6/0-1 test r ib b : Eb,Ib
f6/2-3 not,neg r b lock : Eb
f6/4-7 mul,imul,div,idiv r b : Eb
f7/0-1 test r iz : Ev,Iv
f7/2-3 not,neg r lock : Ev
f7/4-7 mul,imul,div,idiv r : Ev
f8 clc
f9 stc
fa cli
fb sti
fc cld
fd std
fe/0-1 inc,dec r b lock : Eb
ff/0-1 inc,dec r lock : Ev
ff/2 call r f64 : +bnd +notrack Ev
ff/3 call r mem : Op
ff/4 jmp r f64 : +bnd +notrack Ev
ff/5 jmp r mem : Op
ff/6 push r d64 : Ev

# ---- x87 (D8-DF): memory forms by ModRM.reg, register forms by ModRM ----
d8/0-7 fadd,fmul,fcom,fcomp,fsub,fsubr,fdiv,fdivr r : st,Fd;st,Fd;st,Fd;st,Fd;st,Fd;st,Fd;st,Fd;st,Fd
d9/0 fld r mem : st,Md
d9/2-7 fst,fstp,fldenv,fldcw,fnstenv,fnstcw r mem nw : Md,st;Md,st;Menv;Mw;Menv;Mw
d9/0-1 fld,fxch r reg : st,F;st,F
d9=d0 fnop r
d9/3 fstpnce r reg : F,st
d9=e0-e1 fchs,fabs r
d9=e4-e5 ftst,fxam r
d9=e8-ee fld1,fldl2t,fldl2e,fldpi,fldlg2,fldln2,fldz r
d9=f0-f7 f2xm1,fyl2x,fptan,fpatan,fxtract,fprem1,fdecstp,fincstp r
d9=f8-ff fprem,fyl2xp1,fsqrt,fsincos,frndint,fscale,fsin,fcos r
da/0-7 fiadd,fimul,ficom,ficomp,fisub,fisubr,fidiv,fidivr r mem : st,Md
da/0-3 fcmovb,fcmove,fcmovbe,fcmovu r reg : st,F
da=e9 fucompp r
db/0-3 fild,fisttp,fist,fistp r mem : st,Md;Md,st;Md,st;Md,st
db/5 fld r mem : st,Mt
db/7 fstp r mem : Mt,st
db/0-3 fcmovnb,fcmovne,fcmovnbe,fcmovnu r reg : st,F
db=e0-e4 fneni,fndisi,fnclex,fninit,fnsetpm r
db/5-6 fucomi,fcomi r reg : st,F
dc/0-7 fadd,fmul,fcom,fcomp,fsub,fsubr,fdiv,fdivr r mem : st,Mq
dc/0-7 fadd,fmul,fcom,fcomp,fsubr,fsub,fdivr,fdiv r reg : F,st;F,st;st,F;st,F;F,st;F,st;F,st;F,st
dd/0-4 fld,fisttp,fst,fstp,frstor r mem nw : st,Mq;Mq,st;Mq,st;Mq,st;Msav
dd/6-7 fnsave,fnstsw r mem nw : Msav;Mw
dd/0-5 ffree,fxch,fst,fstp,fucom,fucomp r reg : F;st,F;F,st;F,st;st,F;st,F
de/0-7 fiadd,fimul,ficom,ficomp,fisub,fisubr,fidiv,fidivr r mem : st,Mw
de/0-2 faddp,fmulp,fcomp r reg : F,st;F,st;st,F
de=d9 fcompp r
de/4-7 fsubrp,fsubp,fdivrp,fdivp r reg : F,st
df/0-7 fild,fisttp,fist,fistp,fbld,fild,fbstp,fistp r mem : st,Mw;Mw,st;Mw,st;Mw,st;st,Mt;st,Mq;Mt,st;Mq,st
df/0-3 ffreep,fxch,fstp,fstp r reg : F;st,F;F,st;F,st
df=e0 fnstsw r : ax
df/5-6 fucomip,fcomip r reg : st,F

# ---- 0F map ----
0f.00/0-5 sldt,str,lldt,ltr,verr,verw r : Rv/Mw;Rv/Mw;Ew;Ew;Ew;Ew
0f.00/6 f2 lkgs r o64 : Rvd/Mw
0f.01/0-4 sgdt,sidt,lgdt,lidt,smsw r mem : Mf;Mf;Mf;Mf;Mw
0f.01/5 f3 rstorssp r mem : Mq
0f.01/6-7 lmsw,invlpg r mem : Mw;M
0f.01=c0-c6 np enclv,vmcall,vmlaunch,vmresume,vmxoff,pconfig,wrmsrns r
0f.01=c7 np pbndkb r o64
0f.01=c6 f3 wrmsrlist r o64
0f.01=c6 f2 rdmsrlist r o64
0f.01=c8-cb np monitor,mwait,clac,stac r : +asz;;;
0f.01=ca f3 eretu r o64
0f.01=ca f2 erets r o64
0f.01=cc 66 tdcall r
0f.01=cd-cf 66 seamret,seamops,seamcall r o64
0f.01=cf np encls r
0f.01=d0-d1 np xgetbv,xsetbv r
0f.01=d4-d7 np vmfunc,xend,xtest,enclu r
0f.01=d8-df vmrun,vmmcall,vmload,vmsave,stgi,clgi,skinit,invlpga r : aAX;;aAX;aAX;;;eax;aAX,ecx
0f.01=d9 f3 vmgexit r
0f.01=d9 f2 vmgexit r
0f.01/4 smsw r reg : Rv
0f.01=e8 np serialize r
0f.01=e8 f3 setssbsy r
0f.01=e8-e9 f2 xsusldtrk,xresldtrk r
0f.01=ea f3 saveprevssp r
0f.01=ec-ef f3 uiret,testui,clui,stui r o64
0f.01=ee-ef np rdpkru,wrpkru r
0f.01/6 lmsw r reg : Rw
0f.01=f8 swapgs r o64
0f.01=f9 rdtscp r
0f.01=fa-fb np monitorx,mwaitx r : +asz;
0f.01=fa f3 mcommit r
0f.01=fc clzero r : aAX
0f.01=fd np rdpru r
0f.01=fd-ff f3 rmpquery,rmpadjust,psmash r o64
0f.01=fe-ff np invlpgb,tlbsync r : aAX;
0f.01=fe f2 rmpupdate r o64
0f.01=ff f2 pvalidate r
0f.02 lar r : Gv,Rv/Mw
0f.03 lsl r : Gv,Rv/Mw
0f.05 syscall
0f.06 clts
0f.07 sysret|sysret|sysretq
0f.08 invd
0f.09 wbinvd
0f.09 f3 wbnoinvd
0f.0b ud2
0f.0d/0-7 prefetch,prefetchw,prefetchwt1,prefetchw,prefetch,prefetch,prefetch,prefetch r mem : Mb
0f.0d nop r reg : Ev,Gv
0f.0e femms
0f.0f 3dnow 3dnow : P,Q  # mnemonic comes from the suffix byte
0f.10 * movups,movupd,movss,movsd r : V,W;V,W;V,Wd;V,Wq
0f.11 * movups,movupd,movss,movsd r : W,V;W,V;Wd,V;Wq,V
0f.12 np movlps r mem : V,Mq
0f.12 np movhlps r reg : V,U
0f.12 66 movlpd r mem : V,Mq
0f.12 f3 movsldup r : V,W
0f.12 f2 movddup r : V,Wq
0f.13 np movlps r mem : Mq,V
0f.13 66 movlpd r mem : Mq,V
0f.14 * unpcklps,unpcklpd,-,- r : V,W
0f.15 * unpckhps,unpckhpd,-,- r : V,W
0f.16 np movhps r mem : V,Mq
0f.16 np movlhps r reg : V,U
0f.16 66 movhpd r mem : V,Mq
0f.16 f3 movshdup r : V,W
0f.17 np movhps r mem : Mq,V
0f.17 66 movhpd r mem : Mq,V
0f.18/0-3 prefetchnta,prefetcht0,prefetcht1,prefetcht2 r mem : Mb
0f.18/6-7 prefetchit1,prefetchit0 r mem : Mb
0f.18 nop r : Ev,Gv
0f.19-1f nop r : Ev,Gv;Ev,Gv;Ev,Gv;Ev,Gv;Ev,Gv;Ev,Gv;Ev,Gv~
0f.1c/0 np cldemote r mem : M
0f.1e/1 f3 rdsspd|rdsspd|rdsspq r reg : Ry
0f.1e=fa-fb f3 endbr64,endbr32 r
0f.20/0 mov nomod : Rm,C
0f.20/2-4 mov nomod : Rm,C
0f.21 mov nomod : Rm,D
0f.22/0 mov nomod : C,Rm
0f.22/2-4 mov nomod : C,Rm
0f.23 mov nomod : D,Rm
0f.28 * movaps,movapd,-,- r : V,W
0f.29 * movaps,movapd,-,- r : W,V
0f.2a * cvtpi2ps,cvtpi2pd,cvtsi2ss,cvtsi2sd r : V,Q;V,Q;V,Ey;V,Ey
0f.2b * movntps,movntpd,movntss,movntsd r mem : Mo,V;Mo,V;Md,V;Mq,V
0f.2c * cvttps2pi,cvttpd2pi,cvttss2si,cvttsd2si r : P,Wq;P,W;Gy,Wd;Gy,Wq
0f.2d * cvtps2pi,cvtpd2pi,cvtss2si,cvtsd2si r : P,Wq;P,W;Gy,Wd;Gy,Wq
0f.2e * ucomiss,ucomisd,-,- r : V,Wd;V,Wq
0f.2f * comiss,comisd,-,- r : V,Wd;V,Wq
0f.30-34 wrmsr,rdtsc,rdmsr,rdpmc,sysenter
0f.35 sysexit|sysexit|sysexitq
0f.37 np getsec
0f.40-4f {_cc("cmov")} r : Gv,Ev
0f.50 * movmskps,movmskpd,-,- r reg : Gd,U
0f.51 * sqrtps,sqrtpd,sqrtss,sqrtsd r : V,W;V,W;V,Wd;V,Wq
0f.52 * rsqrtps,-,rsqrtss,- r : V,W;V,Wd
0f.53 * rcpps,-,rcpss,- r : V,W;V,Wd
0f.54 * andps,andpd,-,- r : V,W
0f.55 * andnps,andnpd,-,- r : V,W
0f.56 * orps,orpd,-,- r : V,W
0f.57 * xorps,xorpd,-,- r : V,W
0f.58 * addps,addpd,addss,addsd r : V,W;V,W;V,Wd;V,Wq
0f.59 * mulps,mulpd,mulss,mulsd r : V,W;V,W;V,Wd;V,Wq
0f.5a * cvtps2pd,cvtpd2ps,cvtss2sd,cvtsd2ss r : V,Wq;V,W;V,Wd;V,Wq
0f.5b * cvtdq2ps,cvtps2dq,cvttps2dq,- r : V,W
0f.5c * subps,subpd,subss,subsd r : V,W;V,W;V,Wd;V,Wq
0f.5d * minps,minpd,minss,minsd r : V,W;V,W;V,Wd;V,Wq
0f.5e * divps,divpd,divss,divsd r : V,W;V,W;V,Wd;V,Wq
0f.5f * maxps,maxpd,maxss,maxsd r : V,W;V,W;V,Wd;V,Wq
0f.60-62 np punpcklbw,punpcklwd,punpckldq r : P,Qd
0f.63-67 np packsswb,pcmpgtb,pcmpgtw,pcmpgtd,packuswb r : P,Q
0f.60-67 66 punpcklbw,punpcklwd,punpckldq,packsswb,pcmpgtb,pcmpgtw,pcmpgtd,packuswb r : V,W
0f.68-6b np punpckhbw,punpckhwd,punpckhdq,packssdw r : P,Q
0f.68-6d 66 punpckhbw,punpckhwd,punpckhdq,packssdw,punpcklqdq,punpckhqdq r : V,W
0f.6e * movd|movd|movq,movd|movd|movq,-,- r : P,Ey;V,Ey
0f.6f * movq,movdqa,movdqu,- r : P,Q;V,W;V,W
0f.70 * pshufw,pshufd,pshufhw,pshuflw r ib : P,Q,Ib;V,W,Ib;V,W,Ib;V,W,Ib
0f.71/2 np psrlw r reg ib : N,Ib
0f.71/4 np psraw r reg ib : N,Ib
0f.71/6 np psllw r reg ib : N,Ib
0f.71/2 66 psrlw r reg ib : U,Ib
0f.71/4 66 psraw r reg ib : U,Ib
0f.71/6 66 psllw r reg ib : U,Ib
0f.72/2 np psrld r reg ib : N,Ib
0f.72/4 np psrad r reg ib : N,Ib
0f.72/6 np pslld r reg ib : N,Ib
0f.72/2 66 psrld r reg ib : U,Ib
0f.72/4 66 psrad r reg ib : U,Ib
0f.72/6 66 pslld r reg ib : U,Ib
0f.73/2 np psrlq r reg ib : N,Ib
0f.73/6 np psllq r reg ib : N,Ib
0f.73/2-3 66 psrlq,psrldq r reg ib : U,Ib
0f.73/6-7 66 psllq,pslldq r reg ib : U,Ib
0f.74 * pcmpeqb,pcmpeqb,-,- r : P,Q;V,W
0f.75 * pcmpeqw,pcmpeqw,-,- r : P,Q;V,W
0f.76 * pcmpeqd,pcmpeqd,-,- r : P,Q;V,W
0f.77 np emms
0f.78 np vmread r f64 : Em,Gm
0f.78/0 66 extrq r reg ibib : U,Ib,Ib2
0f.78 f2 insertq r reg ibib : V,U,Ib,Ib2
0f.79 np vmwrite r f64 : Gm,Em
0f.79 66 extrq r reg : V,U
0f.79 f2 insertq r reg : V,U
0f.7c * -,haddpd,-,haddps r : V,W
0f.7d * -,hsubpd,-,hsubps r : V,W
0f.7e * movd|movd|movq,movd|movd|movq,movq,- r : Ey,P;Ey,V;V,Wq
0f.7f * movq,movdqa,movdqu,- r : Q,P;W,V;W,V
0f.80-8f {_cc("j")} iz f64 : +osz +bnd +hint J
0f.90-9f {_cc("set")} r b : Eb
0f.a0 push d64 : +osz fs
0f.a1 pop d64 : +osz fs
0f.a2 cpuid
0f.a3 bt r : Ev,Gv
0f.a4 shld r ib : Ev,Gv,Ib
0f.a5 shld r : Ev,Gv,cl
0f.a6/0 f3 montmul r reg a32 : +asz +rep
0f.a6/1-7 f3 xsha1,xsha256,xsha512_alt,xsha512,ccs_hash,via_undoc,via_undoc r reg : +asz +rep
0f.a7/0 xstore r reg : +asz +rep
0f.a7/1-7 f3 xcryptecb,xcryptcbc,xcryptctr,xcryptcfb,xcryptofb,ccs_encrypt,xstore_alt r reg : +asz +rep
0f.a8 push d64 : +osz gs
0f.a9 pop d64 : +osz gs
0f.aa rsm
0f.ab bts r lock : Ev,Gv
0f.ac shrd r ib : Ev,Gv,Ib
0f.ad shrd r : Ev,Gv,cl
0f.ae/0-1 np fxsave|fxsave|fxsave64,fxrstor|fxrstor|fxrstor64 r mem : M
0f.ae/2-3 np ldmxcsr,stmxcsr r mem : Md
0f.ae/4-6 np xsave|xsave|xsave64,xrstor|xrstor|xrstor64,xsaveopt|xsaveopt|xsaveopt64 r mem : M
0f.ae/7 np clflush r mem : Mb
0f.ae/6-7 66 clwb,clflushopt r mem : Mb
0f.ae/4 f3 ptwrite r no66 : Ey
0f.ae/6 f3 clrssbsy r mem : Mq
0f.ae/5-7 np lfence,mfence,sfence r reg
0f.ae/6 66 tpause r reg : Rd
0f.ae/0-3 f3 rdfsbase,rdgsbase,wrfsbase,wrgsbase r reg o64 : Ry
0f.ae/5-6 f3 incsspd|incsspd|incsspq,umonitor r reg : Ry;Ra
0f.ae/6 f2 umwait r reg : Rd
0f.af imul r : Gv,Ev
0f.b0 cmpxchg r b lock : Eb,Gb
0f.b1 cmpxchg r lock : Ev,Gv
0f.b2 lss r mem : Gv,Mp
0f.b3 btr r lock : Ev,Gv
0f.b4 lfs r mem : Gv,Mp
0f.b5 lgs r mem : Gv,Mp
0f.b6-b7 movzx r : Gv,Eb;Gv,Ew
0f.b8 f3 popcnt r : Gv,Ev
0f.b9 ud1 r : Gv,Ev
0f.ba/4 bt r ib : Ev,Ib
0f.ba/5-7 bts,btr,btc r ib lock : Ev,Ib
0f.bb btc r lock : Ev,Gv
0f.bc bsf r : Gv,Ev
0f.bc f3 tzcnt r : Gv,Ev
0f.bd bsr r : Gv,Ev
0f.bd f3 lzcnt r : Gv,Ev
0f.be-bf movsx r : Gv,Eb;Gv,Ew
0f.c0 xadd r b lock : Eb,Gb
0f.c1 xadd r lock : Ev,Gv
0f.c2 * cmpps,cmppd,cmpss,cmpsd r ib : V,W,Ib;V,W,Ib;V,Wd,Ib;V,Wq,Ib
0f.c3 np movnti r mem : My,Gy
0f.c4 * pinsrw,pinsrw,-,- r ib : P,Rd/Mw,Ib;V,Rd/Mw,Ib
0f.c5 * pextrw,pextrw,-,- r reg ib : Gd,N,Ib;Gd,U,Ib
0f.c6 * shufps,shufpd,-,- r ib : V,W,Ib
0f.c7/1 cmpxchg8b|cmpxchg8b|cmpxchg16b r mem lock : Mqo
0f.c7/3-5 np xrstors|xrstors|xrstors64,xsavec|xsavec|xsavec64,xsaves|xsaves|xsaves64 r mem : M
0f.c7/6 np vmptrld r mem : Mq
0f.c7/6 66 vmclear r mem : Mq
0f.c7/6 f3 vmxon r mem : Mq
0f.c7/7 np vmptrst r mem : Mq
0f.c7/6-7 np rdrand,rdseed r reg : Rv
0f.c7/6-7 66 rdrand,rdseed r reg : Rv
0f.c7/6 f3 senduipi r reg o64 : Rq
0f.c7/7 f3 rdpid r reg : Rm
0f.c8-cf bswap plusr : Zv
0f.d0 * -,addsubpd,-,addsubps r : V,W
0f.d1-d5 np psrlw,psrld,psrlq,paddq,pmullw r : P,Q
0f.d1-d5 66 psrlw,psrld,psrlq,paddq,pmullw r : V,W
0f.d6 66 movq r : Wq,V
0f.d6 f3 movq2dq r reg : V,N
0f.d6 f2 movdq2q r reg : P,U
0f.d7 * pmovmskb,pmovmskb,-,- r reg : Gd,N;Gd,U
0f.d8-df np psubusb,psubusw,pminub,pand,paddusb,paddusw,pmaxub,pandn r : P,Q
0f.d8-df 66 psubusb,psubusw,pminub,pand,paddusb,paddusw,pmaxub,pandn r : V,W
0f.e0-e5 np pavgb,psraw,psrad,pavgw,pmulhuw,pmulhw r : P,Q
0f.e0-e5 66 pavgb,psraw,psrad,pavgw,pmulhuw,pmulhw r : V,W
0f.e6 * -,cvttpd2dq,cvtdq2pd,cvtpd2dq r : V,W;V,Wq;V,W
0f.e7 * movntq,movntdq,-,- r mem : Mq,P;Mo,V
0f.e8-ef np psubsb,psubsw,pminsw,por,paddsb,paddsw,pmaxsw,pxor r : P,Q
0f.e8-ef 66 psubsb,psubsw,pminsw,por,paddsb,paddsw,pmaxsw,pxor r : V,W
0f.f0 f2 lddqu r mem : V,Mo
0f.f1-f6 np psllw,pslld,psllq,pmuludq,pmaddwd,psadbw r : P,Q
0f.f1-f6 66 psllw,pslld,psllq,pmuludq,pmaddwd,psadbw r : V,W
0f.f7 * maskmovq,maskmovdqu,-,- r reg : +asz +segop P,N;+asz +segop V,U
0f.f8-fe np psubb,psubw,psubd,psubq,paddb,paddw,paddd r : P,Q
0f.f8-fe 66 psubb,psubw,psubd,psubq,paddb,paddw,paddd r : V,W
0f.ff ud0 r : Gv,Ev

# ---- 0F 38 map (always ModRM, no immediate) ----
0f.38.00-05 np pshufb,phaddw,phaddd,phaddsw,pmaddubsw,phsubw r : P,Q
0f.38.06-0b np phsubd,phsubsw,psignb,psignw,psignd,pmulhrsw r : P,Q
0f.38.00-05 66 pshufb,phaddw,phaddd,phaddsw,pmaddubsw,phsubw r : V,W
0f.38.06-0b 66 phsubd,phsubsw,psignb,psignw,psignd,pmulhrsw r : V,W
0f.38.10 66 pblendvb r : V,W
0f.38.14-15 66 blendvps,blendvpd r : V,W
0f.38.17 66 ptest r : V,W
0f.38.1c-1e np pabsb,pabsw,pabsd r : P,Q
0f.38.1c-1e 66 pabsb,pabsw,pabsd r : V,W
0f.38.20-25 66 pmovsxbw,pmovsxbd,pmovsxbq,pmovsxwd,pmovsxwq,pmovsxdq r : V,Wq;V,Wd;V,Ww;V,Wq;V,Wd;V,Wq
0f.38.28-29 66 pmuldq,pcmpeqq r : V,W
0f.38.2a 66 movntdqa r mem : V,Mo
0f.38.2b 66 packusdw r : V,W
0f.38.30-35 66 pmovzxbw,pmovzxbd,pmovzxbq,pmovzxwd,pmovzxwq,pmovzxdq r : V,Wq;V,Wd;V,Ww;V,Wq;V,Wd;V,Wq
0f.38.37-41 66 pcmpgtq,pminsb,pminsd,pminuw,pminud,pmaxsb,pmaxsd,pmaxuw,pmaxud,pmulld,phminposuw r : V,W
0f.38.80-82 66 invept,invvpid,invpcid r mem : Gm,Mo
0f.38.c8-cd np sha1nexte,sha1msg1,sha1msg2,sha256rnds2,sha256msg1,sha256msg2 r : V,W
0f.38.cf 66 gf2p8mulb r : V,W
0f.38.db-df 66 aesimc,aesenc,aesenclast,aesdec,aesdeclast r : V,W
0f.38.f0 np movbe r mem : Gv,Mv
0f.38.f0 66 movbe r mem : Gv,Mv
0f.38.f0 f2 crc32 r b : Gy,Eb
0f.38.f1 np movbe r mem : Mv,Gv
0f.38.f1 66 movbe r mem : Mv,Gv
0f.38.f1 f2 crc32 r : Gy,Ev
0f.38.f5 66 wrussd|wrussd|wrussq r mem : My,Gy
0f.38.f6 np wrssd|wrssd|wrssq r mem : My,Gy
0f.38.f6 66 adcx r : Gy,Ey
0f.38.f6 f3 adox r : Gy,Ey
0f.38.f8 66 movdir64b r mem : Ga,Mz
0f.38.f8 f3 enqcmds r mem : Ga,Mz
0f.38.f8 f2 enqcmd r mem : Ga,Mz
0f.38.f9 np movdiri r mem : My,Gy
0f.38.fa-fb f3 encodekey128,encodekey256 r reg : Gd,Rd
0f.38.fc * aadd,aand,axor,aor r mem : My,Gy
0f.38.d8/0-3 f3 aesencwide128kl,aesdecwide128kl,aesencwide256kl,aesdecwide256kl r mem : Mk;Mk;Mz;Mz
0f.38.dc-df f3 aesenc128kl,aesdec128kl,aesenc256kl,aesdec256kl r mem : V,Mk;V,Mk;V,Mz;V,Mz
0f.38.dc f3 loadiwkey r reg : V,U

# ---- 0F 3A map (always ModRM and imm8) ----
0f.3a.08-0b 66 roundps,roundpd,roundss,roundsd r ib : V,W,Ib;V,W,Ib;V,Wd,Ib;V,Wq,Ib
0f.3a.0c-0e 66 blendps,blendpd,pblendw r ib : V,W,Ib
0f.3a.0f np palignr r ib : P,Q,Ib
0f.3a.0f 66 palignr r ib : V,W,Ib
0f.3a.14-17 66 pextrb,pextrw,pextrd|pextrd|pextrq,extractps r ib : Rd/Mb,V,Ib;Rd/Mw,V,Ib;Ey,V,Ib;Ed,V,Ib
0f.3a.20-22 66 pinsrb,insertps,pinsrd|pinsrd|pinsrq r ib : V,Rd/Mb,Ib;V,U/Md,Ib;V,Ey,Ib
0f.3a.40-42 66 dpps,dppd,mpsadbw r ib : V,W,Ib
0f.3a.44 66 pclmulqdq r ib : V,W,Ib
0f.3a.60-63 66 pcmpestrm,pcmpestri,pcmpistrm,pcmpistri r ib : V,W,Ib
0f.3a.cc np sha1rnds4 r ib : V,W,Ib
0f.3a.ce-cf 66 gf2p8affineqb,gf2p8affineinvqb r ib : V,W,Ib
0f.3a.df 66 aeskeygenassist r ib : V,W,Ib
0f.3a.f0=c0 f3 hreset r ib : Ib
"""

# 3DNow! opcodes (the byte after ModRM/SIB/displacement of 0F 0F).
AMD_3DNOW: dict[int, str] = {
    0x0C: "pi2fw",
    0x0D: "pi2fd",
    0x1C: "pf2iw",
    0x1D: "pf2id",
    0x8A: "pfnacc",
    0x8E: "pfpnacc",
    0x90: "pfcmpge",
    0x94: "pfmin",
    0x96: "pfrcp",
    0x97: "pfrsqrt",
    0x9A: "pfsub",
    0x9E: "pfadd",
    0xA0: "pfcmpgt",
    0xA4: "pfmax",
    0xA6: "pfrcpit1",
    0xA7: "pfrsqit1",
    0xAA: "pfsubr",
    0xAE: "pfacc",
    0xB0: "pfcmpeq",
    0xB4: "pfmul",
    0xB6: "pfrcpit2",
    0xB7: "pmulhrw",
    0xBB: "pswapd",
    0xBF: "pavgusb",
}


def _hexset(text: str) -> frozenset[int]:
    """Parse "10-17 28 2a" into a set of byte values."""
    out: set[int] = set()
    for tok in text.split():
        lo, _, hi = tok.partition("-")
        out.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return frozenset(out)


# Opcode bytes that exist in each VEX/EVEX/XOP map (in some vector length / W / pp combination), and the
# bytes that take an imm8 (every opcode of VEX/EVEX map 3 and XOP map 8 does).
VEX_OPCODES: dict[int, frozenset[int]] = {
    1: _hexset("10-17 28-2f 41-42 44-47 4a-4b 50-77 7c-7f 90-93 98-99 ae c2 c4-c6 d0-fe"),
    2: _hexset(
        "00-0f 13 16-1a 1c-1e 20-25 28-41 45-47 49 4b 50-53 58-5a 5c 5e 6c 72 78-79 8c 8e 90-93 96-9f a6-b1"
        " b4-bf cb-cd cf d2-d3 da-ef f2-f3 f5-f7"
    ),
    3: _hexset(
        "00-02 04-06 08-0f 14-19 1d 20-22 30-33 38-39 40-42 44 46 48-4c 5c-5f 60-63 68-6f 78-7f ce-cf"
        " de-df f0"
    ),
}
VEX_IMM8: dict[int, frozenset[int]] = {1: _hexset("70-73 c2 c4-c6"), 2: frozenset(), 3: _hexset("00-ff")}
VEX_NO_MODRM = {(1, 0x77)}  # vzeroupper / vzeroall

EVEX_OPCODES: dict[int, frozenset[int]] = {
    1: _hexset("10-17 28-2f 51 54-76 78-7b 7e-7f c2 c4-c6 d1-d6 d8-ef f1-f6 f8-fe"),
    2: _hexset(
        "00 04 0b-0d 10-16 18-2d 30-40 42-47 4c-55 58-5b 62-66 68 70-73 75-7f 83 88-8b 8d 8f-93 96-a3 a6-af"
        " b4-bf c4 c6-c8 ca-cd cf dc-df"
    ),
    3: _hexset("00-01 03-05 08-0b 0f 14-1b 1d-23 25-27 38-3b 3e-3f 42-44 50-51 54-57 66-67 70-73 c2 ce-cf"),
    5: _hexset("10-11 1d 2a 2c-2f 51 58-5f 6e 78-7e"),
    6: _hexset("13 2c-2d 42-43 4c-4f 56-57 96-9f a6-af b6-bf d6-d7"),
}
EVEX_IMM8: dict[int, frozenset[int]] = {
    1: _hexset("70-73 c2 c4-c6"),
    2: frozenset(),
    3: _hexset("00-ff"),
    5: frozenset(),
    6: frozenset(),
}

# EVEX compressed displacement (SDM Vol. 2, 2.7.5): a disp8 is multiplied by N, which the tuple type of
# the form decides. One row per map, mandatory prefix and (where the forms differ) EVEX.W; the rule is
# a fixed N, `w1`/`w4` (1 or 4 bytes times 2**W: Tuple1 Scalar of b/w or d/q elements; `r4` where the
# element is a GPR, whose W1 form is 64-bit only: W is ignored in other modes), `vl` and its
# fractions (Full Mem, Half/Quarter/Eighth Mem; with `+bN` Full or Half Vector, where EVEX.b broadcasts
# one element of N bytes, `+bw` one of 4 * 2**W), or `dup` (VMOVDDUP: 8 at 128 bits, else the full
# vector). Bytes absent here have no EVEX memory form (#UD), and are left unscaled.
EVEX_DISP8 = """
0f.np        4        2e-2f
0f.np        8        12-13 16-17
0f.np        vl       10-11 28-29 2b
0f.np        vl+b4    14-15 51 54-59 5c-5f c2 c6
0f.np        vl+bw    5b 78-79
0f.np        vl/2+b4  5a
0f.66        16       d1-d3 e1-e2 f1-f3
0f.66        2        c4
0f.66        8        12-13 16-17 2e-2f d6
0f.66        vl       10-11 28-29 2b 60-61 63-65 67-69 6f 71 74-75 7f d5 d8-da dc-de e0 e3-e5 e7-ea ec-ee
0f.66        vl       f5-f6 f8-f9 fc-fd
0f.66        vl+b4    5b 62 66 6a-6b 70 76 fa fe
0f.66        vl+b8    14-15 51 54-5a 5c-5f 6c-6d 73 c2 c6 d4 e6 f4 fb
0f.66        vl+bw    72 db df eb ef
0f.66        r4       6e 7e
0f.66.w0     vl/2+b4  78-7b
0f.66.w1     vl+b8    78-7b
0f.f3        4        10-11 2c-2d 51 58-5a 5c-5f 78-79 c2
0f.f3        8        7e
0f.f3        vl       12 16 6f-70 7f
0f.f3        vl+b4    5b
0f.f3        r4       2a 7b
0f.f3.w0     vl/2+b4  7a e6
0f.f3.w1     vl+b8    7a e6
0f.f2        8        10-11 2c-2d 51 58-5a 5c-5f 78-79 c2
0f.f2        dup      12
0f.f2        vl       6f-70 7f
0f.f2        vl+b8    e6
0f.f2        vl+bw    7a
0f.f2        r4       2a 7b
0f38.66      1        78
0f38.66      16       1a 5a
0f38.66      2        79
0f38.66      32       1b 5b
0f38.66      4        18 58
0f38.66      8        19 59
0f38.66      vl       00 04 0b 10-12 1c-1d 26 2a 38 3a 3c 3e 54 66 70 72 75 7d 8d 8f cf dc-df
0f38.66      vl+b4    0c 1e 2b 50-53
0f38.66      vl+b8    0d 1f 28-29 37 83 b4-b5
0f38.66      vl+bw    14-16 27 2c 36 39 3b 3d 3f-40 42 44-47 4c 4e 55 64-65 71 73 76-77 7e-7f 96-98 9a 9c 9e
0f38.66      vl+bw    a6-a8 aa ac ae b6-b8 ba bc be c4 c8 ca cc
0f38.66      vl/2     13 20 23 25 30 33 35
0f38.66      vl/4     21 24 31 34
0f38.66      vl/8     22 32
0f38.66      w1       62-63
0f38.66      w4       2d 43 4d 4f 88-8b 90-93 99 9b 9d 9f-a3 a9 ab ad af b9 bb bd bf c6-c7 cb cd
0f38.f3      vl       26
0f38.f3      vl+b4    52 72
0f38.f3      vl+bw    27
0f38.f3      vl/2     10 13 15 20 23 25 30 33 35
0f38.f3      vl/4     11 14 21 24 31 34
0f38.f3      vl/8     12 22 32
0f38.f2      16       52-53 9a-9b aa-ab
0f38.f2      vl+b4    72
0f38.f2      vl+bw    68
0f3a.np      2        0a 27 57 67
0f3a.np      vl+b2    08 26 56 66 c2
0f3a.66      1        14 20
0f3a.66      16       18-19 38-39
0f3a.66      2        15
0f3a.66      32       1a-1b 3a-3b
0f3a.66      4        0a 17 21
0f3a.66      8        0b
0f3a.66      vl       0f 3e-3f 42 44 70 72
0f3a.66      vl+b4    04 08
0f3a.66      vl+b8    00-01 05 09 ce-cf
0f3a.66      vl+bw    03 1e-1f 23 25-26 43 50 54 56 66 71 73
0f3a.66      vl/2     1d
0f3a.66      r4       16 22
0f3a.66      w4       27 51 55 57 67
0f3a.f3      2        c2
map5.np      2        2e-2f
map5.np      4        1d
map5.np      vl+b2    51 58-59 5c-5f 7c-7d
map5.np      vl+bw    5b
map5.np      vl/2+b2  78-79
map5.np      vl/4+b2  5a
map5.66      2        6e 7e
map5.66      vl+b2    7c-7d
map5.66      vl+b4    1d
map5.66      vl+b8    5a
map5.66      vl/2+b2  5b
map5.66      vl/4+b2  78-7b
map5.f3      2        10-11 2c-2d 51 58-5a 5c-5f 78-79
map5.f3      vl+b2    7d
map5.f3      vl/2+b2  5b
map5.f3      r4       2a 7b
map5.f2      8        5a
map5.f2      vl+b2    7d
map5.f2      vl+bw    7a
map6.np      2        13
map6.66      2        2d 43 4d 4f 99 9b 9d 9f a9 ab ad af b9 bb bd bf
map6.66      vl+b2    2c 42 4c 4e 96-98 9a 9c 9e a6-a8 aa ac ae b6-b8 ba bc be
map6.66      vl/2+b2  13
map6.f3      4        57 d7
map6.f3      vl+b4    56 d6
map6.f2      4        57 d7
map6.f2      vl+b4    56 d6
"""

# VEX/EVEX gathers and scatters: the SIB index field names a vector register (SDM Vol. 2, 2.3.12).
VSIB_OPCODES: dict[int, frozenset[int]] = {1: _hexset("90-93"), 2: _hexset("90-93 a0-a3 c6-c7")}


_VEC_MAP_NUMBERS = {"0f": 1, "0f38": 2, "0f3a": 3, "map5": 5, "map6": 6, "xop8": 8, "xop9": 9, "xopa": 10}
_N_BASE = {"vl": 1, "vl/2": 2, "vl/4": 4, "vl/8": 8}


def _disp8_rule(rule: str, w: int, mode: int) -> tuple[int, int, int, int, int]:
    """N for EVEX.L'L = 0, 1, 2, 3 without broadcast, then N with EVEX.b (0: the form cannot broadcast)."""
    base, _, bcast = rule.partition("+")
    nb = {"": 0, "b2": 2, "b4": 4, "b8": 8, "bw": 4 << w}[bcast]
    if base in _N_BASE:
        n = [(16 << vl) // _N_BASE[base] for vl in (0, 1, 2, 2)]  # L'L = 3 is reserved (#UD)
    elif base == "dup":
        n = [8, 32, 64, 64]
    else:
        fixed = {"w1": 1 << w, "w4": 4 << w, "r4": 4 << w if mode == 64 else 4}
        n = [fixed.get(base) or int(base)] * 4
    return n[0], n[1], n[2], n[3], nb


def _compile_disp8(mode: int) -> dict[int, tuple[int, int, int, int, int]]:
    """EVEX_DISP8 as a dict keyed by map << 11 | pp << 9 | W << 8 | opcode; W-specific rows win."""
    out: dict[int, tuple[int, int, int, int, int]] = {}
    rows = [line.split(maxsplit=2) for line in EVEX_DISP8.strip().splitlines()]
    for only_w in (False, True):
        for where, rule, ops in rows:
            vmap, pp, *wq = where.split(".")
            if bool(wq) != only_w:
                continue
            for w in [int(wq[0][1])] if wq else [0, 1]:
                key = _VEC_MAP_NUMBERS[vmap] << 11 | _PFX_NAMES[pp] << 9 | w << 8
                for op in _hexset(ops):
                    out[key | op] = _disp8_rule(rule, w, mode)
    return out


EVEX_DISP8_N = {m: _compile_disp8(m) for m in (16, 32, 64)}
"""Per mode: EVEX_DISP8 keyed by map << 11 | pp << 9 | W << 8 | opcode."""

XOP_OPCODES: dict[int, frozenset[int]] = {
    8: _hexset("85-87 8e-8f 95-97 9e-9f a2-a3 a6 b6 c0-c3 cc-cf ec-ef"),
    9: _hexset("01-02 12 80-83 90-9b c1-c3 c6-c7 cb d1-d3 d6-d7 db e1-e3"),
    10: _hexset("10 12"),
}
XOP_IMM: dict[int, int] = {8: I_B, 9: I_NONE, 10: I_D}


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the table after parsing (one mnemonic, one opcode, one prefix/ModRM selection)."""

    opmap: OpMap
    opcode: int
    mnemonic: str  # "a|b|c" for size-dependent names
    pfx: int | None  # 0 none, 1 66, 2 F3, 3 F2 (mandatory prefix), or None for any
    reg: int | None  # ModRM.reg restriction
    modrm: int | None  # exact ModRM byte (register form)
    flags: int
    imm: int
    ops: str = ""  # operand codes for the formatter ("Ev,Gv"); not part of decoder entries


_MAP_BY_ESCAPE = {(): OpMap.ONE, (0x0F,): OpMap.M0F, (0x0F, 0x38): OpMap.M0F38, (0x0F, 0x3A): OpMap.M0F3A}


def _span(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo, 16), int(hi or lo, 16) + 1))


def _parse_line(line: str) -> list[Row]:
    """Expand one text row into Forms: one per opcode, ModRM selection and mandatory prefix."""
    line, _, opspec = line.partition(" : ")
    head, *rest = line.split()
    regs: list[int | None] = [None]
    modrms: list[int | None] = [None]
    if "/" in head:
        head, sel = head.split("/")
        regs = [r for r in _span(sel)]
    elif "=" in head:
        head, sel = head.split("=")
        modrms = [m for m in _span(sel)]
    *escape, last = head.split(".")
    opmap = _MAP_BY_ESCAPE[tuple(int(b, 16) for b in escape)]
    shapes = list(itertools.product(_span(last), regs, modrms))
    variants: list[tuple[int | None, str]]
    if rest[0] == "*":
        variants = list(zip((0, 1, 2, 3), rest[1].split(","), strict=True))
        flag_toks = rest[2:]
    elif rest[0] in _PFX_NAMES:
        variants = [(_PFX_NAMES[rest[0]], rest[1])]
        flag_toks = rest[2:]
    else:
        variants = [(None, rest[0])]
        flag_toks = rest[1:]
    flags = F_REG if modrms != [None] else 0
    imm = I_NONE
    for t in flag_toks:
        if t in _IMM_NAMES:
            imm = _IMM_NAMES[t]
        else:
            flags |= _FLAG_NAMES[t]
    variants = [(pfx, names) for pfx, names in variants if names != "-"]
    specs = opspec.strip().split(";")
    if len(variants) > 1:  # a "*" row: one operand list per live prefix, or one for all
        per_variant = specs if len(specs) == len(variants) else specs * len(variants)
        specs_by_variant = [[s] for s in per_variant]
    else:
        specs_by_variant = [specs]
    forms: list[Row] = []
    for (pfx, names), ops in zip(variants, specs_by_variant, strict=True):
        mnemonics = names.split(",")
        if len(mnemonics) == 1:
            mnemonics *= len(shapes)
        if len(ops) == 1:
            ops = ops * len(shapes)
        if len(mnemonics) != len(shapes) or len(ops) != len(shapes):
            raise ValueError(f"one mnemonic/operand list, or one per opcode/ModRM selection: {line!r}")
        for mn, op_list, (op, reg, modrm) in zip(mnemonics, ops, shapes, strict=True):
            if modrm is not None:
                reg = modrm >> 3 & 7
            forms.append(Row(opmap, op, mn, pfx, reg, modrm, flags, imm, op_list))
    return forms


def _parse(text: str) -> tuple[Row, ...]:
    forms: list[Row] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            forms.extend(_parse_line(line))
    return tuple(forms)


ROWS: tuple[Row, ...] = _parse(_LEGACY_ROWS)
"""Every legacy-encoded form, in table order (also the reference list of what the decoder knows)."""

# ---- compiled lookup structures ----

# Entry shapes: how the bytes after the opcode start.
S_NONE = 0  # no ModRM
S_MODRM = 1  # ModRM (and SIB/displacement for memory forms)
S_PLUSR = 2  # no ModRM, register in the opcode's low bits
S_NOMOD = 3  # ModRM whose mod is ignored: always register operands
S_SPECIAL = 4  # C4/C5/62/8F: a VEX/EVEX/XOP prefix, or the legacy form in `sub`, by the next byte
_RARE = F_3DNOW | F_SIZED | F_ASIZED | F_NOMOD | F_A32 | F_XCHG | F_NO66
# Rare-flag classes: none, only a size-chosen mnemonic (string ops: kept on the hot path), anything else.
R_NONE, R_SIZED, R_OTHER = 0, 1, 2

# An entry is (flags, imm_kind, mnemonic, opmap, sub, shape, rare, opsizes), all precomputed so the
# decoder's hot path needs no bitwise operations (unspecialised in CPython 3.11, they cost more than a
# tuple field):
# - `mnemonic` is a str, or a (16, 32, 64) tuple when flags has F_SIZED/F_ASIZED;
# - `sub` is None for a leaf; else a list of 4 * 72 entries (None: undefined) indexed by
#   mandatory-prefix index * 72 + GROUP_KEY[modrm], or for F_SPECIAL [the legacy entry];
# - `rare` is R_NONE, R_SIZED (mnemonic by operand size) or R_OTHER (flags handled off the hot path);
# - `opsizes` is the operand size for this mode indexed by (66 ? 1 : 0) + (REX.W ? 2 : 0);
# - `widths` likewise the width of the operation in bytes: 1 for byte forms, else the operand size.
Entry = tuple[
    int, int, "str | tuple[str, str, str]", OpMap, "list[Entry | None] | None", int, int, list[int], list[int]
]

# ModRM -> 0..7 for memory forms (by reg), 8..71 for register forms (by reg and rm).
GROUP_KEY: list[int] = [(m >> 3 & 7) if m < 0xC0 else 8 + (m & 0x3F) for m in range(256)]
_NKEYS = 72


def opsizes(mode: int, flags: int) -> list[int]:
    """Operand size by (66, REX.W) for one mode and the form's d64/f64 flags."""
    if mode == 16:
        return [2, 4, 2, 4]
    if mode == 32:
        return [4, 2, 4, 2]
    if flags & F_F64:
        return [8, 8, 8, 8]
    if flags & F_NW:
        return [4, 2, 4, 4]  # REX.W still overrides 66, then the size stays 32
    return [8 if flags & F_D64 else 4, 2, 8, 8]


def _keys(form: Row) -> list[int]:
    """The GROUP_KEY values (ModRM classes) a row applies to."""
    if form.modrm is not None:
        return [8 + (form.modrm & 0x3F)]
    regs = range(8) if form.reg is None else [form.reg]
    keys: list[int] = []
    if not form.flags & F_REG:
        keys.extend(regs)
    if not form.flags & F_MEM:
        keys.extend(8 + r * 8 + rm for r in regs for rm in range(8))
    return keys


def _specificity(form: Row) -> int:
    return (
        (8 if form.modrm is not None else 0)
        + (4 if form.pfx is not None else 0)
        + (2 if form.reg is not None else 0)
        + (1 if form.flags & (F_MEM | F_REG) else 0)
    )


def _shape(flags: int) -> int:
    if flags & F_NOMOD:
        return S_NOMOD
    if flags & F_MODRM:
        return S_MODRM
    return S_PLUSR if flags & F_PLUSR else S_NONE


def make_entry(flags: int, imm: int, mnemonic: str, opmap: OpMap, mode: int) -> Entry:
    """A leaf entry; "a|b|c" mnemonics become a size-indexed tuple."""
    mn: str | tuple[str, str, str] = mnemonic
    if "|" in mnemonic:
        a, b, c = mnemonic.split("|")
        mn = (a, b, c)
        flags |= F_ASIZED if flags & F_ASIZED else F_SIZED
    sizes = opsizes(mode, flags)
    widths = [1, 1, 1, 1] if flags & F_BYTE else sizes
    flags &= 0xFFFF
    rare = R_NONE if not flags & _RARE else R_SIZED if flags & _RARE == F_SIZED else R_OTHER
    return (flags, imm, mn, opmap, None, _shape(flags), rare, sizes, widths)


def _leaf(form: Row, mode: int) -> Entry:
    opmap = OpMap.X87 if form.opmap == OpMap.ONE and 0xD8 <= form.opcode <= 0xDF else form.opmap
    return make_entry(form.flags, form.imm, form.mnemonic, opmap, mode)


_Selection = tuple[list[Row], "Row | list[Row | None]"]


def _select(forms: list[Row], mode: int) -> _Selection | None:
    """The rows of one opcode live in one mode, and what they resolve to: a single form, or the form of
    each dispatch slot (mandatory-prefix index * 72 + GROUP_KEY[modrm]); None when no row is live."""
    live = [f for f in forms if not (mode == 64 and f.flags & F_I64) and not (mode != 64 and f.flags & F_O64)]
    if not live:
        return None
    first = live[0]
    has_modrm = bool(first.flags & F_MODRM)
    if any(bool(f.flags & F_MODRM) != has_modrm for f in live):
        raise ValueError(f"rows disagree on ModRM for {first}")
    simple = first.pfx is None and first.reg is None and first.modrm is None
    if len(live) == 1 and simple and not first.flags & (F_MEM | F_REG):
        return live, first
    best: list[Row | None] = [None] * (4 * _NKEYS)
    for f in live:
        spec = _specificity(f)
        keys = _keys(f) if has_modrm else list(range(_NKEYS))
        for pfx in range(4) if f.pfx is None else [f.pfx]:
            for key in keys:
                slot = pfx * _NKEYS + key
                old = best[slot]
                if old is None or _specificity(old) < spec:
                    best[slot] = f
                elif _specificity(old) == spec:
                    raise ValueError(f"ambiguous rows {old} and {f}")
    return live, best


def _compile(forms: list[Row], mode: int) -> Entry | None:
    """Turn the rows of one opcode into a leaf or a dispatch entry for one mode."""
    found = _select(forms, mode)
    if found is None:
        return None
    live, selected = found
    if isinstance(selected, Row):
        return _leaf(selected, mode)
    first = live[0]
    leaves = {id(f): _leaf(f, mode) for f in live}
    sub: list[Entry | None] = [None if f is None else leaves[id(f)] for f in selected]
    flags = first.flags & F_MODRM | F_SUB
    sizes = opsizes(mode, 0)
    return (flags, I_NONE, "", first.opmap, sub, _shape(flags), R_NONE, sizes, sizes)


def _rows_by_opcode() -> dict[tuple[OpMap, int], list[Row]]:
    by_op: dict[tuple[OpMap, int], list[Row]] = {}
    for f in ROWS:
        by_op.setdefault((f.opmap, f.opcode), []).append(f)
    return by_op


def _build(mode: int) -> dict[OpMap, list[Entry | None]]:
    by_op = _rows_by_opcode()
    tables: dict[OpMap, list[Entry | None]] = {}
    for m in (OpMap.ONE, OpMap.M0F, OpMap.M0F38, OpMap.M0F3A):
        tables[m] = [_compile(by_op.get((m, op), []), mode) for op in range(256)]
    one = tables[OpMap.ONE]
    # Bytes that may start VEX/EVEX/XOP: the decoder's special path looks at the next byte.
    for op in (0xC4, 0xC5, 0x62, 0x8F):
        sizes = opsizes(mode, 0)
        one[op] = (F_SPECIAL, I_NONE, "", OpMap.ONE, [one[op]], S_SPECIAL, R_NONE, sizes, sizes)
    return tables


LEGACY: dict[int, dict[OpMap, list[Entry | None]]] = {m: _build(m) for m in (16, 32, 64)}
"""Per mode, per legacy map: 256 entries indexed by opcode (None: undefined)."""


@cache
def _form_index(mode: int) -> dict[tuple[OpMap, int], Row | list[Row | None]]:
    """The row behind every LEGACY entry, resolved exactly as `_compile` resolves it. Built on first use:
    only the formatter needs it, and the decoder's entries stay the compact tuples its hot path reads."""
    out: dict[tuple[OpMap, int], Row | list[Row | None]] = {}
    for key, forms in _rows_by_opcode().items():
        found = _select(forms, mode)
        if found is not None:
            out[key] = found[1]
    return out


def legacy_form(mode: int, opmap: OpMap, opcode: int, pfx: int, modrm: int) -> Row | None:
    """The table row a legacy instruction decoded from (pfx: mandatory-prefix index 0-3 as the decoder
    chose it; modrm: -1 without one). For the formatter: off the decoder's hot path."""
    selected = _form_index(mode).get((opmap, opcode))
    if selected is None or isinstance(selected, Row):
        return selected
    return selected[pfx * _NKEYS + (GROUP_KEY[modrm] if modrm >= 0 else 0)]


# ---- vector forms, for the formatter ----
#
# The decoder knows the VEX/EVEX opcode space coarsely (VEX_OPCODES and friends); the formatter needs the
# mnemonic and operands of each form. One row per form: ``<enc> <map>.<pp>.<opcode>[/<reg>] [<flag>...]
# <mnemonic> [: <operands>]``. ``enc`` is ``v`` (VEX), ``e`` (EVEX), ``ve`` (both) or ``x`` (XOP); ranges and
# comma lists of mnemonics work as in the legacy rows; ``a|b`` is the W0|W1 mnemonic. Flags: ``w0``/``w1``
# and ``l0``/``l1`` restrict VEX/EVEX.W and VEX.L, ``mem``/``reg`` ModRM.mod, ``er``/``sae`` the EVEX.b
# meaning on register forms (embedded rounding, suppress-all-exceptions). Rows of one encoding win over
# ``ve`` rows. Compiled on first use by `vector_forms`; the decoder never reads them.
_VECTOR_ROWS = """
# ---- VEX/EVEX map 0F ----
ve 0f.np.10 vmovups : V,W
ve 0f.66.10 vmovupd : V,W
ve 0f.f3.10 reg vmovss : Vo,Ho,Uo
ve 0f.f3.10 mem vmovss : Vo,Md
ve 0f.f2.10 reg vmovsd : Vo,Ho,Uo
ve 0f.f2.10 mem vmovsd : Vo,Mq
ve 0f.np.11 vmovups : W,V
ve 0f.66.11 vmovupd : W,V
ve 0f.f3.11 reg vmovss : Uo,Ho,Vo
ve 0f.f3.11 mem vmovss : Md,Vo
ve 0f.f2.11 reg vmovsd : Uo,Ho,Vo
ve 0f.f2.11 mem vmovsd : Mq,Vo
ve 0f.np.12 mem vmovlps : Vo,Ho,Mq
ve 0f.np.12 reg vmovhlps : Vo,Ho,Uo
ve 0f.66.12 mem vmovlpd : Vo,Ho,Mq
ve 0f.f3.12 vmovsldup : V,W
ve 0f.f2.12 vmovddup : V,Wu
ve 0f.np.13 mem vmovlps : Mq,Vo
ve 0f.66.13 mem vmovlpd : Mq,Vo
ve 0f.np.14-15 vunpcklps,vunpckhps : V,H,W
ve 0f.66.14-15 vunpcklpd,vunpckhpd : V,H,W
ve 0f.np.16 mem vmovhps : Vo,Ho,Mq
ve 0f.np.16 reg vmovlhps : Vo,Ho,Uo
ve 0f.66.16 mem vmovhpd : Vo,Ho,Mq
ve 0f.f3.16 vmovshdup : V,W
ve 0f.np.17 mem vmovhps : Mq,Vo
ve 0f.66.17 mem vmovhpd : Mq,Vo
ve 0f.np.28 vmovaps : V,W
ve 0f.66.28 vmovapd : V,W
ve 0f.np.29 vmovaps : W,V
ve 0f.66.29 vmovapd : W,V
ve 0f.f3.2a er vcvtsi2ss : Vo,Ho,Ey
ve 0f.f2.2a er vcvtsi2sd : Vo,Ho,Ey
ve 0f.np.2b mem vmovntps : M,V
ve 0f.66.2b mem vmovntpd : M,V
ve 0f.f3.2c sae vcvttss2si : Gy,Wd
ve 0f.f2.2c sae vcvttsd2si : Gy,Wq
ve 0f.f3.2d er vcvtss2si : Gy,Wd
ve 0f.f2.2d er vcvtsd2si : Gy,Wq
ve 0f.np.2e-2f sae vucomiss,vcomiss : Vo,Wd
ve 0f.66.2e-2f sae vucomisd,vcomisd : Vo,Wq
v 0f.np.41-42 l1 kandw|kandq,kandnw|kandnq : K,Kh,Kr
v 0f.66.41-42 l1 kandb|kandd,kandnb|kandnd : K,Kh,Kr
v 0f.np.44 l0 knotw|knotq : K,Kr
v 0f.66.44 l0 knotb|knotd : K,Kr
v 0f.np.45-47 l1 korw|korq,kxnorw|kxnorq,kxorw|kxorq : K,Kh,Kr
v 0f.66.45-47 l1 korb|kord,kxnorb|kxnord,kxorb|kxord : K,Kh,Kr
v 0f.np.4a l1 kaddw|kaddq : K,Kh,Kr
v 0f.66.4a l1 kaddb|kaddd : K,Kh,Kr
v 0f.np.4b l1 kunpckwd|kunpckdq : K,Kh,Kr
v 0f.66.4b l1 w0 kunpckbw : K,Kh,Kr
v 0f.np.50 reg vmovmskps : Gd,U
v 0f.66.50 reg vmovmskpd : Gd,U
ve 0f.np.51 er vsqrtps : V,W
ve 0f.66.51 er vsqrtpd : V,W
ve 0f.f3.51 er vsqrtss : Vo,Ho,Wd
ve 0f.f2.51 er vsqrtsd : Vo,Ho,Wq
v 0f.np.52-53 vrsqrtps,vrcpps : V,W
v 0f.f3.52-53 vrsqrtss,vrcpss : Vo,Ho,Wd
e 0f.np.54-57 vandps,vandnps,vorps,vxorps : V,H,W
e 0f.66.54-57 vandpd,vandnpd,vorpd,vxorpd : V,H,W
v 0f.np.54-57 vandps,vandnps,vorps,vxorps : V,H,W
v 0f.66.54-57 vandpd,vandnpd,vorpd,vxorpd : V,H,W
ve 0f.np.58-59 er vaddps,vmulps : V,H,W
ve 0f.66.58-59 er vaddpd,vmulpd : V,H,W
ve 0f.f3.58-59 er vaddss,vmulss : Vo,Ho,Wd
ve 0f.f2.58-59 er vaddsd,vmulsd : Vo,Ho,Wq
ve 0f.np.5a sae vcvtps2pd : V,Wh
ve 0f.66.5a er vcvtpd2ps : Vh,W
ve 0f.f3.5a sae vcvtss2sd : Vo,Ho,Wd
ve 0f.f2.5a er vcvtsd2ss : Vo,Ho,Wq
v 0f.np.5b vcvtdq2ps : V,W
e 0f.np.5b w0 er vcvtdq2ps : V,W
e 0f.np.5b w1 er vcvtqq2ps : Vh,W
ve 0f.66.5b er vcvtps2dq : V,W
ve 0f.f3.5b sae vcvttps2dq : V,W
ve 0f.np.5c er vsubps : V,H,W
ve 0f.66.5c er vsubpd : V,H,W
ve 0f.f3.5c er vsubss : Vo,Ho,Wd
ve 0f.f2.5c er vsubsd : Vo,Ho,Wq
ve 0f.np.5d sae vminps : V,H,W
ve 0f.66.5d sae vminpd : V,H,W
ve 0f.f3.5d sae vminss : Vo,Ho,Wd
ve 0f.f2.5d sae vminsd : Vo,Ho,Wq
ve 0f.np.5e er vdivps : V,H,W
ve 0f.66.5e er vdivpd : V,H,W
ve 0f.f3.5e er vdivss : Vo,Ho,Wd
ve 0f.f2.5e er vdivsd : Vo,Ho,Wq
ve 0f.np.5f sae vmaxps : V,H,W
ve 0f.66.5f sae vmaxpd : V,H,W
ve 0f.f3.5f sae vmaxss : Vo,Ho,Wd
ve 0f.f2.5f sae vmaxsd : Vo,Ho,Wq
ve 0f.66.60-63 vpunpcklbw,vpunpcklwd,vpunpckldq,vpacksswb : V,H,W
e 0f.66.64-66 vpcmpgtb,vpcmpgtw,vpcmpgtd : K,H,W
v 0f.66.64-66 vpcmpgtb,vpcmpgtw,vpcmpgtd : V,H,W
ve 0f.66.67-6d vpackuswb,vpunpckhbw,vpunpckhwd,vpunpckhdq,vpackssdw,vpunpcklqdq,vpunpckhqdq : V,H,W
ve 0f.66.6e vmovd|vmovq : Vo,Ey
v 0f.66.6f vmovdqa : V,W
v 0f.f3.6f vmovdqu : V,W
e 0f.66.6f vmovdqa32|vmovdqa64 : V,W
e 0f.f3.6f vmovdqu32|vmovdqu64 : V,W
e 0f.f2.6f vmovdqu8|vmovdqu16 : V,W
ve 0f.66.70 vpshufd : V,W,Ib
ve 0f.f3.70 vpshufhw : V,W,Ib
ve 0f.f2.70 vpshuflw : V,W,Ib
ve 0f.66.71/2 vpsrlw : H,W,Ib
ve 0f.66.71/4 vpsraw : H,W,Ib
ve 0f.66.71/6 vpsllw : H,W,Ib
e 0f.66.72/0-1 vprord|vprorq,vprold|vprolq : H,W,Ib
ve 0f.66.72/2 vpsrld : H,W,Ib
e 0f.66.72/4 vpsrad|vpsraq : H,W,Ib
v 0f.66.72/4 vpsrad : H,W,Ib
ve 0f.66.72/6 vpslld : H,W,Ib
ve 0f.66.73/2-3 vpsrlq,vpsrldq : H,W,Ib
ve 0f.66.73/6-7 vpsllq,vpslldq : H,W,Ib
e 0f.66.74-76 vpcmpeqb,vpcmpeqw,vpcmpeqd : K,H,W
v 0f.66.74-76 vpcmpeqb,vpcmpeqw,vpcmpeqd : V,H,W
v 0f.np.77 l0 vzeroupper
v 0f.np.77 l1 vzeroall
e 0f.np.78 w0 sae vcvttps2udq : V,W
e 0f.np.78 w1 sae vcvttpd2udq : Vh,W
e 0f.66.78 w0 sae vcvttps2uqq : V,Wh
e 0f.66.78 w1 sae vcvttpd2uqq : V,W
e 0f.f3.78 sae vcvttss2usi : Gy,Wd
e 0f.f2.78 sae vcvttsd2usi : Gy,Wq
e 0f.np.79 w0 er vcvtps2udq : V,W
e 0f.np.79 w1 er vcvtpd2udq : Vh,W
e 0f.66.79 w0 er vcvtps2uqq : V,Wh
e 0f.66.79 w1 er vcvtpd2uqq : V,W
e 0f.f3.79 er vcvtss2usi : Gy,Wd
e 0f.f2.79 er vcvtsd2usi : Gy,Wq
e 0f.66.7a w0 sae vcvttps2qq : V,Wh
e 0f.66.7a w1 sae vcvttpd2qq : V,W
e 0f.f3.7a w0 vcvtudq2pd : V,Wh
e 0f.f3.7a w1 er vcvtuqq2pd : V,W
e 0f.f2.7a w0 er vcvtudq2ps : V,W
e 0f.f2.7a w1 er vcvtuqq2ps : Vh,W
e 0f.66.7b w0 er vcvtps2qq : V,Wh
e 0f.66.7b w1 er vcvtpd2qq : V,W
e 0f.f3.7b er vcvtusi2ss : Vo,Ho,Ey
e 0f.f2.7b er vcvtusi2sd : Vo,Ho,Ey
v 0f.66.7c-7d vhaddpd,vhsubpd : V,H,W
v 0f.f2.7c-7d vhaddps,vhsubps : V,H,W
ve 0f.66.7e vmovd|vmovq : Ey,Vo
ve 0f.f3.7e vmovq : Vo,Wq
v 0f.66.7f vmovdqa : W,V
v 0f.f3.7f vmovdqu : W,V
e 0f.66.7f vmovdqa32|vmovdqa64 : W,V
e 0f.f3.7f vmovdqu32|vmovdqu64 : W,V
e 0f.f2.7f vmovdqu8|vmovdqu16 : W,V
v 0f.np.90 l0 kmovw|kmovq : K,Kr/Mwq
v 0f.66.90 l0 kmovb|kmovd : K,Kr/Mbd
v 0f.np.91 l0 mem kmovw|kmovq : Mwq,K
v 0f.66.91 l0 mem kmovb|kmovd : Mbd,K
v 0f.np.92 l0 reg w0 kmovw : K,Rd
v 0f.66.92 l0 reg w0 kmovb : K,Rd
v 0f.f2.92 l0 reg kmovd|kmovq : K,Ry
v 0f.np.93 l0 reg w0 kmovw : Gd,Kr
v 0f.66.93 l0 reg w0 kmovb : Gd,Kr
v 0f.f2.93 l0 reg kmovd|kmovq : Gy,Kr
v 0f.np.98-99 l0 reg kortestw|kortestq,ktestw|ktestq : K,Kr
v 0f.66.98-99 l0 reg kortestb|kortestd,ktestb|ktestd : K,Kr
v 0f.np.ae/2-3 mem vldmxcsr,vstmxcsr : Md
e 0f.np.c2 sae vcmpps : K,H,W,Ib
e 0f.66.c2 sae vcmppd : K,H,W,Ib
e 0f.f3.c2 sae vcmpss : K,Ho,Wd,Ib
e 0f.f2.c2 sae vcmpsd : K,Ho,Wq,Ib
v 0f.np.c2 vcmpps : V,H,W,Ib
v 0f.66.c2 vcmppd : V,H,W,Ib
v 0f.f3.c2 vcmpss : Vo,Ho,Wd,Ib
v 0f.f2.c2 vcmpsd : Vo,Ho,Wq,Ib
ve 0f.66.c4 vpinsrw : Vo,Ho,Rd/Mw,Ib
ve 0f.66.c5 reg vpextrw : Gd,Uo,Ib
ve 0f.np.c6 vshufps : V,H,W,Ib
ve 0f.66.c6 vshufpd : V,H,W,Ib
v 0f.66.d0 vaddsubpd : V,H,W
v 0f.f2.d0 vaddsubps : V,H,W
ve 0f.66.d1-d3 vpsrlw,vpsrld,vpsrlq : V,H,Wo
ve 0f.66.d4-d5 vpaddq,vpmullw : V,H,W
ve 0f.66.d6 vmovq : Wq,Vo
v 0f.66.d7 reg vpmovmskb : Gd,U
ve 0f.66.d8-da vpsubusb,vpsubusw,vpminub : V,H,W
e 0f.66.db vpandd|vpandq : V,H,W
v 0f.66.db vpand : V,H,W
ve 0f.66.dc-de vpaddusb,vpaddusw,vpmaxub : V,H,W
e 0f.66.df vpandnd|vpandnq : V,H,W
v 0f.66.df vpandn : V,H,W
ve 0f.66.e0 vpavgb : V,H,W
ve 0f.66.e1 vpsraw : V,H,Wo
e 0f.66.e2 vpsrad|vpsraq : V,H,Wo
v 0f.66.e2 vpsrad : V,H,Wo
ve 0f.66.e3-e5 vpavgw,vpmulhuw,vpmulhw : V,H,W
ve 0f.66.e6 sae vcvttpd2dq : Vh,W
v 0f.f3.e6 vcvtdq2pd : V,Wh
e 0f.f3.e6 w0 vcvtdq2pd : V,Wh
e 0f.f3.e6 w1 er vcvtqq2pd : V,W
ve 0f.f2.e6 er vcvtpd2dq : Vh,W
ve 0f.66.e7 mem vmovntdq : M,V
ve 0f.66.e8-ea vpsubsb,vpsubsw,vpminsw : V,H,W
e 0f.66.eb vpord|vporq : V,H,W
v 0f.66.eb vpor : V,H,W
ve 0f.66.ec-ee vpaddsb,vpaddsw,vpmaxsw : V,H,W
e 0f.66.ef vpxord|vpxorq : V,H,W
v 0f.66.ef vpxor : V,H,W
v 0f.f2.f0 mem vlddqu : V,M
ve 0f.66.f1-f3 vpsllw,vpslld,vpsllq : V,H,Wo
ve 0f.66.f4-f6 vpmuludq,vpmaddwd,vpsadbw : V,H,W
v 0f.66.f7 reg vmaskmovdqu : Vo,Uo
ve 0f.66.f8-fe vpsubb,vpsubw,vpsubd,vpsubq,vpaddb,vpaddw,vpaddd : V,H,W

# ---- VEX/EVEX map 0F38 ----
ve 0f38.66.00 vpshufb : V,H,W
v 0f38.66.01-05 vphaddw,vphaddd,vphaddsw,vpmaddubsw,vphsubw : V,H,W
v 0f38.66.06-0b vphsubd,vphsubsw,vpsignb,vpsignw,vpsignd,vpmulhrsw : V,H,W
e 0f38.66.04 vpmaddubsw : V,H,W
e 0f38.66.0b vpmulhrsw : V,H,W
ve 0f38.66.0c-0d vpermilps,vpermilpd : V,H,W
v 0f38.66.0e-0f vtestps,vtestpd : V,W
e 0f38.66.10-12 w1 vpsrlvw,vpsravw,vpsllvw : V,H,W
ve 0f38.66.13 sae vcvtph2ps : V,Wh
ve 0f38.66.16 vpermps|vpermpd : V,H,W
v 0f38.66.17 vptest : V,W
v 0f38.66.18 vbroadcastss : V,Wd
e 0f38.66.18 w0 vbroadcastss : V,Wd
v 0f38.66.19 vbroadcastsd : V,Wq
e 0f38.66.19 w1 vbroadcastsd : V,Wq
e 0f38.66.19 w0 vbroadcastf32x2 : V,Wq
v 0f38.66.1a mem vbroadcastf128 : V,Mo
e 0f38.66.1a mem vbroadcastf32x4|vbroadcastf64x2 : V,Mo
e 0f38.66.1b mem vbroadcastf32x8|vbroadcastf64x4 : V,MY
ve 0f38.66.1c-1d vpabsb,vpabsw : V,W
ve 0f38.66.1e vpabsd : V,W
e 0f38.66.1f vpabsq : V,W
ve 0f38.66.20-25 vpmovsxbw,vpmovsxbd,vpmovsxbq,vpmovsxwd,vpmovsxwq,vpmovsxdq : V,Wh;V,Wr;V,We;V,Wh;V,Wr;V,Wh
e 0f38.f3.10-15 vpmovuswb,vpmovusdb,vpmovusqb,vpmovusdw,vpmovusqw,vpmovusqd : Wh,V;Wr,V;We,V;Wh,V;Wr,V;Wh,V
e 0f38.f3.20-25 vpmovswb,vpmovsdb,vpmovsqb,vpmovsdw,vpmovsqw,vpmovsqd : Wh,V;Wr,V;We,V;Wh,V;Wr,V;Wh,V
e 0f38.f3.30-35 vpmovwb,vpmovdb,vpmovqb,vpmovdw,vpmovqw,vpmovqd : Wh,V;Wr,V;We,V;Wh,V;Wr,V;Wh,V
e 0f38.f3.28 vpmovm2b|vpmovm2w : V,Kr
e 0f38.f3.38 vpmovm2d|vpmovm2q : V,Kr
e 0f38.f3.29 reg vpmovb2m|vpmovw2m : K,U
e 0f38.f3.39 vpmovd2m|vpmovq2m : K,U
e 0f38.66.26 vptestmb|vptestmw : K,H,W
e 0f38.f3.27 vptestnmd|vptestnmq : K,H,W
e 0f38.f3.26 vptestnmb|vptestnmw : K,H,W
e 0f38.66.27 vptestmd|vptestmq : K,H,W
ve 0f38.66.28 vpmuldq : V,H,W
e 0f38.66.29 vpcmpeqq : K,H,W
v 0f38.66.29 vpcmpeqq : V,H,W
ve 0f38.66.2a mem vmovntdqa : V,M
ve 0f38.66.2b vpackusdw : V,H,W
v 0f38.66.2c-2d mem vmaskmovps,vmaskmovpd : V,H,M
v 0f38.66.2e-2f mem vmaskmovps,vmaskmovpd : M,H,V
e 0f38.66.2c-2d er vscalefps|vscalefpd,vscalefss|vscalefsd : V,H,W;Vo,Ho,Ws
ve 0f38.66.30-35 vpmovzxbw,vpmovzxbd,vpmovzxbq,vpmovzxwd,vpmovzxwq,vpmovzxdq : V,Wh;V,Wr;V,We;V,Wh;V,Wr;V,Wh
ve 0f38.66.36 vpermd|vpermq : V,H,W
e 0f38.66.37 vpcmpgtq : K,H,W
v 0f38.66.37 vpcmpgtq : V,H,W
ve 0f38.66.38 vpminsb : V,H,W
e 0f38.66.39 vpminsd|vpminsq : V,H,W
v 0f38.66.39 vpminsd : V,H,W
ve 0f38.66.3a vpminuw : V,H,W
e 0f38.66.3b vpminud|vpminuq : V,H,W
v 0f38.66.3b vpminud : V,H,W
ve 0f38.66.3c vpmaxsb : V,H,W
e 0f38.66.3d vpmaxsd|vpmaxsq : V,H,W
v 0f38.66.3d vpmaxsd : V,H,W
ve 0f38.66.3e vpmaxuw : V,H,W
e 0f38.66.3f vpmaxud|vpmaxuq : V,H,W
v 0f38.66.3f vpmaxud : V,H,W
e 0f38.66.40 vpmulld|vpmullq : V,H,W
v 0f38.66.40 vpmulld : V,H,W
v 0f38.66.41 vphminposuw : Vo,Wo
ve 0f38.66.45-47 vpsrlvd|vpsrlvq,vpsravd|vpsravq,vpsllvd|vpsllvq : V,H,W
v 0f38.66.46 vpsravd : V,H,W
v 0f38.66.50-53 vpdpbusd,vpdpbusds,vpdpwssd,vpdpwssds : V,H,W
e 0f38.66.50-53 vpdpbusd,vpdpbusds,vpdpwssd,vpdpwssds : V,H,W
ve 0f38.66.58 vpbroadcastd : V,Wd
v 0f38.66.59 vpbroadcastq : V,Wq
e 0f38.66.59 vbroadcasti32x2|vpbroadcastq : V,Wq
v 0f38.66.5a mem vbroadcasti128 : V,Mo
e 0f38.66.5a mem vbroadcasti32x4|vbroadcasti64x2 : V,Mo
e 0f38.66.5b mem vbroadcasti32x8|vbroadcasti64x4 : V,MY
e 0f38.66.64-66 vpblendmd|vpblendmq,vblendmps|vblendmpd,vpblendmb|vpblendmw : V,H,W
e 0f38.66.75-77 vpermi2b|vpermi2w,vpermi2d|vpermi2q,vpermi2ps|vpermi2pd : V,H,W
ve 0f38.66.78-79 vpbroadcastb,vpbroadcastw : V,Wb;V,Ww
e 0f38.66.7a-7c reg vpbroadcastb,vpbroadcastw,vpbroadcastd|vpbroadcastq : V,Rd;V,Rd;V,Ry
e 0f38.66.7d-7f vpermt2b|vpermt2w,vpermt2d|vpermt2q,vpermt2ps|vpermt2pd : V,H,W
e 0f38.66.83 vpmultishiftqb : V,H,W
e 0f38.66.88 vexpandps|vexpandpd : V,W
e 0f38.66.89 vpexpandd|vpexpandq : V,W
e 0f38.66.8a vcompressps|vcompresspd : W,V
e 0f38.66.8b vpcompressd|vpcompressq : W,V
v 0f38.66.8c mem vpmaskmovd|vpmaskmovq : V,H,M
v 0f38.66.8e mem vpmaskmovd|vpmaskmovq : M,H,V
e 0f38.66.8d vpermb|vpermw : V,H,W
e 0f38.66.62 vpexpandb|vpexpandw : V,W
e 0f38.66.63 vpcompressb|vpcompressw : W,V
v 0f38.66.90-91 mem vpgatherdd|vpgatherdq,vpgatherqd|vpgatherqq : Vg,Ms,Hg
v 0f38.66.92-93 mem vgatherdps|vgatherdpd,vgatherqps|vgatherqpd : Vg,Ms,Hg
e 0f38.66.90-91 mem vpgatherdd|vpgatherdq,vpgatherqd|vpgatherqq : Vg,Km,Ms
e 0f38.66.92-93 mem vgatherdps|vgatherdpd,vgatherqps|vgatherqpd : Vg,Km,Ms
e 0f38.66.a0-a1 mem vpscatterdd|vpscatterdq,vpscatterqd|vpscatterqq : Ms,Km,Vg
e 0f38.66.a2-a3 mem vscatterdps|vscatterdpd,vscatterqps|vscatterqpd : Ms,Km,Vg
ve 0f38.66.96 er vfmaddsub132ps|vfmaddsub132pd : V,H,W
ve 0f38.66.97-98 er vfmsubadd132ps|vfmsubadd132pd,vfmadd132ps|vfmadd132pd : V,H,W
ve 0f38.66.99 er vfmadd132ss|vfmadd132sd : Vo,Ho,Ws
ve 0f38.66.9a er vfmsub132ps|vfmsub132pd : V,H,W
ve 0f38.66.9b er vfmsub132ss|vfmsub132sd : Vo,Ho,Ws
ve 0f38.66.9c er vfnmadd132ps|vfnmadd132pd : V,H,W
ve 0f38.66.9d er vfnmadd132ss|vfnmadd132sd : Vo,Ho,Ws
ve 0f38.66.9e er vfnmsub132ps|vfnmsub132pd : V,H,W
ve 0f38.66.9f er vfnmsub132ss|vfnmsub132sd : Vo,Ho,Ws
ve 0f38.66.a6 er vfmaddsub213ps|vfmaddsub213pd : V,H,W
ve 0f38.66.a7-a8 er vfmsubadd213ps|vfmsubadd213pd,vfmadd213ps|vfmadd213pd : V,H,W
ve 0f38.66.a9 er vfmadd213ss|vfmadd213sd : Vo,Ho,Ws
ve 0f38.66.aa er vfmsub213ps|vfmsub213pd : V,H,W
ve 0f38.66.ab er vfmsub213ss|vfmsub213sd : Vo,Ho,Ws
ve 0f38.66.ac er vfnmadd213ps|vfnmadd213pd : V,H,W
ve 0f38.66.ad er vfnmadd213ss|vfnmadd213sd : Vo,Ho,Ws
ve 0f38.66.ae er vfnmsub213ps|vfnmsub213pd : V,H,W
ve 0f38.66.af er vfnmsub213ss|vfnmsub213sd : Vo,Ho,Ws
ve 0f38.66.b6 er vfmaddsub231ps|vfmaddsub231pd : V,H,W
ve 0f38.66.b7-b8 er vfmsubadd231ps|vfmsubadd231pd,vfmadd231ps|vfmadd231pd : V,H,W
ve 0f38.66.b9 er vfmadd231ss|vfmadd231sd : Vo,Ho,Ws
ve 0f38.66.ba er vfmsub231ps|vfmsub231pd : V,H,W
ve 0f38.66.bb er vfmsub231ss|vfmsub231sd : Vo,Ho,Ws
ve 0f38.66.bc er vfnmadd231ps|vfnmadd231pd : V,H,W
ve 0f38.66.bd er vfnmadd231ss|vfnmadd231sd : Vo,Ho,Ws
ve 0f38.66.be er vfnmsub231ps|vfnmsub231pd : V,H,W
ve 0f38.66.bf er vfnmsub231ss|vfnmsub231sd : Vo,Ho,Ws
ve 0f38.66.b4-b5 w1 vpmadd52luq,vpmadd52huq : V,H,W
e 0f38.66.14-15 vprorvd|vprorvq,vprolvd|vprolvq : V,H,W
v 0f3a.66.30-31 l0 reg kshiftrb|kshiftrw,kshiftrd|kshiftrq : K,Kr,Ib
v 0f3a.66.32-33 l0 reg kshiftlb|kshiftlw,kshiftld|kshiftlq : K,Kr,Ib
e 0f38.66.c4 vpconflictd|vpconflictq : V,W
e 0f38.66.44 vplzcntd|vplzcntq : V,W
e 0f38.66.4c-4d vrcp14ps|vrcp14pd,vrcp14ss|vrcp14sd : V,W;Vo,Ho,Ws
e 0f38.66.4e-4f vrsqrt14ps|vrsqrt14pd,vrsqrt14ss|vrsqrt14sd : V,W;Vo,Ho,Ws
e 0f38.66.42-43 sae vgetexpps|vgetexppd,vgetexpss|vgetexpsd : V,W;Vo,Ho,Ws
e 0f38.66.54-55 vpopcntb|vpopcntw,vpopcntd|vpopcntq : V,W
e 0f38.66.8f vpshufbitqmb : K,H,W
e 0f38.66.70-73 vpshldvw,vpshldvd|vpshldvq,vpshrdvw,vpshrdvd|vpshrdvq : V,H,W
ve 0f38.66.cf vgf2p8mulb : V,H,W
v 0f38.66.db vaesimc : Vo,Wo
ve 0f38.66.dc-df vaesenc,vaesenclast,vaesdec,vaesdeclast : V,H,W
v 0f38.np.f2 andn : Gy,By,Ey
v 0f38.np.f3/1-3 blsr,blsmsk,blsi : By,Ey
v 0f38.np.f5 bzhi : Gy,Ey,By
v 0f38.f3.f5 pext : Gy,By,Ey
v 0f38.f2.f5 pdep : Gy,By,Ey
v 0f38.f2.f6 mulx : Gy,By,Ey
v 0f38.np.f7 bextr : Gy,Ey,By
v 0f38.66.f7 shlx : Gy,Ey,By
v 0f38.f3.f7 sarx : Gy,Ey,By
v 0f38.f2.f7 shrx : Gy,Ey,By

# ---- VEX/EVEX map 0F3A ----
ve 0f3a.66.00-01 w1 vpermq,vpermpd : V,W,Ib
v 0f3a.66.02 w0 vpblendd : V,H,W,Ib
e 0f3a.66.03 valignd|valignq : V,H,W,Ib
ve 0f3a.66.04-05 vpermilps,vpermilpd : V,W,Ib
v 0f3a.66.06 vperm2f128 : V,H,W,Ib
v 0f3a.66.08-09 vroundps,vroundpd : V,W,Ib
e 0f3a.66.08-09 sae vrndscaleps,vrndscalepd : V,W,Ib
v 0f3a.66.0a vroundss : Vo,Ho,Wd,Ib
v 0f3a.66.0b vroundsd : Vo,Ho,Wq,Ib
e 0f3a.66.0a sae vrndscaless : Vo,Ho,Wd,Ib
e 0f3a.66.0b sae vrndscalesd : Vo,Ho,Wq,Ib
v 0f3a.66.0c-0e vblendps,vblendpd,vpblendw : V,H,W,Ib
ve 0f3a.66.0f vpalignr : V,H,W,Ib
ve 0f3a.66.14 vpextrb : Rd/Mb,Vo,Ib
ve 0f3a.66.15 vpextrw : Rd/Mw,Vo,Ib
ve 0f3a.66.16 vpextrd|vpextrq : Ey,Vo,Ib
ve 0f3a.66.17 vextractps : Ed,Vo,Ib
v 0f3a.66.18 vinsertf128 : V,H,Wo,Ib
v 0f3a.66.19 vextractf128 : Wo,V,Ib
e 0f3a.66.18 vinsertf32x4|vinsertf64x2 : V,H,Wo,Ib
e 0f3a.66.19 vextractf32x4|vextractf64x2 : Wo,V,Ib
e 0f3a.66.1a vinsertf32x8|vinsertf64x4 : V,H,WY,Ib
e 0f3a.66.1b vextractf32x8|vextractf64x4 : WY,V,Ib
ve 0f3a.66.1d sae vcvtps2ph : Wh,V,Ib
e 0f3a.66.1e-1f vpcmpud|vpcmpuq,vpcmpd|vpcmpq : K,H,W,Ib
ve 0f3a.66.20 vpinsrb : Vo,Ho,Rd/Mb,Ib
ve 0f3a.66.21 vinsertps : Vo,Ho,Uo/Md,Ib
ve 0f3a.66.22 vpinsrd|vpinsrq : Vo,Ho,Ey,Ib
e 0f3a.66.23 vshuff32x4|vshuff64x2 : V,H,W,Ib
e 0f3a.66.25 vpternlogd|vpternlogq : V,H,W,Ib
e 0f3a.66.26-27 sae vgetmantps|vgetmantpd,vgetmantss|vgetmantsd : V,W,Ib;Vo,Ho,Ws,Ib
e 0f3a.66.38 vinserti32x4|vinserti64x2 : V,H,Wo,Ib
e 0f3a.66.39 vextracti32x4|vextracti64x2 : Wo,V,Ib
e 0f3a.66.3a vinserti32x8|vinserti64x4 : V,H,WY,Ib
e 0f3a.66.3b vextracti32x8|vextracti64x4 : WY,V,Ib
v 0f3a.66.38 vinserti128 : V,H,Wo,Ib
v 0f3a.66.39 vextracti128 : Wo,V,Ib
e 0f3a.66.3e-3f vpcmpub|vpcmpuw,vpcmpb|vpcmpw : K,H,W,Ib
v 0f3a.66.40-42 vdpps,vdppd,vmpsadbw : V,H,W,Ib
e 0f3a.66.42 vdbpsadbw : V,H,W,Ib
e 0f3a.66.43 vshufi32x4|vshufi64x2 : V,H,W,Ib
ve 0f3a.66.44 vpclmulqdq : V,H,W,Ib
v 0f3a.66.46 vperm2i128 : V,H,W,Ib
v 0f3a.66.4a-4c vblendvps,vblendvpd,vpblendvb : V,H,W,L
v 0f3a.66.48-49 w0 vpermil2ps,vpermil2pd : V,H,W,L,Ilo
v 0f3a.66.48-49 w1 vpermil2ps,vpermil2pd : V,H,L,W,Ilo
e 0f3a.66.50-51 sae vrangeps|vrangepd,vrangess|vrangesd : V,H,W,Ib;Vo,Ho,Ws,Ib
e 0f3a.66.54-55 sae vfixupimmps|vfixupimmpd,vfixupimmss|vfixupimmsd : V,H,W,Ib;Vo,Ho,Ws,Ib
e 0f3a.66.56-57 sae vreduceps|vreducepd,vreducess|vreducesd : V,W,Ib;Vo,Ho,Ws,Ib
# FMA4 (AMD): W0 puts the memory operand third, W1 fourth.
v 0f3a.66.5c-5f w0 vfmaddsubps,vfmaddsubpd,vfmsubaddps,vfmsubaddpd : V,H,W,L
v 0f3a.66.5c-5f w1 vfmaddsubps,vfmaddsubpd,vfmsubaddps,vfmsubaddpd : V,H,L,W
v 0f3a.66.68-6b w0 vfmaddps,vfmaddpd,vfmaddss,vfmaddsd : V,H,W,L;V,H,W,L;Vo,Ho,Wd,Lo;Vo,Ho,Wq,Lo
v 0f3a.66.6c-6f w0 vfmsubps,vfmsubpd,vfmsubss,vfmsubsd : V,H,W,L;V,H,W,L;Vo,Ho,Wd,Lo;Vo,Ho,Wq,Lo
v 0f3a.66.68-6b w1 vfmaddps,vfmaddpd,vfmaddss,vfmaddsd : V,H,L,W;V,H,L,W;Vo,Ho,Lo,Wd;Vo,Ho,Lo,Wq
v 0f3a.66.6c-6f w1 vfmsubps,vfmsubpd,vfmsubss,vfmsubsd : V,H,L,W;V,H,L,W;Vo,Ho,Lo,Wd;Vo,Ho,Lo,Wq
v 0f3a.66.78-7b w0 vfnmaddps,vfnmaddpd,vfnmaddss,vfnmaddsd : V,H,W,L;V,H,W,L;Vo,Ho,Wd,Lo;Vo,Ho,Wq,Lo
v 0f3a.66.7c-7f w0 vfnmsubps,vfnmsubpd,vfnmsubss,vfnmsubsd : V,H,W,L;V,H,W,L;Vo,Ho,Wd,Lo;Vo,Ho,Wq,Lo
v 0f3a.66.78-7b w1 vfnmaddps,vfnmaddpd,vfnmaddss,vfnmaddsd : V,H,L,W;V,H,L,W;Vo,Ho,Lo,Wd;Vo,Ho,Lo,Wq
v 0f3a.66.7c-7f w1 vfnmsubps,vfnmsubpd,vfnmsubss,vfnmsubsd : V,H,L,W;V,H,L,W;Vo,Ho,Lo,Wd;Vo,Ho,Lo,Wq
v 0f3a.66.60-63 vpcmpestrm,vpcmpestri,vpcmpistrm,vpcmpistri : Vo,Wo,Ib
e 0f3a.66.66-67 vfpclassps|vfpclasspd,vfpclassss|vfpclasssd : K,W,Ib;K,Ws,Ib
e 0f3a.66.70-73 vpshldw,vpshldd|vpshldq,vpshrdw,vpshrdd|vpshrdq : V,H,W,Ib
ve 0f3a.66.ce-cf w1 vgf2p8affineqb,vgf2p8affineinvqb : V,H,W,Ib
v 0f3a.66.df vaeskeygenassist : Vo,Wo,Ib
v 0f3a.f2.f0 rorx : Gy,Ey,Ib
# ---- AVX-512 FP16 (EVEX maps 5 and 6, and 0F3A without a mandatory prefix) ----
e map5.f3.10 reg vmovsh : Vo,Ho,Uo
e map5.f3.10 mem vmovsh : Vo,Mw
e map5.f3.11 reg vmovsh : Uo,Ho,Vo
e map5.f3.11 mem vmovsh : Mw,Vo
e map5.np.1d w0 er vcvtss2sh : Vo,Ho,Wd
e map5.66.1d w0 er vcvtps2phx : Vh,W
e map5.f3.2a er vcvtsi2sh : Vo,Ho,Ey
e map5.f3.2c sae vcvttsh2si : Gy,Ww
e map5.f3.2d er vcvtsh2si : Gy,Ww
e map5.np.2e-2f sae vucomish,vcomish : Vo,Ww
e map5.np.51 er vsqrtph : V,W
e map5.f3.51 er vsqrtsh : Vo,Ho,Ww
e map5.np.58-59 er vaddph,vmulph : V,H,W
e map5.f3.58-59 er vaddsh,vmulsh : Vo,Ho,Ww
e map5.np.5a w0 sae vcvtph2pd : V,Wr
e map5.66.5a w1 er vcvtpd2ph : Vr,W
e map5.f3.5a w0 sae vcvtsh2sd : Vo,Ho,Ww
e map5.f2.5a w1 er vcvtsd2sh : Vo,Ho,Wq
e map5.np.5b w0 er vcvtdq2ph : Vh,W
e map5.np.5b w1 er vcvtqq2ph : Vr,W
e map5.66.5b w0 er vcvtph2dq : V,Wh
e map5.f3.5b w0 sae vcvttph2dq : V,Wh
e map5.np.5c er vsubph : V,H,W
e map5.f3.5c er vsubsh : Vo,Ho,Ww
e map5.np.5d sae vminph : V,H,W
e map5.f3.5d sae vminsh : Vo,Ho,Ww
e map5.np.5e er vdivph : V,H,W
e map5.f3.5e er vdivsh : Vo,Ho,Ww
e map5.np.5f sae vmaxph : V,H,W
e map5.f3.5f sae vmaxsh : Vo,Ho,Ww
e map5.66.6e vmovw : Vo,Rd/Mw
e map5.66.7e vmovw : Rd/Mw,Vo
e map5.np.78 w0 sae vcvttph2udq : V,Wh
e map5.66.78 w0 sae vcvttph2uqq : V,Wr
e map5.f3.78 sae vcvttsh2usi : Gy,Ww
e map5.np.79 w0 er vcvtph2udq : V,Wh
e map5.66.79 w0 er vcvtph2uqq : V,Wr
e map5.f3.79 er vcvtsh2usi : Gy,Ww
e map5.66.7a w0 sae vcvttph2qq : V,Wr
e map5.f2.7a w0 er vcvtudq2ph : Vh,W
e map5.f2.7a w1 er vcvtuqq2ph : Vr,W
e map5.66.7b w0 er vcvtph2qq : V,Wr
e map5.f3.7b er vcvtusi2sh : Vo,Ho,Ey
e map5.np.7c w0 sae vcvttph2uw : V,W
e map5.66.7c w0 sae vcvttph2w : V,W
e map5.np.7d w0 er vcvtph2uw : V,W
e map5.66.7d w0 er vcvtph2w : V,W
e map5.f3.7d w0 er vcvtw2ph : V,W
e map5.f2.7d w0 er vcvtuw2ph : V,W
e map6.66.13 w0 sae vcvtph2psx : V,Wh
e map6.np.13 w0 sae vcvtsh2ss : Vo,Ho,Ww
e map6.66.2c w0 er vscalefph : V,H,W
e map6.66.2d w0 er vscalefsh : Vo,Ho,Ww
e map6.66.42 w0 sae vgetexpph : V,W
e map6.66.43 w0 sae vgetexpsh : Vo,Ho,Ww
e map6.66.4c w0 vrcpph : V,W
e map6.66.4d w0 vrcpsh : Vo,Ho,Ww
e map6.66.4e w0 vrsqrtph : V,W
e map6.66.4f w0 vrsqrtsh : Vo,Ho,Ww
e map6.f3.56 w0 er vfmaddcph : V,H,W
e map6.f2.56 w0 er vfcmaddcph : V,H,W
e map6.f3.57 w0 er vfmaddcsh : Vo,Ho,Wd
e map6.f2.57 w0 er vfcmaddcsh : Vo,Ho,Wd
e map6.f3.d6 w0 er vfmulcph : V,H,W
e map6.f2.d6 w0 er vfcmulcph : V,H,W
e map6.f3.d7 w0 er vfmulcsh : Vo,Ho,Wd
e map6.f2.d7 w0 er vfcmulcsh : Vo,Ho,Wd
e map6.66.96-98 w0 er vfmaddsub132ph,vfmsubadd132ph,vfmadd132ph : V,H,W
e map6.66.99 w0 er vfmadd132sh : Vo,Ho,Ww
e map6.66.9a-9d w0 er vfmsub132ph,vfmsub132sh,vfnmadd132ph,vfnmadd132sh : V,H,W;Vo,Ho,Ww;V,H,W;Vo,Ho,Ww
e map6.66.9e-9f w0 er vfnmsub132ph,vfnmsub132sh : V,H,W;Vo,Ho,Ww
e map6.66.a6-a8 w0 er vfmaddsub213ph,vfmsubadd213ph,vfmadd213ph : V,H,W
e map6.66.a9 w0 er vfmadd213sh : Vo,Ho,Ww
e map6.66.aa-ad w0 er vfmsub213ph,vfmsub213sh,vfnmadd213ph,vfnmadd213sh : V,H,W;Vo,Ho,Ww;V,H,W;Vo,Ho,Ww
e map6.66.ae-af w0 er vfnmsub213ph,vfnmsub213sh : V,H,W;Vo,Ho,Ww
e map6.66.b6-b8 w0 er vfmaddsub231ph,vfmsubadd231ph,vfmadd231ph : V,H,W
e map6.66.b9 w0 er vfmadd231sh : Vo,Ho,Ww
e map6.66.ba-bd w0 er vfmsub231ph,vfmsub231sh,vfnmadd231ph,vfnmadd231sh : V,H,W;Vo,Ho,Ww;V,H,W;Vo,Ho,Ww
e map6.66.be-bf w0 er vfnmsub231ph,vfnmsub231sh : V,H,W;Vo,Ho,Ww
e 0f3a.np.08 w0 sae vrndscaleph : V,W,Ib
e 0f3a.np.0a w0 sae vrndscalesh : Vo,Ho,Ww,Ib
e 0f3a.np.26 w0 sae vgetmantph : V,W,Ib
e 0f3a.np.27 w0 sae vgetmantsh : Vo,Ho,Ww,Ib
e 0f3a.np.56 w0 sae vreduceph : V,W,Ib
e 0f3a.np.57 w0 sae vreducesh : Vo,Ho,Ww,Ib
e 0f3a.np.66 w0 vfpclassph : K,W,Ib
e 0f3a.np.67 w0 vfpclasssh : K,Ww,Ib
e 0f3a.np.c2 w0 sae vcmpph : K,H,W,Ib
e 0f3a.f3.c2 w0 sae vcmpsh : K,Ho,Ww,Ib

# ---- smaller extensions ----
e 0f38.f2.72 w0 er vcvtne2ps2bf16 : V,H,W
e 0f38.f3.72 w0 er vcvtneps2bf16 : Vh,W
e 0f38.f3.52 w0 vdpbf16ps : V,H,W
e 0f38.f2.68 vp2intersectd|vp2intersectq : K,H,W
e 0f38.f2.52-53 w0 mem vp4dpwssd,vp4dpwssds : V,H,Mo
e 0f38.f2.9a-9b w0 mem v4fmaddps,v4fmaddss : V,H,Mo;Vo,Ho,Mo
e 0f38.f2.aa-ab w0 mem v4fnmaddps,v4fnmaddss : V,H,Mo;Vo,Ho,Mo
e 0f38.66.c8 sae vexp2ps|vexp2pd : V,W
e 0f38.66.ca-cb sae vrcp28ps|vrcp28pd,vrcp28ss|vrcp28sd : V,W;Vo,Ho,Ws
e 0f38.66.cc-cd sae vrsqrt28ps|vrsqrt28pd,vrsqrt28ss|vrsqrt28sd : V,W;Vo,Ho,Ws
v 0f38.np.50-51 w0 vpdpbuud,vpdpbuuds : V,H,W
v 0f38.f3.50-51 w0 vpdpbsud,vpdpbsuds : V,H,W
v 0f38.f2.50-51 w0 vpdpbssd,vpdpbssds : V,H,W
v 0f38.np.d2-d3 w0 vpdpwuud,vpdpwuuds : V,H,W
v 0f38.66.d2-d3 w0 vpdpwusd,vpdpwusds : V,H,W
v 0f38.f3.d2-d3 w0 vpdpwsud,vpdpwsuds : V,H,W
v 0f38.np.da w0 l0 vsm3msg1 : Vo,Ho,Wo
v 0f38.66.da w0 l0 vsm3msg2 : Vo,Ho,Wo
v 0f38.f3.da w0 vsm4key4 : V,H,W
v 0f38.f2.da w0 vsm4rnds4 : V,H,W
v 0f3a.66.de w0 l0 vsm3rnds2 : Vo,Ho,Wo,Ib
v 0f38.f2.cb w0 l1 reg vsha512rnds2 : VY,HY,Uo
v 0f38.f2.cc w0 l1 reg vsha512msg1 : VY,Uo
v 0f38.f2.cd w0 l1 reg vsha512msg2 : VY,UY
v 0f38.np.b0 w0 mem vcvtneoph2ps : V,M
v 0f38.66.b0 w0 mem vcvtneeph2ps : V,M
v 0f38.f3.b0 w0 mem vcvtneebf162ps : V,M
v 0f38.f2.b0 w0 mem vcvtneobf162ps : V,M
v 0f38.66.b1 w0 mem vbcstnesh2ps : V,Mw
v 0f38.f3.b1 w0 mem vbcstnebf162ps : V,Mw
v 0f38.f3.72 w0 vcvtneps2bf16 : Vh,W
e 0f38.f3.2a w1 reg vpbroadcastmb2q : V,Kr
e 0f38.f3.3a w0 reg vpbroadcastmw2d : V,Kr
v 0f38.np.49 w0 l0 mem ldtilecfg : Mz
v 0f38.66.49 w0 l0 mem sttilecfg : Mz
v 0f38.np.49 w0 l0 reg tilerelease
v 0f38.f2.49 w0 l0 reg tilezero : TMg
v 0f38.f2.4b w0 l0 mem tileloadd : TMg,A
v 0f38.66.4b w0 l0 mem tileloaddt1 : TMg,A
v 0f38.f3.4b w0 l0 mem tilestored : A,TMg
v 0f38.np.5e w0 l0 reg tdpbuud : TMg,TMr,TMv
v 0f38.66.5e w0 l0 reg tdpbusd : TMg,TMr,TMv
v 0f38.f3.5e w0 l0 reg tdpbsud : TMg,TMr,TMv
v 0f38.f2.5e w0 l0 reg tdpbssd : TMg,TMr,TMv
v 0f38.f3.5c w0 l0 reg tdpbf16ps : TMg,TMr,TMv
v 0f38.f2.5c w0 l0 reg tdpfp16ps : TMg,TMr,TMv
v 0f38.66.6c w0 l0 reg tcmmimfp16ps : TMg,TMr,TMv
v 0f38.np.6c w0 l0 reg tcmmrlfp16ps : TMg,TMr,TMv
v 0f38.66.e0-e3 l0 mem cmpoxadd,cmpnoxadd,cmpbxadd,cmpaexadd : My,Gy,By
v 0f38.66.e4-e7 l0 mem cmpexadd,cmpnexadd,cmpbexadd,cmpaxadd : My,Gy,By
v 0f38.66.e8-eb l0 mem cmpsxadd,cmpnsxadd,cmppxadd,cmpnpxadd : My,Gy,By
v 0f38.66.ec-ef l0 mem cmplxadd,cmpgexadd,cmplexadd,cmpgxadd : My,Gy,By

# ---- AMD XOP (maps 8, 9 and A; no mandatory prefix) ----
x xop8.np.85-87 w0 vpmacssww,vpmacsswd,vpmacssdql : Vo,Ho,Wo,Lo
x xop8.np.8e-8f w0 vpmacssdd,vpmacssdqh : Vo,Ho,Wo,Lo
x xop8.np.95-97 w0 vpmacsww,vpmacswd,vpmacsdql : Vo,Ho,Wo,Lo
x xop8.np.9e-9f w0 vpmacsdd,vpmacsdqh : Vo,Ho,Wo,Lo
x xop8.np.a6 w0 vpmadcsswd : Vo,Ho,Wo,Lo
x xop8.np.b6 w0 vpmadcswd : Vo,Ho,Wo,Lo
x xop8.np.a2 w0 vpcmov : V,H,W,L
x xop8.np.a2 w1 vpcmov : V,H,L,W
x xop8.np.a3 w0 vpperm : Vo,Ho,Wo,Lo
x xop8.np.a3 w1 vpperm : Vo,Ho,Lo,Wo
x xop8.np.c0-c3 w0 vprotb,vprotw,vprotd,vprotq : Vo,Wo,Ib
x xop8.np.cc-cf w0 vpcomb,vpcomw,vpcomd,vpcomq : Vo,Ho,Wo,Ib
x xop8.np.ec-ef w0 vpcomub,vpcomuw,vpcomud,vpcomuq : Vo,Ho,Wo,Ib
x xop9.np.01/1-7 blcfill,blsfill,blcs,tzmsk,blcic,blsic,t1mskc : By,Ey
x xop9.np.02/1 blcmsk : By,Ey
x xop9.np.02/6 blci : By,Ey
x xop9.np.12/0-1 reg llwpcb,slwpcb : Ry
x xop9.np.80-81 w0 vfrczps,vfrczpd : V,W
x xop9.np.82 w0 vfrczss : Vo,Wd
x xop9.np.83 w0 vfrczsd : Vo,Wq
x xop9.np.90-93 w0 vprotb,vprotw,vprotd,vprotq : Vo,Wo,Ho
x xop9.np.90-93 w1 vprotb,vprotw,vprotd,vprotq : Vo,Ho,Wo
x xop9.np.94-97 w0 vpshlb,vpshlw,vpshld,vpshlq : Vo,Wo,Ho
x xop9.np.94-97 w1 vpshlb,vpshlw,vpshld,vpshlq : Vo,Ho,Wo
x xop9.np.98-9b w0 vpshab,vpshaw,vpshad,vpshaq : Vo,Wo,Ho
x xop9.np.98-9b w1 vpshab,vpshaw,vpshad,vpshaq : Vo,Ho,Wo
x xop9.np.c1-c3 w0 vphaddbw,vphaddbd,vphaddbq : Vo,Wo
x xop9.np.c6-c7 w0 vphaddwd,vphaddwq : Vo,Wo
x xop9.np.cb w0 vphadddq : Vo,Wo
x xop9.np.d1-d3 w0 vphaddubw,vphaddubd,vphaddubq : Vo,Wo
x xop9.np.d6-d7 w0 vphadduwd,vphadduwq : Vo,Wo
x xop9.np.db w0 vphaddudq : Vo,Wo
x xop9.np.e1-e3 w0 vphsubbw,vphsubwd,vphsubdq : Vo,Wo
x xopa.np.10 bextr : Gy,Ey,Id
x xopa.np.12/0-1 lwpins,lwpval : By,Ed,Id
"""

_ROW_ENCODINGS = {"v": (1,), "e": (2,), "ve": (1, 2), "x": (3,)}
_VECTOR_FLAGS = frozenset({"w0", "w1", "l0", "l1", "mem", "reg", "er", "sae"})


@dataclass(frozen=True, slots=True)
class VectorForm:
    """One VEX/EVEX/XOP form for the formatter."""

    w: int | None
    l: int | None
    mod: str | None  # "mem", "reg" or None
    reg: int | None  # ModRM.reg restriction
    mnemonic: str  # "a|b": by W
    ops: str
    rounding: str | None  # "er", "sae" or None


def _parse_vector_line(line: str) -> list[tuple[tuple[int, int, int, int], VectorForm, bool]]:
    line, _, opspec = line.partition(" : ")
    enc, where, *rest = line.split()
    flags = [t for t in rest if t in _VECTOR_FLAGS]
    names = [t for t in rest if t not in _VECTOR_FLAGS]
    if len(names) != 1:
        raise ValueError(f"one mnemonic column per vector row: {line!r}")
    vmap_name, pp_name, ops = where.split(".")
    regs: list[int | None] = [None]
    if "/" in ops:
        ops, sel = ops.split("/")
        regs = list(_span(sel))
    shapes = list(itertools.product(_span(ops), regs))
    mnemonics = names[0].split(",")
    specs = opspec.strip().split(";")
    if len(mnemonics) == 1:
        mnemonics *= len(shapes)
    if len(specs) == 1:
        specs *= len(shapes)
    if not len(mnemonics) == len(specs) == len(shapes):
        raise ValueError(f"one mnemonic/operand list, or one per opcode/reg: {line!r}")
    w = 0 if "w0" in flags else 1 if "w1" in flags else None
    vl = 0 if "l0" in flags else 1 if "l1" in flags else None
    mod = "mem" if "mem" in flags else "reg" if "reg" in flags else None
    rounding = "er" if "er" in flags else "sae" if "sae" in flags else None
    out = []
    for mn, spec, (op, reg) in zip(mnemonics, specs, shapes, strict=True):
        form = VectorForm(w, vl, mod, reg, mn, spec, rounding)
        for e in _ROW_ENCODINGS[enc]:
            out.append(((e, _VEC_MAP_NUMBERS[vmap_name], _PFX_NAMES[pp_name], op), form, enc != "ve"))
    return out


@cache
def vector_forms() -> dict[tuple[int, int, int, int], tuple[VectorForm, ...]]:
    """Rows by (Encoding value, map, pp, opcode); single-encoding rows first, then table order."""
    found: dict[tuple[int, int, int, int], list[tuple[bool, int, VectorForm]]] = {}
    for n, raw in enumerate(_VECTOR_ROWS.splitlines()):
        line = raw.split("#", 1)[0].strip()
        if line:
            for key, form, specific in _parse_vector_line(line):
                found.setdefault(key, []).append((not specific, n, form))
    return {k: tuple(f for _, _, f in sorted(v, key=lambda t: (t[0], t[1]))) for k, v in found.items()}


_VEC_OPMAP = {
    (1, 1): OpMap.M0F,
    (1, 2): OpMap.M0F38,
    (1, 3): OpMap.M0F3A,
    (2, 1): OpMap.M0F,
    (2, 2): OpMap.M0F38,
    (2, 3): OpMap.M0F3A,
    (2, 5): OpMap.EVEX_MAP5,
    (2, 6): OpMap.EVEX_MAP6,
    (3, 8): OpMap.XOP8,
    (3, 9): OpMap.XOP9,
    (3, 10): OpMap.XOPA,
}
_VEC_MAP_NAMES = {1: "0f", 2: "0f38", 3: "0f3a", 5: "map5", 6: "map6", 8: "8", 9: "9", 10: "a"}


def _vector_map(
    enc: int, vmap: int, opcodes: frozenset[int], immk: dict[int, int], mode: int
) -> list[Entry | None]:
    name = f"{('', 'vex', 'evex', 'xop')[enc]}.{_VEC_MAP_NAMES[vmap]}"
    out: list[Entry | None] = [None] * 256
    for op in opcodes:
        flags = 0 if enc == 1 and (vmap, op) in VEX_NO_MODRM else F_MODRM
        out[op] = make_entry(flags, immk.get(op, I_NONE), f"{name}.{op:02x}", _VEC_OPMAP[enc, vmap], mode)
    return out


def _build_vector(mode: int) -> dict[int, dict[int, list[Entry | None]]]:
    return {
        1: {
            m: _vector_map(1, m, ops, dict.fromkeys(VEX_IMM8[m], I_B), mode) for m, ops in VEX_OPCODES.items()
        },
        2: {
            m: _vector_map(2, m, ops, dict.fromkeys(EVEX_IMM8[m], I_B), mode)
            for m, ops in EVEX_OPCODES.items()
        },
        3: {
            m: _vector_map(3, m, ops, dict.fromkeys(ops, XOP_IMM[m]), mode) for m, ops in XOP_OPCODES.items()
        },
    }


VECTOR: dict[int, dict[int, dict[int, list[Entry | None]]]] = {m: _build_vector(m) for m in (16, 32, 64)}
"""Per mode, per encoding (Encoding value), per map number: 256 entries indexed by opcode."""
