"""Clean layers: the wire and decision cores import no I/O module, packages form no import cycle, and no core
module reaches an adapter (ASGI/WSGI/FastAPI, the facilitator app, the store, chains, the CLI).

The import checks run in fresh interpreters (``sys.modules`` after one import); the graph checks read the source
(module-level imports only: imports inside functions and under ``if TYPE_CHECKING:`` are not import-time
dependencies). Nothing here is timed.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Servers, HTTP clients, database drivers and chains: what a core must not load just by being imported.
IO_MODULES = ["starlette", "uvicorn", "httpx", "httpcore", "h11", "sqlite3", "_sqlite3", "psycopg", "psycopg_pool",
              "asyncpg", "web3", "eth", "eth_tester", "requests", "flask", "fastapi"]

# Importing these (packages and sans-I/O cores) must load none of IO_MODULES.
IMPORT_CLEAN = [
    "paywire.server", "paywire.server.core", "paywire.server.pricing",
    "paywire.client", "paywire.client.core", "paywire.client.policy", "paywire.spending",
    "paywire.x402", "paywire.x402.codec", "paywire.x402.models", "paywire.x402.matching", "paywire.x402.networks",
    "paywire.mpp", "paywire.mpp.server", "paywire.mpp.challenge", "paywire.mpp.credential", "paywire.mpp.receipt",
    "paywire.l402", "paywire.l402.header", "paywire.l402.macaroons", "paywire.l402.caveats", "paywire.l402.identifier",
    "paywire.evm", "paywire.evm.crypto", "paywire.evm.eip712", "paywire.evm.signer",
    "paywire.schemes", "paywire.families", "paywire.chain.family",
    "paywire.audit", "paywire.audit.merkle", "paywire.audit.note", "paywire.audit.checkpoint", "paywire.audit.events",
    "paywire.audit.verifier", "paywire.audit.proofs", "paywire.audit.export", "paywire.audit.witness_core",
    "paywire.identity", "paywire.identity.did", "paywire.identity.siwe", "paywire.identity.siwx", "paywire.identity.offers",
    "paywire.identity.didweb", "paywire.identity.erc6492", "paywire.identity.metadata",
    "paywire.audit.ledger",
    # adapter packages re-export lazily too: importing the package alone opens nothing
    "paywire.chain", "paywire.store", "paywire.facilitator", "paywire.lightning", "paywire.wallet",
    "paywire.mcp", "paywire.mcp.wire", "paywire.mcp.mpp",
    "paywire.proxy", "paywire.proxy.identity",
    "paywire.risk", "paywire.risk.engine", "paywire.risk.seller", "paywire.risk.buyer",
]

# Core modules (prefixes): they must not reach an adapter through module-level imports, directly or not.
CORE = ("paywire.x402", "paywire.evm", "paywire.schemes.registry", "paywire.families",
        "paywire.server.core",
        "paywire.server.pricing", "paywire.client.core", "paywire.client.policy", "paywire.spending",
        "paywire.l402.header", "paywire.l402.macaroons", "paywire.l402.caveats", "paywire.l402.identifier",
        "paywire.audit.merkle", "paywire.audit.note", "paywire.audit.checkpoint", "paywire.audit.events",
        "paywire.audit.verifier", "paywire.audit.proofs", "paywire.audit.export", "paywire.audit.witness_core",
        "paywire.proxy.identity",
        "paywire.risk.model", "paywire.risk.features", "paywire.risk.rules",
        "paywire.identity", "paywire.audit.ledger")
CORE_PACKAGES = ("paywire.schemes", "paywire.mpp")  # the package __init__s
MPP_ADAPTERS = ("paywire.mpp.redeem", "paywire.mpp.methods")  # MPP's store claim and settlement methods
ADAPTERS = ("paywire.server.asgi", "paywire.server.wsgi", "paywire.server.fastapi", "paywire.facilitator.app",
            "paywire.store", "paywire.chain", "paywire.cli", "paywire.mcp.seller", "paywire.mcp.buyer",
            "paywire.proxy.forward", "paywire.proxy.app", "paywire.proxy.upstream")

# Package-level edges that close a known cycle (none left: store.spend and the client share paywire.spending).
# test_known_cycle_edges_still_exist fails as a reminder once a listed edge is gone.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by(module: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"import {module} failed:\n{r.stderr}"
    return set(json.loads(r.stdout))


@pytest.mark.parametrize("module", IMPORT_CLEAN)
def test_core_imports_no_io_module(module: str) -> None:
    loaded = _loaded_by(module)
    io = sorted(m for m in IO_MODULES if m in loaded)
    if io:
        via = _import_paths(module, io)
        pytest.fail(f"import {module} loads {', '.join(io)}:\n" + "\n".join(via))


def test_paywire_help_imports_only_the_cli_shell() -> None:
    """``paywire --help`` lists every command without importing their modules (they load when run)."""
    loaded = _loaded_by("paywire.cli.main")
    ours = sorted(m for m in loaded if m.startswith("paywire."))
    assert ours == ["paywire.cli", "paywire.cli.main"], f"import paywire.cli.main also loads {ours}"
    io = sorted(m for m in IO_MODULES if m in loaded)
    assert not io, f"import paywire.cli.main loads {io}"


def test_lazy_cli_help_lines_match_the_commands() -> None:
    from paywire.cli.main import LAZY_COMMANDS, load_commands

    for name, (module, line) in LAZY_COMMANDS.items():
        command = load_commands(module).get(name)
        assert command is not None, f"{module}.register() adds no command {name!r}"
        first = (command.help or "").split("\n\n")[0].strip()
        assert line == first, f"LAZY_COMMANDS[{name!r}] says {line!r}; the command's help says {first!r}"


# ------------------------------------------------------------------------------------------------ import graph


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "paywire").rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                found.append(stmt)
            elif isinstance(stmt, ast.If):
                if not _is_type_checking(stmt.test):
                    visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body)
                for handler in stmt.handlers:
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)
            elif isinstance(stmt, ast.With | ast.ClassDef):
                visit(stmt.body)

    visit(tree.body)
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Our modules an import statement runs: the named module, its parent packages, imported submodules."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    out = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES)
    out.discard(module)
    return out


def _edges() -> dict[str, dict[str, int]]:
    """module → {imported module: line}, module-level imports only."""
    edges: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, node):
                edges.setdefault(module, {}).setdefault(target, node.lineno)
    return edges


EDGES = _edges()


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])  # paywire.client.protocols.x402 → paywire.client


def _package_edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for a, targets in EDGES.items():
        for b, line in targets.items():
            if _package(a) != _package(b):
                out.setdefault((_package(a), _package(b)), []).append(f"{MODULES[a].relative_to(SRC)}:{line} "
                                                                        f"imports {b}")
    return out


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    adj: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in adj:
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_between_packages() -> None:
    package_edges = _package_edges()
    cycles = _cycles(set(package_edges) - KNOWN_CYCLE_EDGES)
    lines = []
    for component in cycles:
        lines.append("cycle between " + ", ".join(component) + ":")
        lines += [f"  {a} -> {b}: {'; '.join(why[:3])}" for (a, b), why in sorted(package_edges.items())
                  if a in component and b in component]
    assert not cycles, "\n".join(lines)


def test_known_cycle_edges_still_exist() -> None:
    """The allow-list cannot go stale: once an edge is gone, delete it from KNOWN_CYCLE_EDGES."""
    gone = sorted(KNOWN_CYCLE_EDGES - set(_package_edges()))
    assert not gone, f"these package edges no longer exist, remove them from KNOWN_CYCLE_EDGES: {gone}"


def _is_core(module: str) -> bool:
    if module.startswith(MPP_ADAPTERS):
        return False
    return (module in CORE_PACKAGES or module.startswith("paywire.mpp.")
            or any(module == c or module.startswith(c + ".") for c in CORE))


def _is_adapter(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ADAPTERS)


def test_core_modules_reach_no_adapter() -> None:
    cores = [m for m in MODULES if _is_core(m)]
    assert "paywire.server.core" in cores and "paywire.x402.codec" in cores  # the classification found them
    problems = []
    for core in cores:
        came_from: dict[str, str | None] = {core: None}
        queue = deque([core])
        while queue:
            module = queue.popleft()
            for target in EDGES.get(module, {}):
                if target not in came_from:
                    came_from[target] = module
                    queue.append(target)
        entries = sorted(m for m, parent in came_from.items()  # where the path first enters an adapter
                         if _is_adapter(m) and parent is not None and not _is_adapter(parent))
        for adapter in entries:
            hops = []
            node = adapter
            while (parent := came_from[node]) is not None:
                hops.append(f"{MODULES[parent].relative_to(SRC)}:{EDGES[parent][node]} imports {node}")
                node = parent
            problems.append(f"core {core} reaches adapter {adapter}: " + " -> ".join(reversed(hops)))
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------- lazy re-exports


def _lazy_table(path: Path) -> dict[str, tuple[str, ...]] | None:
    """The ``{module: names}`` literal a package passes to ``lazy_exports``, or None."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports":
            table: dict[str, tuple[str, ...]] = ast.literal_eval(node.args[1])
            return table
    return None


LAZY_PACKAGES = [m for m, p in MODULES.items() if p.name == "__init__.py" and _lazy_table(p) is not None]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_exports_resolve_and_match_the_type_checking_imports(package: str) -> None:
    path = MODULES[package]
    table = _lazy_table(path)
    assert table is not None
    lazy = {name for names in table.values() for name in names}
    typed: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and ((stmt.module or "").startswith(package)
                                                         or stmt.module in table):  # re-exports from elsewhere
                    typed.update(alias.asname or alias.name for alias in stmt.names)
    assert lazy == typed, (f"{package}: lazy table and TYPE_CHECKING imports differ: only lazy {sorted(lazy - typed)}, "
                           f"only TYPE_CHECKING {sorted(typed - lazy)}")
    mod = importlib.import_module(package)
    exported = set(getattr(mod, "__all__", ()))
    missing = sorted(lazy - exported)
    assert not missing, f"{package}: lazily exported but not in __all__: {missing}"
    for name in sorted(exported):
        assert getattr(mod, name, None) is not None, f"{package}.{name} does not resolve"


def _import_paths(module: str, io: list[str]) -> list[str]:
    """For a failure message: which import chain loaded each I/O module (recorded in a fresh interpreter)."""
    script = """
import importlib, importlib.abc, json, sys
wanted, chains = set(sys.argv[2:]), {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in wanted and top not in chains:
            frame, chain = sys._getframe(1), []
            while frame is not None:
                owner = frame.f_globals.get("__name__", "")
                if owner.startswith("paywire") and (not chain or chain[-1] != owner):
                    chain.append(owner)
                frame = frame.f_back
            chains[top] = list(reversed(chain))
        return None
sys.meta_path.insert(0, Spy())
importlib.import_module(sys.argv[1])
print(json.dumps(chains))
"""
    r = subprocess.run([sys.executable, "-c", script, module, *io], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return [r.stderr]
    chains: dict[str, list[str]] = json.loads(r.stdout)
    return [f"  {name}: " + " -> ".join([*chains.get(name, ["?"]), name]) for name in io]
