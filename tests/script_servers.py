"""Servers that tests run as real subprocesses: a test module, run as a script with a JSON config, serves an app
on 127.0.0.1 port 0 and prints its URL; the test talks to it, kills it, restarts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def script_servers(script: str, configs: Sequence[Mapping[str, Any]]
                         ) -> AsyncIterator[tuple[list[str], list[asyncio.subprocess.Process]]]:
    """Run ``script`` once per config; yields (their URLs, the processes) once each has printed its URL.

    stderr goes to a temporary file (shown when a server does not start); processes still alive at the end are
    terminated, and killed if they do not stop within 10 s."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with contextlib.ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile("w+b")) for _ in configs]
        procs: list[asyncio.subprocess.Process] = []
        try:
            for config, log in zip(configs, logs, strict=True):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, script, json.dumps(config), cwd=ROOT, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=log))
            urls = []
            for proc, log in zip(procs, logs, strict=True):
                assert proc.stdout is not None
                line = (await proc.stdout.readline()).decode().strip()  # printed once it is serving
                if not line.startswith("http://"):
                    log.seek(0)
                    raise RuntimeError(f"server did not start: {line!r}\n{log.read().decode(errors='replace')[-3000:]}")
                urls.append(line)
            yield urls, procs
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
            for p in procs:
                try:
                    await asyncio.wait_for(p.wait(), 10)
                except TimeoutError:
                    p.kill()
                    await p.wait()


@contextlib.asynccontextmanager
async def script_server(script: str, config: Mapping[str, Any]
                        ) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """One :func:`script_servers` process: yields (its URL, the process)."""
    async with script_servers(script, [config]) as ((url,), (proc,)):
        yield url, proc


async def serve_until_killed(app: Any) -> None:
    """The script's side: serve ``app`` on 127.0.0.1 port 0, print the URL (the parent's cue), wait to be killed."""
    from paywire.serving import serve_asgi

    async with serve_asgi(app) as url:
        print(url, flush=True)
        await asyncio.Event().wait()
