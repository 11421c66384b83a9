"""``expiry_margin`` from the facilitator's configuration (TOML < environment < ``--expiry-margin``) reaches the
settlement engine: an authorization that expires within the margin is not broadcast, and the answer says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from paywire.devnet import DevnetInfo
from paywire.errors import ConfigError
from paywire.evm.signer import LocalSigner
from paywire.facilitator.config import FacilitatorConfig, load_config
from paywire.facilitator.service import FacilitatorService
from paywire.schemes.evm_exact import exact_evm_offer
from paywire.settlement.engine import EXPIRY_MARGIN
from tests.helpers import offer, payer_of, sign
from tests.test_facilitator_helpers import FacilitatorProcess, authorization_uses
from tests.test_facilitator_settle import body, sid_of

EXPIRED = "invalid_exact_evm_payload_authorization_valid_before"


def test_expiry_margin_comes_from_toml_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "fac.toml"
    toml.write_text('expiry_margin = "2m"\n[networks."eip155:1"]\nrpc = "https://x"\nkeys = ["0x01"]\n')
    assert FacilitatorConfig().expiry_margin == EXPIRY_MARGIN  # the engine's default, unless configured
    assert load_config(toml, env={}).expiry_margin == 120
    env = {"PAYWIRE_FACILITATOR_EXPIRY_MARGIN": "10s"}
    assert load_config(toml, env=env).expiry_margin == 10
    assert load_config(toml, env=env, overrides={"expiry_margin": 0}).expiry_margin == 0  # 0 is allowed
    nested = tmp_path / "all.toml"
    nested.write_text('[facilitator]\nexpiry_margin = 7.5\n')
    assert load_config(nested, env={}).expiry_margin == 7.5


@pytest.mark.parametrize(("where", "value", "problem"), [
    ("toml", "-1", "must be between 0 and 3600 seconds"),
    ("env", "2h", "must be between 0 and 3600 seconds"),
    ("flag", 3600.5, "must be between 0 and 3600 seconds"),
    ("env", "soon", "expected seconds or a duration"),
])
def test_a_bad_expiry_margin_is_refused_naming_the_option_and_its_source(
        tmp_path: Path, where: str, value: object, problem: str) -> None:
    toml = tmp_path / "fac.toml"
    toml.write_text(f"expiry_margin = {value}\n" if where == "toml" else "")
    env = {"PAYWIRE_FACILITATOR_EXPIRY_MARGIN": str(value)} if where == "env" else {}
    flags = {"expiry_margin": value} if where == "flag" else {}
    with pytest.raises(ConfigError) as err:
        load_config(toml, env=env, overrides=flags)
    message = str(err.value)
    assert message.startswith("facilitator option expiry_margin: ") and problem in message, message
    source = {"toml": f"(from config file {toml})", "env": "(from $PAYWIRE_FACILITATOR_EXPIRY_MARGIN)", "flag": ""}
    assert source[where] in message, message


@pytest.mark.asyncio
async def test_a_configured_margin_keeps_an_authorization_expiring_within_it_off_the_chain(tmp_path: Path) -> None:
    """With ``expiry_margin = "5m"`` in the TOML file, a payment whose authorization is valid for 60 s is refused
    by /verify (a seller must not serve what /settle would not send) and by /settle, with the expired reason and
    no transaction; nothing moves and nothing is recorded. One valid for an hour settles on the same service."""
    toml = tmp_path / "fac.toml"
    toml.write_text(f'devnet = true\nexpiry_margin = "5m"\nstore = "sqlite:///{tmp_path / "fac.db"}"\n')
    service = await FacilitatorService.start(load_config(toml, env={}))
    try:
        net = service.devnet
        short, long = offer(net, 1_201, max_timeout_seconds=60), offer(net, 1_202, max_timeout_seconds=3600)
        p_short, p_long = await sign(short, payer_of(net)), await sign(long, payer_of(net))
        paid_before = await net.token_balance(net.payee.address)
        verdict = await service.facilitator.verify(p_short, short)
        refused = await service.facilitator.settle(p_short, short)
        row = await service.store.get(sid_of(p_short, short))
        uses = await authorization_uses(net, p_short)
        settled = await service.facilitator.settle(p_long, long)
        paid = await net.token_balance(net.payee.address) - paid_before
    finally:
        await service.aclose()
    assert (verdict.is_valid, verdict.invalid_reason) == (False, EXPIRED), verdict
    assert (refused.success, refused.error_reason, refused.transaction) == (False, EXPIRED, ""), refused
    assert row is None
    assert uses == []
    assert settled.success, settled
    assert paid == 1_202


@pytest.mark.asyncio
async def test_paywire_facilitator_expiry_margin_flag_reaches_the_settlement(tmp_path: Path) -> None:
    """`paywire facilitator --devnet --expiry-margin 120`: a 60 s authorization is answered over HTTP with the
    expired reason and no transaction, and the payee is not paid."""
    state = tmp_path / "devnet.json"
    proc = FacilitatorProcess(["--devnet", "--token", "t0k", "--devnet-state", str(state), "--expiry-margin", "120"],
                              cwd=tmp_path)
    url = proc.start()
    try:
        info = DevnetInfo(**json.loads(state.read_text()))
        req = exact_evm_offer(info.asset, info.addresses["payee"], amount=1_300, max_timeout_seconds=60)
        p = await sign(req, LocalSigner(bytes.fromhex(info.payer_key[2:])))
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": "Bearer t0k"}) as http:
            s = (await http.post(url + "/settle", json=body(p, req))).json()
    finally:
        proc.stop()
    assert (s["success"], s["errorReason"], s["transaction"]) == (False, EXPIRED, ""), s


def test_paywire_facilitator_refuses_a_negative_expiry_margin(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "paywire.cli.main", "facilitator", "--devnet", "--expiry-margin", "-1"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2, out
    assert "configuration error: facilitator option expiry_margin: must be between 0 and 3600 seconds" in out
    assert "Traceback" not in out
