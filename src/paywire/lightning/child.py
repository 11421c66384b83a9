"""Child processes (a dev LNbits, its server) that never outlive the process that started them.

:func:`spawn` starts a command in its own process group and keeps it in a registry that is emptied three ways:

* :func:`terminate` (SIGTERM to the group, SIGKILL after a grace period, reap) — what ``stop()`` calls;
* at interpreter exit (``atexit``: a normal exit, an uncaught exception, Ctrl-C's ``KeyboardInterrupt``);
* on SIGTERM and SIGHUP, whose default action would end the parent without any cleanup: a handler (installed
  from the main thread, and only where the signal still has its default action, so an application's own
  handler is never replaced) terminates every registered child, then lets the signal end the process as it
  would have (exit status 128 + signal number).

On Linux the child also gets ``PR_SET_PDEATHSIG=SIGKILL`` (set by a tiny exec wrapper, so no ``preexec_fn`` runs
in a threaded parent): if the parent dies of SIGKILL, the kernel kills the child. The kernel ties that to the
*thread* that spawned it, so spawn from a thread that lives as long as the child (the event loop's).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

GRACE_SECONDS: Final = 10.0
HANDLED_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG: Final = 1
_EXEC_WRAPPER: Final = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    f"    ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"  # the parent died before prctl took effect
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


@dataclass(slots=True)
class _Child:
    proc: subprocess.Popen[Any]
    cleanup: Callable[[], None] | None


_live: dict[int, _Child] = {}
_lock = threading.RLock()  # re-entered when a signal handler interrupts the main thread inside spawn/terminate
_hooks = {"atexit": False, "signals": False}


def spawn(cmd: Sequence[str], *, cleanup: Callable[[], None] | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, start_new_session=True, **popen)`` that dies with this process; ``cleanup`` runs
    after the child is gone (on :func:`terminate`, at exit, or on SIGTERM/SIGHUP)."""
    argv = list(cmd)
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-I", "-c", _EXEC_WRAPPER, str(os.getpid()), *argv]
    _install_hooks()
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **popen)
    with _lock:
        _live[proc.pid] = _Child(proc, cleanup)
    return proc


def terminate(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """Stop ``proc`` and everything in its process group (SIGTERM, SIGKILL after ``grace`` seconds), reap it,
    then run its cleanup. Safe to call repeatedly and from any thread."""
    with _lock:
        child = _live.pop(proc.pid, None)
    _stop_group(proc, grace)
    if child is not None and child.cleanup is not None:
        child.cleanup()


def terminate_all(grace: float = GRACE_SECONDS) -> None:
    """Every child :func:`spawn` started and not yet terminated."""
    with _lock:
        children = list(_live.values())
    for child in children:
        with contextlib.suppress(Exception):
            terminate(child.proc, grace)


def live_pids() -> list[int]:
    with _lock:
        return list(_live)


def _stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    if proc.returncode is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The leader is at most a zombie here, so its pid (the group id) cannot be reused: the group kill is safe.
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (it stays a zombie until ``wait``)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped (by Popen.poll/wait elsewhere)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    terminate_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    with _lock:
        if not _hooks["atexit"]:
            _hooks["atexit"] = True
            atexit.register(terminate_all)
        if _hooks["signals"] or threading.current_thread() is not threading.main_thread():
            return
        _hooks["signals"] = True
        for sig in HANDLED_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_signal)


__all__ = ["GRACE_SECONDS", "live_pids", "spawn", "terminate", "terminate_all"]
