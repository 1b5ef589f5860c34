"""What a user did wrong, told in one line: the errors a stage or a command reports without a
traceback, and the SIGTERM/SIGINT that stops one cleanly.

A :class:`UserError` is about the input (params, data, a bundle), never a bug: a stage that ends on
one prints ``error: <message>`` and exits 1. A full disk, a read-only or unreadable path ends the
same way. SIGTERM and SIGINT raise :class:`Stopped` (a ``BaseException``, so no ``except
Exception`` swallows it) where the program is: every atomic writer removes its temp file on the way
out, and the exit code is 128 + the signal's number. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import signal
import sys
import threading
from contextlib import contextmanager

# file-system faults that are the machine's or the user's, not the program's
FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT,
          errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE)


class UserError(Exception):
    """A problem with what the user gave (the message says which key, file or field)."""


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise :class:`Stopped` in the main thread (elsewhere: left as they are)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, _raise_stopped)


@contextmanager
def stopping_on_signals():
    """:func:`stop_on_signals` for one block (a command run inside a test or a notebook), then the
    previous handlers again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals()
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def one_line(e: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an error a user should see in one line, else None (a bug)."""
    if isinstance(e, Stopped):
        return f"{e}; outputs left as they were", 128 + e.signum
    if isinstance(e, KeyboardInterrupt):
        return "stopped by SIGINT; outputs left as they were", 130
    if isinstance(e, UserError):
        return str(e), 1
    if isinstance(e, OSError) and e.errno in FAULTS:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}", 1
    return None


def _hook(kind, value, tb):
    told = one_line(value)
    if told is None:
        return sys.__excepthook__(kind, value, tb)
    sys.stdout.flush()
    print(f"error: {' '.join(told[0].split())}", file=sys.stderr)
    sys.stderr.flush()
    import os

    os._exit(told[1])  # the exit code is the message; interpreter teardown adds nothing


def install() -> None:
    """For a stage process: one-line errors (above) and signals that stop cleanly."""
    sys.excepthook = _hook
    stop_on_signals()
