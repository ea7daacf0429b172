"""Giving up on an instruction: the kernel, not the guest, is the limit."""

from __future__ import annotations

from vmmio.abi import InstEmulReason


class EmulationAbort(Exception):
    """The kernel cannot emulate this instruction faithfully; userspace gets an INST_EMUL exit."""

    def __init__(self, reason: InstEmulReason, detail: str, insn: bytes = b"") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.insn = insn  # the instruction bytes read so far, for the exit
