"""The offline verifiers printed in docs/audit.md work as documented: they import only the standard library and
`cryptography`, accept a real proof and a real export, and reject tampered ones. They run with this venv's
Python in isolated mode and in a fresh venv holding nothing but `cryptography`."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from audit_support import ORIGIN, event

from paywire.audit.checkpoint import TlogProof
from paywire.audit.note import Signer
from paywire.audit.ops import export, prove
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore

DOC = Path(__file__).parent.parent / "docs" / "audit.md"
ALLOWED = {"base64", "hashlib", "json", "sys", "cryptography"}
FRESH_VENV = Path(os.environ.get("PAYWIRE_TEST_CACHE", "/tmp/paywire-test-cache")) / "audit-crypto-venv"


def _scripts() -> dict[str, str]:
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- offline-verifier: (\S+) -->\n```python\n(.*?)```", text, re.S))
    assert set(found) == {"verify_proof.py", "verify_export.py"}, f"docs/audit.md verifiers: {sorted(found)}"
    return found


def test_the_documented_verifiers_import_only_hashlib_and_cryptography() -> None:
    for name, code in _scripts().items():
        imported = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
        assert imported <= ALLOWED, f"{name} imports {sorted(imported - ALLOWED)}"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    tmp = tmp_path_factory.mktemp("offline")
    signer = Signer.generate(ORIGIN)

    async def build() -> None:
        store = await AuditStore.open(f"sqlite:///{tmp / 'audit.db'}")
        try:
            seq = Sequencer(store, signer, batch=10, policy=CheckpointPolicy(every_entries=10))
            for i in range(27):
                await store.enqueue(event(i))
            await seq.drain()
            await seq.integrate(force_checkpoint=True)
            p = await prove(store, 13)
            (tmp / "p.tlog-proof").write_text(TlogProof(13, p.proof.proof, p.proof.checkpoint, p.entry).format())
            bad = p.entry.replace(b'"amount":"1000"', b'"amount":"9000"')
            (tmp / "bad.tlog-proof").write_text(TlogProof(13, p.proof.proof, p.proof.checkpoint, bad).format())
            with open(tmp / "log.jsonl", "w", encoding="utf-8") as f:
                await export(store, f)
        finally:
            await store.aclose()

    asyncio.run(build())
    text = (tmp / "log.jsonl").read_text()
    (tmp / "bad.jsonl").write_text(text.replace('\\"pay-20\\"', '\\"pay-21\\"', 1))
    for name, code in _scripts().items():
        (tmp / name).write_text(code)
    return {"dir": tmp, "vkey": signer.verifier.vkey}


def _run(python: str, material: dict[str, Path | str], script: str, data: str) -> tuple[int, str]:
    d = Path(material["dir"])
    r = subprocess.run([python, "-I", str(d / script), str(material["vkey"]), str(d / data)], capture_output=True,
                       text=True, timeout=60, cwd=d)
    return r.returncode, r.stdout + r.stderr


def _check(python: str, material: dict[str, Path | str]) -> None:
    code, out = _run(python, material, "verify_proof.py", "p.tlog-proof")
    assert code == 0 and out.startswith("OK: entry 13 is in"), f"the documented proof verifier rejects a good proof:{out}"
    code, out = _run(python, material, "verify_proof.py", "bad.tlog-proof")
    assert code != 0 and "does not lead to the signed root" in out, f"it must reject an edited entry: {out}"
    code, out = _run(python, material, "verify_export.py", "log.jsonl")
    assert code == 0 and "OK: 27 entries" in out, f"the documented export verifier rejects a good export: {out}"
    code, out = _run(python, material, "verify_export.py", "bad.jsonl")
    assert code != 0 and "root differs" in out, f"it must reject an edited entry: {out}"


def test_the_documented_verifiers_accept_real_proofs_and_reject_tampered_ones(material: dict[str, Path | str]
                                                                              ) -> None:
    _check(sys.executable, material)


def test_the_documented_verifiers_run_in_a_venv_with_only_cryptography(material: dict[str, Path | str]) -> None:
    python = FRESH_VENV / "bin" / "python"
    ready = python.exists() and subprocess.run([str(python), "-c", "import cryptography"], capture_output=True,
                                               timeout=60).returncode == 0
    if not ready:  # first run (or an interrupted one): build the venv
        venv.create(FRESH_VENV, with_pip=True, clear=True)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", "cryptography"], capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            import shutil

            shutil.rmtree(FRESH_VENV, ignore_errors=True)
            pytest.skip(f"cannot install cryptography into a fresh venv: {r.stderr[-300:]}")
    r = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                       timeout=60)
    names = {line.split("==")[0].lower() for line in r.stdout.split()}
    assert names <= {"cryptography", "cffi", "pycparser", "pip", "setuptools"}, f"the venv holds {sorted(names)}"
    _check(str(python), material)
