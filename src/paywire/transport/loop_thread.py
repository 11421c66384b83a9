"""A private event loop on a daemon thread, so synchronous callers (the sync buyer clients, the WSGI adapter)
run the one async core."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def _await(aw: Awaitable[T]) -> T:
    return await aw


class LoopThread:
    """Starts on first use; ``run(aw)`` blocks the calling thread until ``aw`` finishes on the loop thread.

    ``io_workers`` sizes the loop's default executor (blocking calls run there); ``stop()`` ends the thread, and
    a later ``run`` starts a fresh one.
    """

    def __init__(self, name: str = "paywire-loop", *, io_workers: int | None = None) -> None:
        self._name, self._io_workers = name, io_workers
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                if self._io_workers is not None:
                    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                        max_workers=self._io_workers, thread_name_prefix=f"{self._name}-io"))
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, aw: Awaitable[T]) -> T:
        coro: Coroutine[Any, Any, T] = aw if asyncio.iscoroutine(aw) else _await(aw)
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self._name}: called from its own event loop thread (it would wait forever)")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join its thread; the loop is closed once the thread has ended."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout)
        if not thread.is_alive():
            loop.close()


_shared = LoopThread("paywire-client", io_workers=64)  # the sync buyer clients' blocking sends run on its pool


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the shared private loop of the synchronous clients and return its result (or raise)."""
    return _shared.run(coro)
