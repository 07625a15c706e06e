"""Stopping on SIGTERM and Ctrl-C (SIGINT) within seconds, wherever the work is: inside an
attack's inner loop, a visualisation's gradient ascent, a test loop.

One mechanism for every long loop: the handlers that :func:`stop_on_signals` installs only note
the signal, and the loops call :func:`check_stop`, which raises :class:`StopRequested` once one
was noted. StopRequested is a SystemExit whose code is what shells and schedulers report for a
process a signal ended: 143 for SIGTERM, 130 for Ctrl-C; an entry point that lets it pass exits
with that code and no traceback. :func:`check_stop_before_forward` makes every forward pass of a
network such a check, which reaches the loops inside libraries too (captum's integrated
gradients, scipy's L-BFGS).

The handlers raise nothing themselves: raised from a handler, the exception would land in
whatever ran at that moment (a file's write, a logger's flush); a check at a known point stops
where stopping is safe. Training saves its checkpoint at the next batch boundary
(zoo.training.preemption), which reads the same flag.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.hooks import RemovableHandle

# What shells and schedulers report for a process ended by SIGTERM, and by Ctrl-C.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT

# The signals noted since stop_on_signals began.
_noted: set[int] = set()


class StopRequested(SystemExit):
    """A long loop stopped because of a SIGTERM or a Ctrl-C: exits with 143 or 130.

    ``saved`` says what the interrupted work left behind, for the one line that reports it."""

    def __init__(self, signum: int, saved: str = "nothing was written") -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.saved = saved

    @property
    def reason(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Interrupted (Ctrl-C)"


def request_stop(signum: int) -> None:
    """Note ``signum``: the next :func:`check_stop` raises."""
    _noted.add(signum)


def stop_requested() -> int | None:
    """The signal noted, SIGTERM before SIGINT; None while none was."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signum in _noted:
            return signum
    return None


def check_stop() -> None:
    """Raise :class:`StopRequested` if a SIGTERM or Ctrl-C was noted: call it once per iteration
    of a loop that may run long."""
    signum = stop_requested()
    if signum is not None:
        raise StopRequested(signum)


def check_stop_before_forward(network: nn.Module) -> RemovableHandle:
    """Make each forward pass of ``network`` begin with :func:`check_stop`; remove the hook
    with the handle returned. A forward pass is every loop's unit of work in evaluation, and
    the check costs a function call beside it."""
    return network.register_forward_pre_hook(lambda module, inputs: check_stop())


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside: a SIGTERM or the first Ctrl-C is noted for :func:`check_stop`; a second
    Ctrl-C gets the handler from before back, which stops at once (Python's KeyboardInterrupt).
    A SIGINT that was ignored on entry (``nohup``, a shell's background job) stays ignored.

    Lightning's own handler, installed during ``fit`` and ``test``, calls this one too. It
    raises its SIGTERMException between batches, with exit code 0; here that becomes the
    StopRequested of the SIGTERM. Off the main thread, where no handler can be set, nothing
    is installed. The previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        request_stop(signum)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        request_stop(signum)
        signal.signal(signal.SIGINT, _settable(previous[signal.SIGINT]))

    _noted.clear()
    signal.signal(signal.SIGTERM, on_sigterm)
    if previous[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except SIGTERMException as err:
        raise StopRequested(signal.SIGTERM) from err
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, _settable(handler))
        _noted.clear()


def _settable(handler: Any) -> Any:
    # None: a handler set outside Python, which Python can't set again; the default stands in.
    return signal.SIG_DFL if handler is None else handler
