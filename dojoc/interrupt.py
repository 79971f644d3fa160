"""Ctrl-C for the command line (`python -m dojoc`, the `dojoc` script): safe at any moment, one message.

Ctrl-C before the command starts (while Python imports click, numpy and dojoc) leaves at once with the
command line's one message: nothing has been written yet. Once the command runs, Ctrl-C is a
KeyboardInterrupt that the command line turns into that message after its atomic writes. An interrupt
that lands where Python cannot raise it, in a weakref callback of the import machinery, is reported as
"unraisable" and would be lost; it is delivered again, so it lands in ordinary code a moment later.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = "error: interrupted; no partial output was left behind"


def _leave(signum: int, frame: FrameType | None) -> None:
    os.write(2, (INTERRUPTED + "\n").encode())
    os._exit(130)


def _redeliver(unraisable: sys.UnraisableHookArgs) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    else:
        sys.__unraisablehook__(unraisable)


def take_interrupts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt (called as the command starts)."""
    if signal.getsignal(signal.SIGINT) is _leave:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def guard() -> None:
    """Until `take_interrupts`, Ctrl-C leaves at once; an unraisable interrupt is delivered again."""
    signal.signal(signal.SIGINT, _leave)
    sys.unraisablehook = _redeliver
