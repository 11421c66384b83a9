"""Typed configuration: one loader for seller, facilitator and buyer. The same options from code, a TOML file
or the environment give the same object; code beats the environment beats the file beats the defaults; a bad
value or an unknown name is refused at startup with a message that names the option."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from paywire.client import Buyer, BuyerConfig, PaymentTransport, Policy, SyncPaymentTransport, x402_client
from paywire.client.config import BuyerOptions
from paywire.errors import ConfigError
from paywire.facilitator.config import FacilitatorConfig, NetworkConfig, load_config
from paywire.server.asgi import PaymentMiddleware
from paywire.server.config import SellerConfig, SellerOptions
from paywire.server.core import PaidRoute
from paywire.server.wsgi import WsgiPaymentMiddleware
from paywire.settings import UnknownOption, parse_duration

PAY_TO = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
NET = "eip155:84532"
FAC = "http://127.0.0.1:4020"


def toml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "paywire.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------------------
# the same object from code, TOML and the environment
# ------------------------------------------------------------------------------------------------------------

SELLER_CODE: dict[str, Any] = {
    "facilitator": FAC, "pay_to": PAY_TO, "network": NET, "store": "sqlite:///shop.db", "settle_timeout": 20.0,
    "lease": 90.0, "replay_wait": 0.0, "max_record_bytes": 65536, "check_supported": False,
    "mpp_realm": "api.example.com", "mpp_nonce_variants": ("json",), "mpp_ttl": 120, "cors_origin": "https://a.example",
    "l402_reject_status": 402, "confirm_with_node": True,
}
SELLER_TOML = """
[seller]
facilitator = "http://127.0.0.1:4020"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
network = "eip155:84532"
store = "sqlite:///shop.db"
settle_timeout = "20s"
lease = 90
replay_wait = 0
max_record_bytes = 65536
check_supported = false
mpp_realm = "api.example.com"
mpp_nonce_variants = ["json"]
mpp_ttl = "2m"
cors_origin = "https://a.example"
l402_reject_status = 402
confirm_with_node = true

[buyer]
max_retries = 4
"""
SELLER_ENV = {
    "PAYWIRE_SELLER_FACILITATOR": FAC, "PAYWIRE_SELLER_PAY_TO": PAY_TO, "PAYWIRE_SELLER_NETWORK": NET,
    "PAYWIRE_SELLER_STORE": "sqlite:///shop.db", "PAYWIRE_SELLER_SETTLE_TIMEOUT": "20000ms",
    "PAYWIRE_SELLER_LEASE": "1.5m", "PAYWIRE_SELLER_REPLAY_WAIT": "0", "PAYWIRE_SELLER_MAX_RECORD_BYTES": "65536",
    "PAYWIRE_SELLER_CHECK_SUPPORTED": "no", "PAYWIRE_SELLER_MPP_REALM": "api.example.com",
    "PAYWIRE_SELLER_MPP_NONCE_VARIANTS": "json", "PAYWIRE_SELLER_MPP_TTL": "120",
    "PAYWIRE_SELLER_CORS_ORIGIN": "https://a.example", "PAYWIRE_SELLER_L402_REJECT_STATUS": "402",
    "PAYWIRE_SELLER_CONFIRM_WITH_NODE": "true",
}

BUYER_CODE: dict[str, Any] = {"store": "sqlite:///wallet.db", "max_retries": 4, "retry_delay": 0.5,
                              "account": PAY_TO, "reconcile_every": 60.0, "nonce_variant": "json",
                              "send_accept_payment": False, "timeout": 10.0}
BUYER_TOML = """
[buyer]
store = "sqlite:///wallet.db"
max_retries = 4
retry_delay = "500ms"
account = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
reconcile_every = "1m"
nonce_variant = "json"
send_accept_payment = false
timeout = 10
"""
BUYER_ENV = {"PAYWIRE_BUYER_STORE": "sqlite:///wallet.db", "PAYWIRE_BUYER_MAX_RETRIES": "4",
             "PAYWIRE_BUYER_RETRY_DELAY": "0.5", "PAYWIRE_BUYER_ACCOUNT": PAY_TO,
             "PAYWIRE_BUYER_RECONCILE_EVERY": "60s", "PAYWIRE_BUYER_NONCE_VARIANT": "json",
             "PAYWIRE_BUYER_SEND_ACCEPT_PAYMENT": "off", "PAYWIRE_BUYER_TIMEOUT": "10"}

FAC_CODE: dict[str, Any] = {"store": "sqlite:///fac.db", "bearer_token": "tok", "host": "0.0.0.0", "port": 5000,
                            "confirmations": 2, "receipt_timeout": 30.0, "reconcile_interval": 2.5,
                            "stuck_after": 120.0, "rpc_timeout": 5.0, "instance_id": "fac-a", "devnet": True}
FAC_TOML = """
store = "sqlite:///fac.db"
bearer_token = "tok"
host = "0.0.0.0"
port = 5000
confirmations = 2
receipt_timeout = "30s"
reconcile_interval = 2.5
stuck_after = "2m"
rpc_timeout = 5
instance_id = "fac-a"
devnet = true
"""
FAC_ENV = {"PAYWIRE_STORE": "sqlite:///fac.db", "PAYWIRE_FACILITATOR_TOKEN": "tok",
           "PAYWIRE_FACILITATOR_HOST": "0.0.0.0", "PAYWIRE_FACILITATOR_PORT": "5000",
           "PAYWIRE_FACILITATOR_CONFIRMATIONS": "2", "PAYWIRE_FACILITATOR_RECEIPT_TIMEOUT": "30",
           "PAYWIRE_FACILITATOR_RECONCILE_INTERVAL": "2500ms", "PAYWIRE_FACILITATOR_STUCK_AFTER": "2m",
           "PAYWIRE_FACILITATOR_RPC_TIMEOUT": "5s", "PAYWIRE_FACILITATOR_INSTANCE": "fac-a",
           "PAYWIRE_FACILITATOR_DEVNET": "1"}

ROLES = [(SellerConfig, SELLER_CODE, SELLER_TOML, SELLER_ENV), (BuyerConfig, BUYER_CODE, BUYER_TOML, BUYER_ENV),
         (FacilitatorConfig, FAC_CODE, FAC_TOML, FAC_ENV)]


@pytest.mark.parametrize(("cls", "code", "toml", "env"), ROLES, ids=["seller", "buyer", "facilitator"])
def test_code_toml_and_env_give_the_same_config(tmp_path: Path, cls: Any, code: dict[str, Any], toml: str,
                                                env: dict[str, str]):
    from_code = cls(**code)
    from_toml = cls.load(toml_file(tmp_path, toml), env={})
    from_env = cls.load(env=env)
    assert from_code == from_toml, "TOML gives what code gives"
    assert from_code == from_env, "the environment gives what code gives"
    assert from_code != cls(), "the sample sets options away from their defaults"


def test_the_toml_path_may_come_from_the_environment(tmp_path: Path):
    path = toml_file(tmp_path, SELLER_TOML)
    assert SellerConfig.load(env={"PAYWIRE_SELLER_CONFIG": str(path)}) == SellerConfig(**SELLER_CODE)
    assert BuyerConfig.load(env={"PAYWIRE_BUYER_CONFIG": str(path)}) == BuyerConfig(max_retries=4)


def test_the_facilitator_reads_a_facilitator_table_as_well_as_its_whole_file_format(tmp_path: Path):
    table = toml_file(tmp_path, "[facilitator]\n" + FAC_TOML + '\n[seller]\npay_to = "0x01"\n')
    assert FacilitatorConfig.load(table, env={}) == FacilitatorConfig(**FAC_CODE)


# ------------------------------------------------------------------------------------------------------------
# precedence: code > environment > TOML > defaults
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "table", "name", "env_var", "values"), [
    (SellerConfig, "[seller]\n", "settle_timeout", "PAYWIRE_SELLER_SETTLE_TIMEOUT", (60.0, 11.0, 22.0, 33.0)),
    (BuyerConfig, "[buyer]\n", "max_retries", "PAYWIRE_BUYER_MAX_RETRIES", (2, 11, 22, 33)),
    (FacilitatorConfig, "", "port", "PAYWIRE_FACILITATOR_PORT", (4020, 11, 22, 33)),
    (FacilitatorConfig, "", "store", "PAYWIRE_STORE", (None, "sqlite:///t.db", "sqlite:///e.db", "sqlite:///c.db")),
], ids=["seller", "buyer", "facilitator", "facilitator-store"])
def test_code_beats_env_beats_toml_beats_defaults(tmp_path: Path, cls: Any, table: str, name: str, env_var: str,
                                                  values: tuple[Any, ...]):
    default, in_toml, in_env, in_code = values
    shown = f'"{in_toml}"' if isinstance(in_toml, str) else str(in_toml)
    path = toml_file(tmp_path, f"{table}{name} = {shown}\n")
    env = {env_var: str(in_env)}
    assert getattr(cls.load(env={}), name) == default
    assert getattr(cls.load(path, env={}), name) == in_toml
    assert getattr(cls.load(path, env=env), name) == in_env
    assert getattr(cls.load(path, env=env, **{name: in_code}), name) == in_code


def test_an_empty_environment_variable_is_unset(tmp_path: Path):
    path = toml_file(tmp_path, "[seller]\nlease = 5\n")
    assert SellerConfig.load(path, env={"PAYWIRE_SELLER_LEASE": ""}).lease == 5.0


def test_facilitator_flags_beat_env_beat_toml_and_none_flags_are_unset(tmp_path: Path):
    path = toml_file(tmp_path, 'port = 5000\nhost = "10.0.0.1"\n[networks."eip155:8453"]\nrpc = "https://b.example"\n')
    cfg = load_config(path, env={"PAYWIRE_FACILITATOR_PORT": "6000", "PAYWIRE_FACILITATOR_KEYS": "0x01"},
                      overrides={"port": 7000, "host": None})
    assert (cfg.port, cfg.host) == (7000, "10.0.0.1")
    assert cfg.networks == [NetworkConfig("eip155:8453", "https://b.example", ["0x01"])]


# ------------------------------------------------------------------------------------------------------------
# a bad value names the option (and where it came from)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("code", r"^seller option settle_timeout: must be > 0, got -1$"),
    ("toml", r"^seller option settle_timeout: must be > 0, got -1 \(from config file .*paywire.toml \[seller\]\)$"),
    ("env", r"^seller option settle_timeout: must be > 0, got '-1' \(from \$PAYWIRE_SELLER_SETTLE_TIMEOUT\)$"),
])
def test_a_bad_value_names_the_option_and_its_source(tmp_path: Path, source: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        if source == "code":
            SellerConfig(settle_timeout=-1)
        elif source == "toml":
            SellerConfig.load(toml_file(tmp_path, "[seller]\nsettle_timeout = -1\n"), env={})
        else:
            SellerConfig.load(env={"PAYWIRE_SELLER_SETTLE_TIMEOUT": "-1"})


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: SellerConfig(lease="soon"), "seller option lease: expected seconds or a duration"),
    (lambda: SellerConfig(check_supported="maybe"), "seller option check_supported: expected true or false"),
    (lambda: SellerConfig(max_record_bytes=1.5), "seller option max_record_bytes: expected an integer"),
    (lambda: SellerConfig(mpp_nonce_variants=["concat", "hex"]), "seller option mpp_nonce_variants: must be one of"),
    (lambda: SellerConfig(l402_reject_status=200), "seller option l402_reject_status: must be in 400..499"),
    (lambda: SellerConfig(facilitator="ftp://x"), "seller option facilitator: expected an http"),
    (lambda: SellerConfig(store=42), "seller option store: expected a store URL"),
    (lambda: BuyerConfig(nonce_variant="hex"), "buyer option nonce_variant: must be one of 'concat', 'json'"),
    (lambda: BuyerConfig(max_retries=-1), "buyer option max_retries: must be >= 0, got -1"),
    (lambda: FacilitatorConfig(port=70000), "facilitator option port: must be in 0..65535, got 70000"),
    (lambda: FacilitatorConfig.load(env={"PAYWIRE_FACILITATOR_PORT": "http"}),
     r"facilitator option port: expected an integer, got 'http' \(from \$PAYWIRE_FACILITATOR_PORT\)"),
    (lambda: FacilitatorConfig(confirmations=0), "facilitator option confirmations: must be >= 1"),
])
def test_each_kind_of_bad_value_is_refused_by_name(build: Any, expected: str):
    with pytest.raises(ConfigError, match=expected):
        build()


def test_a_bad_network_setting_in_the_facilitator_file_names_it(tmp_path: Path):
    path = toml_file(tmp_path, '[networks."eip155:1"]\nrpc = "https://x"\nkeys = ["0x01"]\ngas_limit = "lots"\n')
    with pytest.raises(ConfigError, match=r'facilitator option networks\."eip155:1"\.gas_limit: expected an integer'):
        load_config(path, env={})


def test_secrets_are_not_shown_in_errors_or_reprs():
    with pytest.raises(ConfigError) as err:
        SellerConfig(mpp_secret=12345)
    assert "12345" not in str(err.value) and "mpp_secret" in str(err.value)
    assert "s3cret" not in repr(SellerConfig(facilitator_token="s3cret", mpp_secret=b"s3cret" * 8))
    assert "s3cret" not in repr(FacilitatorConfig(bearer_token="s3cret"))


def test_a_mutated_facilitator_config_is_checked_again_by_validate():
    cfg = FacilitatorConfig(devnet=True)
    cfg.receipt_timeout = 0
    with pytest.raises(ConfigError, match="facilitator option receipt_timeout: must be > 0"):
        cfg.validate()


# ------------------------------------------------------------------------------------------------------------
# unknown names are refused, with the closest known one
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "expected"), [
    (lambda tmp: SellerConfig().replace(settle_timout=5),
     r"unknown seller option settle_timout \(did you mean settle_timeout\?\)"),
    (lambda tmp: SellerConfig.load(toml_file(tmp, "[seller]\npayto = '0x01'\n"), env={}),
     r"unknown config keys: payto \(did you mean pay_to\?\)"),
    (lambda tmp: SellerConfig.load(env={"PAYWIRE_SELLER_LAESE": "5"}),
     r"unknown environment variable PAYWIRE_SELLER_LAESE \(did you mean PAYWIRE_SELLER_LEASE\?\)"),
    (lambda tmp: BuyerConfig.load(max_retry=3), r"unknown buyer option max_retry \(did you mean max_retries\?\)"),
    (lambda tmp: load_config(toml_file(tmp, "recieve_timeout = 3\n"), env={}),
     r"unknown config keys: recieve_timeout \(did you mean receipt_timeout\?\)"),
    (lambda tmp: load_config(None, env={}, overrides={"prot": 1}),
     r"unknown facilitator option prot \(did you mean port\?\)"),
    (lambda tmp: SellerConfig().replace(zzz=1), r"unknown seller option zzz$"),
])
def test_an_unknown_option_is_refused_with_a_suggestion(tmp_path: Path, build: Any, expected: str):
    with pytest.raises(ConfigError, match=expected):
        build(tmp_path)


def test_the_facilitators_own_environment_variables_are_not_unknown():
    env = {"PAYWIRE_FACILITATOR_NETWORKS": "eip155:1=https://eth.example", "PAYWIRE_FACILITATOR_KEY": "0x0a",
           "PAYWIRE_FACILITATOR_CONFIG": ""}
    assert [(n.network, n.keys) for n in load_config(None, env=env).networks] == [("eip155:1", ["0x0a"])]


def test_a_seller_file_needs_its_table(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"has no \[seller\] table"):
        SellerConfig.load(toml_file(tmp_path, "[buyer]\nmax_retries = 1\n"), env={})


# ------------------------------------------------------------------------------------------------------------
# the adapters take the config, or its options as keywords
# ------------------------------------------------------------------------------------------------------------


def _flow_view(mw: Any) -> tuple[Any, ...]:
    f = mw.flow
    return (f.seller.pay_to, f.seller.network, f.seller.cors_origin, f.settle_timeout, f.lease, f.replay_wait,
            f.max_record_bytes, f.check_supported, f.store, f.facilitator.url, f.owns_facilitator)


def test_middleware_config_and_keywords_build_the_same_flow():
    routes = [PaidRoute("GET /a", price="$0.01")]
    options = {"pay_to": PAY_TO, "network": NET, "cors_origin": None, "settle_timeout": 5, "lease": "1m",
               "replay_wait": 0, "max_record_bytes": 1024, "check_supported": False, "store": "sqlite:///s.db"}
    by_keywords = PaymentMiddleware(Starlette(), routes, FAC, **options)  # type: ignore[arg-type]
    by_config = PaymentMiddleware(Starlette(), routes, config=SellerConfig(facilitator=FAC, **options))
    wsgi = WsgiPaymentMiddleware(lambda e, s: [b""], routes, config=SellerConfig(facilitator=FAC, **options))
    expected = (PAY_TO, NET, None, 5.0, 60.0, 0.0, 1024, False, "sqlite:///s.db", FAC, True)
    assert _flow_view(by_keywords) == expected
    assert _flow_view(by_config) == expected
    assert _flow_view(wsgi) == expected
    mixed = PaymentMiddleware(Starlette(), routes, config=SellerConfig(facilitator=FAC, **options), lease=7)
    assert mixed.flow.lease == 7.0, "keywords win over the config"


def test_middleware_keywords_are_checked_at_construction():
    with pytest.raises(UnknownOption, match=r"unknown seller option setle_timeout \(did you mean settle_timeout\?\)"):
        PaymentMiddleware(Starlette(), lambda: [], FAC, setle_timeout=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # an unknown keyword is still a TypeError, as Python's own
        WsgiPaymentMiddleware(lambda e, s: [b""], [], FAC, nope=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="seller option lease: must be > 0, got 0"):
        PaymentMiddleware(Starlette(), lambda: [], FAC, lease=0)


def test_the_facilitator_token_goes_to_a_url_facilitator():
    mw = PaymentMiddleware(Starlette(), [PaidRoute("GET /a", price="$0.01")], FAC, pay_to=PAY_TO, network=NET,
                           facilitator_token="tok")
    headers = mw.flow.facilitator._http.headers  # type: ignore[attr-defined]
    assert headers["Authorization"] == "Bearer tok", f"the token was not sent: {headers}"


def test_seller_options_keywords_match_the_config():
    keywords = set(typing.get_type_hints(SellerOptions, localns={"AssetRegistry": Any, "PaymentStore": Any,
                                                                 "LightningBackend": Any}))
    assert keywords == set(SellerConfig.options()) - {"facilitator"}


async def test_client_factories_take_a_buyer_config(tmp_path: Path):
    cfg = BuyerConfig(store=f"sqlite:///{tmp_path / 'b.db'}", max_retries=5, retry_delay=0, timeout=7,
                      nonce_variant="json", account=PAY_TO)
    async with x402_client([], config=cfg) as client:
        buyer = client._transport.buyer  # type: ignore[attr-defined]
        assert (buyer.max_retries, buyer.retry_delay, buyer.nonce_variant, buyer._store) == (
            5, 0.0, "json", cfg.store)
        assert client.timeout.read == 7.0
    async with x402_client([], config=cfg, max_retries=1, store=None, timeout=3) as client:
        buyer = client._transport.buyer  # type: ignore[attr-defined]
        assert (buyer.max_retries, buyer._store, client.timeout.read) == (1, None, 3.0), "keywords win"


def test_buyer_options_keywords_match_the_config():
    keywords = set(typing.get_type_hints(BuyerOptions, localns={"Approver": Any, "Asset": Any,
                                                                "BuyerProtocol": Any}))
    assert keywords == set(BuyerConfig.options()) - {"timeout"}


def test_buyer_and_its_adapters_take_a_config_and_keywords():
    """``Buyer``, the httpx transports and the requests adapter: ``config=`` plus keywords, which win; the
    defaults are those of a bare ``Buyer``."""
    import requests

    from paywire.client.requests_adapter import PaymentAdapter, x402_session

    plain = Buyer([])
    assert (plain.max_retries, plain.retry_delay, plain.nonce_variant, plain._store, plain.approve,
            plain.send_accept_payment, plain._reconcile_every, [p.name for p in plain.protocols]) == (
        2, 0.2, "concat", None, None, True, 30.0, ["x402", "mpp", "l402"])
    cfg = BuyerConfig(max_retries=5, retry_delay=1, nonce_variant="json", account=PAY_TO, timeout=9)
    policy = Policy(max_per_payment="$1")
    made = [
        Buyer([], policy, config=cfg, max_retries=1),
        PaymentTransport([], policy=policy, config=cfg, max_retries=1).buyer,
        SyncPaymentTransport([], policy=policy, config=cfg, max_retries=1).buyer,
        PaymentAdapter([], policy=policy, config=cfg, max_retries=1).buyer,
        x402_session([], policy, config=cfg, max_retries=1).get_adapter("http://x").buyer,  # type: ignore[attr-defined]
    ]
    for b in made:
        assert (b.max_retries, b.retry_delay, b.nonce_variant, b.account, b.policy) == (1, 1.0, "json", PAY_TO,
                                                                                       policy), "keywords win"
    assert cfg.buyer([], policy).max_retries == 5
    assert PaymentTransport([]).close_buyer and not PaymentTransport(plain).close_buyer
    assert isinstance(x402_session(plain), requests.Session)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Buyer([], max_retry=3), r"Buyer\(\): unknown buyer option max_retry \(did you mean max_retries\?\)"),
    (lambda: Buyer([], timeout=3), r"unknown buyer option timeout \(timeout is the HTTP client's"),
    (lambda: PaymentTransport([], stor="x"), r"PaymentTransport\(\): unknown buyer option stor \(did you mean store"),
    (lambda: SyncPaymentTransport([], nonce="json"), r"SyncPaymentTransport\(\): unknown buyer option nonce"),
    (lambda: Buyer([], nonce_variant="hex"), "buyer option nonce_variant: must be one of 'concat', 'json'"),
    (lambda: Buyer([], retry_delay=-1), "buyer option retry_delay: must be >= 0, got -1"),
])
def test_buyer_options_are_checked(make, message):
    with pytest.raises(ConfigError, match=message) as ei:
        make()
    if "unknown" in message:
        assert isinstance(ei.value, UnknownOption) and isinstance(ei.value, TypeError)


def test_a_ready_buyer_takes_no_more_options():
    from paywire.client.requests_adapter import PaymentAdapter, x402_session

    b = Buyer([])
    for make in (lambda: PaymentTransport(b, store="sqlite:///x.db"), lambda: SyncPaymentTransport(b, policy=Policy()),
                 lambda: PaymentAdapter(b, config=BuyerConfig()), lambda: x402_session(b, Policy())):
        with pytest.raises(ConfigError, match="got a ready Buyer and"):
            make()


def test_durations():
    assert [parse_duration(t) for t in ("30", "1.5", "500ms", "30s", "5m", "2h", "1d")] == [
        30.0, 1.5, 0.5, 30.0, 300.0, 7200.0, 86400.0]
    assert dataclasses.replace(SellerConfig(), lease="250ms").lease == 0.25
