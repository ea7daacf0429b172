"""Types of the optional native exit path (vmmio/_fastpath.c; docs/fastpath.md)."""

from collections.abc import Sequence

STOPPED: int
NPF: int
NOT_RUN: int
TABLE: int

class FastPath:
    def __init__(
        self,
        uc: int,
        emu_start: int,
        reg_write: int,
        context_save: int,
        context: int,
        blob: int,
        key_off: int,
        key_len: int,
        regs_off: int,
        reg_ids: Sequence[int],
        until: int,
        read_type: int,
        write_type: int,
        err_read: int,
        err_write: int,
        /,
    ) -> None: ...
    @property
    def hook(self) -> int: ...
    @property
    def user_data(self) -> int: ...
    @property
    def data(self) -> int: ...
    @property
    def err(self) -> int: ...
    @property
    def hits(self) -> int: ...
    def take_npf(self) -> tuple[int, int] | None: ...
    def clear(self) -> None: ...
    def learn(
        self,
        rip: int,
        code_addr: int,
        code: bytes,
        checks: Sequence[tuple[int, int]],
        ea: tuple[int, int, int, int, int],
        access: tuple[int, int, int],
        direct: tuple[int, int, int, int, int, int, int, int, int],
        key: bytes,
        /,
    ) -> int: ...
    def cycle(self, handle: int, value: int, count: int, timeout: int, /) -> int: ...
