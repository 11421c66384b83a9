"""Instructions per settlement of the ``paywire facilitator`` process (valgrind callgrind), and its CPU time.

    python bench/facilitator_callgrind.py [--src DIR] [--settlements 100] [--concurrency 8] [--warmup 30]
    python bench/facilitator_callgrind.py --cpu [--settlements 300] [--concurrency 32]   # /proc CPU ms, no valgrind

The service runs from ``--src`` (default: this tree's ``src``; point it at a copy of another commit's ``src``
to compare), with 1 gas key and a SQLite store, on a fresh anvil. Under callgrind, counters are zeroed after
``--warmup`` settlements (a warm process), then ``--settlements`` settle at ``--concurrency`` and the counters
are dumped: the total instructions divided by the settlements. The dump file is kept (``--out``) for
``callgrind_annotate --inclusive=yes``. With ``--cpu`` the process runs without valgrind and the CPU time it
used (``/proc``) during the settlements is divided by them instead. Instruction counts do not depend on the
machine's load; CPU time does, so compare that one in alternating runs.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from facilitator import OURS_1, Server, cpu_seconds, fresh_chain, make_payloads, settle_rate


def total_ir(dump: str) -> int:
    """The ``summary:``/``totals:`` instruction count of a callgrind dump."""
    for line in Path(dump).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


async def run(args: argparse.Namespace) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="paywire-cg-"))
    src = str(Path(args.src).resolve())
    async with fresh_chain() as (net, rpc, _):
        payloads = await make_payloads(net.asset, net.payee.address, net.payer.private_key, 0,
                                       args.warmup + args.settlements, 0)
        bodies = payloads.ours_1
        cfg = tmp / "f.toml"
        cfg.write_text(f'store = "sqlite:///{tmp / "f.db"}"\nreceipt_timeout = 60\n'
                       f'[networks."eip155:31337"]\nrpc = "{rpc}"\nkeys = {json.dumps(OURS_1)}\n')
        cmd = [sys.executable, "-m", "paywire.cli.main", "facilitator", "--config", str(cfg), "--port", "0"]
        if args.cprofile:
            cmd = [sys.executable, "-m", "cProfile", "-o", args.cprofile, *cmd[1:]]
        elif not args.cpu:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", *cmd]
        env = {"COLUMNS": "200", "PYTHONPATH": src}
        srv = Server("facilitator", cmd, env)
        try:
            url = await asyncio.to_thread(srv.wait, 300.0)
            warm = await settle_rate(url, bodies[:args.warmup], min(args.concurrency, args.warmup))
            assert warm["failed"] == 0, warm
            pid = srv.proc.pid
            if not (args.cpu or args.cprofile):
                subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
            c0 = cpu_seconds(pid)
            res = await settle_rate(url, bodies[args.warmup:], args.concurrency)
            c1 = cpu_seconds(pid)
            assert res["failed"] == 0 and res["settled"] == args.settlements, res
            out = {"settled": res["settled"], "per_second": round(res["per_second"], 1),
                   "cpu_ms_per_settlement": round((c1 - c0) * 1e3 / res["settled"], 3)}
            if not (args.cpu or args.cprofile):
                subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
                dumps = sorted(glob.glob(f"{tmp}/cg.{pid}.*"), key=os.path.getmtime)
                out["instructions_per_settlement_M"] = round(total_ir(dumps[-1]) / res["settled"] / 1e6, 3)
                if args.out:
                    Path(args.out).write_bytes(Path(dumps[-1]).read_bytes())
            return out
        finally:
            if args.cprofile and srv.proc.poll() is None:  # SIGINT: cProfile writes its stats on the way out
                srv.proc.send_signal(signal.SIGINT)
                srv.proc.wait(30)
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    ap.add_argument("--settlements", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--cpu", action="store_true", help="CPU time from /proc, no valgrind")
    ap.add_argument("--out", help="keep the callgrind dump here")
    ap.add_argument("--cprofile", help="run under cProfile (no valgrind) and write its stats here")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
