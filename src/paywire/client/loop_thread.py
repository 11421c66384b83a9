"""A private event loop on a daemon thread, so synchronous clients run the one async core."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Starts on first use; ``run(coro)`` blocks the calling thread until the coroutine finishes there."""

    def __init__(self, name: str = "paywire-client") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                # blocking sends of the sync clients run on this pool: size it for many caller threads
                loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                    max_workers=64, thread_name_prefix=f"{self._name}-io"))
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

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous paywire client was called from its own event loop thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_shared = LoopThread()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the shared private loop and return its result (or raise its exception)."""
    return _shared.run(coro)
