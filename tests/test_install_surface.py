"""What each install brings: ``pip install paywire`` (a seller, a buyer or a facilitator on a real chain) imports
nothing from an extra, not even the embedded dev chain (py-evm, the ``dev`` extra); the README's first command
(``-e '.[dev]'``) runs the demo; without the ``dev`` extra ``paywire demo``/``devnet`` say which extra to install."""

from __future__ import annotations

import subprocess
import sys

EXTRAS_ONLY = ["fastapi", "flask", "requests", "psycopg", "psycopg_pool", "pympp", "x402", "bolt11",
               "l402_requests", "pytest", "hypothesis", "mcp", "cel", "redis"]
DEV_ONLY = ["web3", "eth_tester", "eth"]  # web3[tester]: web3.py, eth-tester and py-evm (top-level package ``eth``)


def _blocking(blocked: list[str], body: str) -> str:
    """A script that fails on any import of a ``blocked`` top-level package, then runs ``body``."""
    return f"""
import importlib.abc, sys
blocked = set({blocked!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError("package from an extra imported: " + name)
        return None
sys.meta_path.insert(0, Block())
{body}
"""


CORE = """
import paywire.cli.main, paywire.server.asgi, paywire.server.wsgi, paywire.client, paywire.client.engine
import paywire.facilitator.app, paywire.facilitator.service, paywire.store, paywire.store.payments
import paywire.mpp, paywire.l402, paywire.lightning, paywire.wallet, paywire.mcp, paywire.mcp.wire
import paywire.risk.engine, paywire.risk.seller, paywire.risk.buyer, paywire.store.risk, paywire.cli.risk
import paywire.chain, paywire.chain.rpc, paywire.chain.tx, paywire.chain.anvil, paywire.chain.embedded
print("ok")
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)


def test_core_install_imports_nothing_from_an_extra_nor_the_dev_chain() -> None:
    r = _run(_blocking(EXTRAS_ONLY + DEV_ONLY, CORE))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_readme_first_command_installs_what_the_demo_imports() -> None:
    """Core plus the ``dev`` extra is enough for the demo and the devnet (and nothing else from an extra)."""
    body = "import paywire.demo, paywire.devnet, paywire.cli.main, eth_tester, eth\nprint('ok')"
    r = _run(_blocking(EXTRAS_ONLY, body))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_demo_and_devnet_without_the_dev_extra_name_it_in_one_line() -> None:
    cli = "import sys\nfrom paywire.cli.main import main\nsys.argv = ['paywire', *sys.argv[1:]]\nmain()"
    for command in (["demo"], ["devnet", "--exit"]):
        r = _run(_blocking(EXTRAS_ONLY + DEV_ONLY, cli), *command)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, f"paywire {command[0]} exited {r.returncode}: {r.stdout}{r.stderr}"
        assert len(lines) == 1 and "pip install 'paywire[dev]'" in lines[0], (
            f"paywire {command[0]} without py-evm should print one line naming the dev extra, got:\n{r.stderr}")


def test_py_evm_comes_only_with_the_dev_extra() -> None:
    """``pip install paywire`` must not pull py-evm; ``[dev]`` does, and ``[test]`` includes ``[dev]``."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    dev_chain = ("web3", "eth-tester", "py-evm")
    core = [d for d in project["dependencies"] if d.lower().startswith(dev_chain)]
    assert not core, f"core dependencies pull the dev chain: {core}"
    extras = project["optional-dependencies"]
    assert any(d.startswith("web3[tester]") for d in extras["dev"]), f"the dev extra lacks web3[tester]: {extras['dev']}"
    assert "paywire[dev]" in extras["test"], "the test extra must include paywire[dev]"
