"""Making KVM_RUN return on time: a POSIX timer that signals the vCPU's thread, and KVM's signal mask.

A guest that spins without exits stays in KVM_RUN until a signal reaches its thread. Without an in-kernel
irqchip the timers are ours, so their deadlines must end KVM_RUN the way a userspace-irqchip VMM does it
(QEMU's SIG_IPI): `KICK_SIGNAL` is blocked in the vCPU's thread and unblocked only inside KVM_RUN
(KVM_SET_SIGNAL_MASK), so it interrupts the guest but is never delivered to Python. A kick sent while the
thread is outside KVM_RUN stays pending and ends the next KVM_RUN at once, so none is lost, and
`consume` takes it off the thread with sigtimedwait. No signal handler is installed: this works in any
thread, not only Python's main one.

The signal stays blocked in the thread once a vCPU has run there (another vCPU may share the thread, and
an unblocked real-time signal with no handler would end the process); processes it starts inherit that.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import signal
import struct
import sys
import threading
import time
import weakref
from typing import Any, Final

if sys.platform == "linux":
    KICK_SIGNAL: Final = signal.SIGRTMIN + 2  # a real-time signal nothing else here uses
else:  # no KVM: the name exists, nothing binds
    KICK_SIGNAL = signal.SIGUSR2
KVM_SET_SIGNAL_MASK: Final = 0x4004_AE8B  # _IOW(KVMIO, 0x8b, struct kvm_signal_mask)
_KERNEL_SIGSET_BYTES: Final = 8
_CLOCK_MONOTONIC: Final = 1
_SIGEV_THREAD_ID: Final = 4


class _SigEvent(ctypes.Structure):
    """struct sigevent (x86-64, 64 bytes) with the SIGEV_THREAD_ID member of its union."""

    _fields_ = (
        ("value", ctypes.c_void_p),
        ("signo", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("tid", ctypes.c_int),
        ("pad", ctypes.c_int * 11),
    )


class _Timespec(ctypes.Structure):
    _fields_ = (("sec", ctypes.c_long), ("nsec", ctypes.c_long))


class _ItimerSpec(ctypes.Structure):
    _fields_ = (("interval", _Timespec), ("value", _Timespec))


@functools.cache
def _libc() -> Any:
    """The C library with the POSIX timer calls typed (looked up on first use: Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.timer_create.argtypes = (ctypes.c_int, ctypes.POINTER(_SigEvent), ctypes.POINTER(ctypes.c_void_p))
    libc.timer_settime.argtypes = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(_ItimerSpec),
        ctypes.c_void_p,
    )
    libc.timer_delete.argtypes = (ctypes.c_void_p,)
    return libc


def _sigset_bytes(signals: set[int]) -> bytes:
    """A kernel sigset_t: bit n-1 for signal n."""
    bits = 0
    for sig in signals:
        bits |= 1 << (int(sig) - 1)
    return bits.to_bytes(_KERNEL_SIGSET_BYTES, "little")


def _delete_timer(timers: list[int]) -> None:
    while timers:
        _libc().timer_delete(timers.pop())


class RunKicker:
    """Ends a vCPU's KVM_RUN at a deadline (`arm`) or on request from any thread (`kick`)."""

    def __init__(self, vcpu_fd: int) -> None:
        self._fd = vcpu_fd
        self._tid = 0  # native id of the thread bound (its KVM_RUN is the one signalled), 0: none yet
        self._ident = 0  # its Python ident, for pthread_kill
        self._timers: list[int] = []  # the POSIX timer of the bound thread (a list for the finalizer)
        self._armed: int | None = None  # monotonic ns when the armed timer fires
        self._finalizer = weakref.finalize(self, _delete_timer, self._timers)
        self.kicks = 0  # signals taken off the thread: timer expiries and kicks

    def bind(self) -> None:
        """Make the calling thread the one whose KVM_RUN is signalled (once per thread: cheap after)."""
        tid = threading.get_native_id()
        if tid == self._tid:
            return
        _delete_timer(self._timers)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {KICK_SIGNAL})
        during_run = _sigset_bytes(set(blocked) - {KICK_SIGNAL})
        mask = bytearray(struct.pack("<I", _KERNEL_SIGSET_BYTES) + during_run)
        try:
            fcntl.ioctl(self._fd, KVM_SET_SIGNAL_MASK, mask, True)
        except OSError as e:
            raise OSError(e.errno, f"KVM_SET_SIGNAL_MASK: {os.strerror(e.errno or 0)}") from None
        event = _SigEvent(signo=KICK_SIGNAL, notify=_SIGEV_THREAD_ID, tid=tid)
        handle = ctypes.c_void_p()
        if _libc().timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(handle)):
            err = ctypes.get_errno()
            raise OSError(err, f"timer_create: {os.strerror(err)}")
        self._timers.append(handle.value or 0)
        self._tid, self._ident, self._armed = tid, threading.get_ident(), None

    def arm(self, delay_ns: int) -> None:
        """Signal the bound thread `delay_ns` from now, unless the timer already fires by then."""
        now = time.monotonic_ns()
        at = now + max(delay_ns, 1)
        if self._armed is not None and now < self._armed <= at:
            return  # an earlier expiry is on its way: it ends the run, and the caller re-arms then
        spec = _ItimerSpec(value=_Timespec(*divmod(at - now, 1_000_000_000)))
        if _libc().timer_settime(self._timers[0], 0, ctypes.byref(spec), None):
            err = ctypes.get_errno()
            raise OSError(err, f"timer_settime: {os.strerror(err)}")
        self._armed = at

    def kick(self) -> None:
        """End the bound thread's KVM_RUN now, or its next one; callable from any thread."""
        if self._ident:
            with contextlib.suppress(ProcessLookupError):  # the thread is gone
                signal.pthread_kill(self._ident, KICK_SIGNAL)

    def consume(self) -> bool:
        """Take pending kicks off the calling thread; whether there were any.

        A timer re-armed after it fired leaves a stale signal that still ends KVM_RUN but is dropped
        here (Linux discards a re-armed timer's old expiry when it is dequeued): an EINTR with nothing
        to take is not necessarily someone else's signal.
        """
        taken = False
        while signal.sigtimedwait({KICK_SIGNAL}, 0) is not None:
            taken = True
            self.kicks += 1
        if taken:
            self._armed = None  # a fired timer, or a kick that may have raced with it: re-arm next time
        return taken

    def close(self) -> None:
        """Delete the timer and forget the thread (its signal stays blocked: see the module docstring)."""
        self._finalizer()
        self._tid = self._ident = 0
        self._armed = None


__all__ = ["KICK_SIGNAL", "RunKicker"]
