"""The facilitator is secure by default (issue 11 item 1): a public bind without a token refuses to start unless
the operator names the risk (``--allow-unauthenticated-public``); with a token, ``/verify``, ``/settle``,
``/settlements/{id}`` and ``/metrics`` need it, and the ``Bearer`` scheme is matched in any case (RFC 7235 §2.1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.errors import ConfigError
from paywire.facilitator.app import create_app
from paywire.facilitator.config import FacilitatorConfig, is_loopback, load_config
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore

pytestmark = pytest.mark.asyncio
SRC = Path(__file__).resolve().parent.parent / "src"
TOKEN = "auth-test-token"
FLAG = "--allow-unauthenticated-public"


# ------------------------------------------------------------------------------------------------ startup


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "facilitator.example"])
async def test_public_host_without_token_is_refused_naming_the_flag(host: str) -> None:
    cfg = FacilitatorConfig(host=host, devnet=True)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert FLAG in str(err.value), f"the refusal does not name {FLAG}: {err.value}"
    assert "PAYWIRE_FACILITATOR_ALLOW_UNAUTHENTICATED_PUBLIC" in str(err.value), "the refusal names no env var"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
async def test_loopback_host_without_token_starts(host: str) -> None:
    assert is_loopback(host), f"{host} is loopback"
    FacilitatorConfig(host=host, devnet=True).validate()


async def test_public_host_with_a_token_or_the_explicit_flag_starts(tmp_path: Path) -> None:
    FacilitatorConfig(host="0.0.0.0", devnet=True, bearer_token=TOKEN).validate()
    FacilitatorConfig(host="0.0.0.0", devnet=True, allow_unauthenticated_public=True).validate()
    from_env = load_config(env={"PAYWIRE_FACILITATOR_HOST": "0.0.0.0",
                                "PAYWIRE_FACILITATOR_ALLOW_UNAUTHENTICATED_PUBLIC": "1",
                                "PAYWIRE_FACILITATOR_DEVNET": "true"})
    from_env.validate()
    toml = tmp_path / "fac.toml"
    toml.write_text('host = "0.0.0.0"\ndevnet = true\nallow_unauthenticated_public = true\n')
    load_config(toml, env={}).validate()


async def test_paywire_facilitator_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    """``paywire facilitator --devnet --host 0.0.0.0`` stops before opening anything: exit 2, one line that
    names the flag, no traceback, nothing listening."""
    r = subprocess.run([sys.executable, "-m", "paywire.cli.main", "facilitator", "--devnet", "--host", "0.0.0.0",
                        "--port", "0"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(SRC)})
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"exit code {r.returncode}, expected 2:\n{out}"
    assert FLAG in out, f"the error does not name {FLAG}:\n{out}"
    assert "listening" not in out and "Traceback" not in out, out


# ------------------------------------------------------------------------------------------------ a served app


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    try:
        async with serve_asgi(create_app(Facilitator([], store=store), bearer_token=TOKEN)) as url:
            yield url
    finally:
        await store.aclose()


@pytest.mark.parametrize("path", ["/metrics", "/settlements/" + "0" * 64])
async def test_records_and_metrics_need_the_token(served: str, path: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(served + path)
        wrong = await http.get(served + path, headers={"Authorization": "Bearer nope"})
        right = await http.get(served + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert anonymous.status_code == 401, f"GET {path} without a token got {anonymous.status_code}"
    assert anonymous.headers.get("www-authenticate", "").startswith("Bearer"), "401 carries no Bearer challenge"
    assert wrong.status_code == 401, f"GET {path} with a wrong token got {wrong.status_code}"
    assert right.status_code in (200, 404), f"GET {path} with the token got {right.status_code}"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_matched_in_any_case(served: str, scheme: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(served + "/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200, f"'Authorization: {scheme} <token>' got {r.status_code}, expected 200"


@pytest.mark.parametrize("value", [f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN.upper()}", f"Bearer{TOKEN}",
                                   f"Bearer {TOKEN}x"])
async def test_other_schemes_and_tokens_are_refused(served: str, value: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(served + "/settle", headers={"Authorization": value}, json={})
    assert r.status_code == 401, f"'Authorization: {value}' got {r.status_code}, expected 401"
