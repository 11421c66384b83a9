"""Output helpers the ``paywire`` commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def info_table(info: dict[str, object], title: str = "paywire devnet") -> Any:
    """A two-column ``rich`` table of ``info`` (nested dicts flattened as ``key.sub``)."""
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", str(vv))
        else:
            t.add_row(k, str(v))
    return t


class Steps:
    """Progress of a slow start, on stderr: a spinner naming the current step on a terminal, one line per step
    otherwise (``paywire devnet: deploying the token…``), so a start is never silent.

        with Steps("paywire devnet") as steps:
            steps.step("starting the embedded chain")
    """

    def __init__(self, command: str, console: Any = None) -> None:
        from rich.console import Console

        self.command = command
        self.console = console if console is not None else Console(stderr=True)
        self._status: Any = None

    def step(self, text: str) -> None:
        if not self.console.is_terminal:
            self.console.print(f"{self.command}: {text}…", highlight=False, soft_wrap=True)
            return
        if self._status is None:
            self._status = self.console.status(f"{text}…")
            self._status.start()
        else:
            self._status.update(f"{text}…")

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def store_label(url: str) -> str:
    """A store URL as a person should read it: a SQLite file's absolute path, a database URL without password."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite store URL names (absolute), or None for other stores and ``:memory:``."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:///")
    if "://" in path or path == ":memory:":
        return None
    return Path(path).expanduser().absolute()


def missing_store(url: str) -> Path | None:
    """The SQLite file a read-only command was asked to read when it does not exist (it must not be created)."""
    path = sqlite_file(url)
    return path if path is not None and not path.exists() else None


def port_error(exc: BaseException, where: str) -> str | None:
    """One line for a server that cannot listen on ``where`` (busy port, no permission), or None."""
    import errno

    if not isinstance(exc, OSError):
        return None
    reasons = {errno.EADDRINUSE: "the address is already in use (another process listens there)",
               errno.EACCES: "permission denied (ports below 1024 need privileges)",
               errno.EADDRNOTAVAIL: "this machine has no such address"}
    reason = reasons.get(exc.errno or 0)
    if reason is None:
        return None
    return f"cannot listen on {where}: {reason}; choose another --port (0 picks a free one)"


def loop_factory() -> Any:
    """uvloop's event loop when it is installed (as uvicorn's "auto" picks it), else asyncio's (None)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
