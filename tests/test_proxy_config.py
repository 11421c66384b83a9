"""``paywire proxy``'s configuration: unsafe setups are refused at startup, naming the option; the identity
headers' signature is bound to the request. (End-to-end behaviour: tests/test_proxy.py.)"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from paywire.errors import ConfigError
from paywire.proxy.config import load_proxy
from paywire.proxy.identity import identity_headers, verify_identity
from paywire.server.flow import PaymentInfo

ROOT = Path(__file__).resolve().parent.parent
SECRET = "proxy-test-identity-secret-0123456789abcdef"


def _minimal(tmp_path: Path, proxy: str, seller: str = 'facilitator = "http://127.0.0.1:4020"\npay_to = "0x'
             + "11" * 20 + '"\nnetwork = "eip155:8453"\n') -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'[proxy]\n{proxy}\n[[proxy.routes]]\npath = "GET /x"\nprice = "$0.01"\n[seller]\n{seller}')
    return path


def test_startup_refuses_a_missing_identity_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="identity_secret"):
        load_proxy(_minimal(tmp_path, 'upstream = "http://127.0.0.1:9"'), env={})


def test_startup_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    cfg = f'upstream = "http://api.example.com"\nidentity_secret = "{SECRET}"'
    with pytest.raises(ConfigError, match="allow_plain_http"):
        load_proxy(_minimal(tmp_path, cfg), env={})
    assert load_proxy(_minimal(tmp_path, cfg + "\nallow_plain_http = true"), env={}).proxy.allow_plain_http, \
        "the explicit waiver must be accepted"


def test_startup_refuses_a_short_secret_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="32"):
        load_proxy(_minimal(tmp_path, 'upstream = "http://127.0.0.1:9"\nidentity_secret = "short"'), env={})
    with pytest.raises(ConfigError, match="did you mean upstream"):
        load_proxy(_minimal(tmp_path, 'upstrem = "http://127.0.0.1:9"'), env={})


def test_identity_signature_is_bound_to_the_request() -> None:
    """A signed identity replayed on another path (or with a changed payer) does not verify."""
    info = PaymentInfo(1, "GET /x", "0xabc", 10, 6, "0xtoken", "eip155:8453", "0xpay", "exact", 2, None)
    headers = dict(identity_headers(info, SECRET.encode(), "GET", "/x"))
    assert verify_identity(headers, SECRET.encode(), method="GET", target="/x") is not None, "must verify"
    assert verify_identity(headers, SECRET.encode(), method="GET", target="/y") is None, "other path must fail"
    forged = {**headers, "paywire-payer": "0xevil"}
    assert verify_identity(forged, SECRET.encode(), method="GET", target="/x") is None, "forged payer must fail"


def test_config_check_exits_2_naming_the_problem(tmp_path: Path) -> None:
    import subprocess

    path = _minimal(tmp_path, 'upstream = "http://127.0.0.1:9"')
    r = subprocess.run([sys.executable, "-c", "from paywire.cli.main import main; main()", "proxy", "--config",
                        str(path), "--check"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2, r.stderr
    assert "identity_secret" in r.stderr, "the error must name the option to set"
    assert "Traceback" not in r.stderr, "a config error must not print a traceback"


def test_route_discovery_from_the_file_and_its_unknown_keys(tmp_path: Path) -> None:
    """``discovery = {...}`` on a route publishes it (x402 bazaar); an unknown key is refused, naming the keys."""
    from paywire.proxy.config import parse_routes

    (route,) = parse_routes([{"path": "GET /items/{id}", "price": "$0.01",
                              "discovery": {"query_params": {"full": "1"}, "output": {"id": 1}}}])
    from paywire.x402.bazaar import route_discovery

    ext = route_discovery(route)
    assert ext["info"]["input"]["queryParams"] == {"full": "1"}, "the file's examples must reach the 402"
    assert ext["routeTemplate"] == "/items/:id", "a parameterised path must name its template"
    with pytest.raises(ConfigError, match="discovery takes"):
        parse_routes([{"path": "GET /x", "price": "$0.01", "discovery": {"querry": {}}}])


def test_malformed_bazaar_declarations_are_not_listed() -> None:
    from paywire.x402.bazaar import check_discovery, http_discovery

    assert check_discovery(http_discovery("POST", body={"q": 1})) is None, "our own declaration must pass"
    assert check_discovery({"info": {"input": {"type": "http", "method": "POST"}}, "schema": {}}) is not None, \
        "a body method without bodyType/body must be refused"
    assert check_discovery({"info": {"input": {"type": "ftp"}}, "schema": {}}) is not None, "unknown type refused"
    assert check_discovery("nope") is not None, "a non-object must be refused"


def test_forwarded_headers_drop_credentials_and_client_set_proxy_headers() -> None:
    """What the upstream receives: no payment credential, no client-made Paywire-* or X-Forwarded-Proto/Host,
    nothing the client's Connection header lists; the upstream's own Authorization schemes pass."""
    from paywire.proxy.forward import request_headers

    def names(auth: bytes) -> dict[bytes, bytes]:
        scope = {"headers": [(b"host", b"shop.example"), (b"authorization", auth), (b"payment-signature", b"x"),
                             (b"X-Payment", b"y"), (b"Paywire-Payer", b"0xforged"), (b"x-forwarded-proto", b"https"),
                             (b"connection", b"keep-alive, x-secret"), (b"x-secret", b"s"), (b"accept", b"*/*")],
                 "client": ("10.0.0.1", 5), "scheme": "http"}
        pairs = request_headers(scope, "127.0.0.1:8000", preserve_host=False)
        assert len(pairs) == len({k for k, _ in pairs}), f"a header must not appear twice: {pairs}"
        return dict(pairs)

    out = names(b"Payment id=abc")
    assert b"authorization" not in out, "Authorization: Payment must be stripped"
    assert not {b"payment-signature", b"x-payment", b"paywire-payer", b"x-secret"} & set(out), sorted(out)
    assert out[b"x-forwarded-proto"] == b"http", "X-Forwarded-Proto must be the proxy's, not the client's"
    assert out[b"host"] == b"127.0.0.1:8000" and out[b"x-forwarded-host"] == b"shop.example", out
    assert out[b"x-forwarded-for"] == b"10.0.0.1", out
    assert names(b"L402 mac:pre").get(b"authorization") is None, "Authorization: L402 must be stripped"
    assert names(b"Bearer upstream-key")[b"authorization"] == b"Bearer upstream-key", "other schemes must pass"


def test_upstream_redirects_stay_on_the_proxy() -> None:
    """A ``Location`` on the upstream's own origin becomes a path (the client must not be sent around the proxy);
    another site's stays; hop-by-hop and payment headers from the upstream are dropped."""
    from paywire.proxy.forward import response_headers

    def location(value: bytes) -> bytes:
        out = dict(response_headers([(b"Location", value), (b"Transfer-Encoding", b"chunked"),
                                     (b"PAYMENT-RESPONSE", b"x")], "http://127.0.0.1:8000"))
        assert set(out) == {b"location"}, f"only Location may pass here: {out}"
        return out[b"location"]

    assert location(b"http://127.0.0.1:8000/next?a=1") == b"/next?a=1", "own-origin redirects become paths"
    assert location(b"http://127.0.0.1:8000") == b"/", "the bare origin becomes /"
    assert location(b"http://127.0.0.1:80001/x") == b"http://127.0.0.1:80001/x", "another port is another site"
    assert location(b"https://elsewhere.example/x") == b"https://elsewhere.example/x", "other sites stay"


def test_lightning_node_table(tmp_path: Path) -> None:
    """[proxy.lightning]: LNbits with a key file, lnd with a binary macaroon file (read as hex); a remote plain-http
    node (its key in clear text), unknown keys and a missing key are refused; so is a short metrics token."""
    base = f'upstream = "http://127.0.0.1:9"\nidentity_secret = "{SECRET}"'
    (tmp_path / "inv.key").write_text("abc123\n")
    (tmp_path / "invoice.macaroon").write_bytes(b"\x02\x01\xff\x00mac")
    lnbits = load_proxy(_minimal(tmp_path, base + '\n[proxy.lightning]\nbackend = "lnbits"\n'
                                 'url = "http://127.0.0.1:5000"\ninvoice_key_file = "inv.key"'), env={})
    assert lnbits.lightning is not None and (lnbits.lightning.backend, lnbits.lightning.key) == ("lnbits", "abc123")
    lnd = load_proxy(_minimal(tmp_path, base + '\n[proxy.lightning]\nbackend = "lnd"\nurl = "https://127.0.0.1:8080"'
                              '\nmacaroon_file = "invoice.macaroon"'), env={})
    assert lnd.lightning is not None and lnd.lightning.key == "0201ff006d6163", "binary macaroon not read as hex"
    for node, kind in ((lnbits.lightning, "LnbitsBackend"), (lnd.lightning, "LndRestBackend")):
        backend = node.connect()
        assert type(backend).__name__ == kind, type(backend)
        asyncio.run(backend.aclose())
    for table, reason in (('backend = "lnbits"\nurl = "http://node.example.com"\ninvoice_key = "k"', "plain http"),
                          ('backend = "lnbits"\nurl = "http://127.0.0.1:5000"\ninvoce_key = "k"', "invoice_key"),
                          ('backend = "lnd"\nurl = "https://127.0.0.1:8080"', "macaroon"),
                          ('backend = "eclair"\nurl = "https://127.0.0.1:8080"', "backend")):
        with pytest.raises(ConfigError, match=reason):
            load_proxy(_minimal(tmp_path, base + "\n[proxy.lightning]\n" + table), env={})
    with pytest.raises(ConfigError, match="metrics_token"):
        load_proxy(_minimal(tmp_path, base + '\nmetrics_token = "short"'), env={})


def test_dynamic_prices_are_checked() -> None:
    """What a pricing endpoint or an upstream ``price_header`` may state: atomic units or money, positive."""
    from paywire.proxy.config import parse_price

    assert [parse_price(x) for x in ("30000", " $0.03 ", "0.5")] == ["30000", "$0.03", "0.5"]
    assert [parse_price(x) for x in ("", "0", "$0", "-1", "abc", "1e400000", "$-0.01", "9" * 41)] == [None] * 8


def test_one_price_source_per_route(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    for extra, reason in (('price = "$0.01"\nprice_header = "X-Price"', "one of"),
                          ('price_header = "X Price"', "header name"),
                          ('price_header = "Paywire-Price"', "header name")):
        path.write_text(f'[proxy]\nupstream = "http://127.0.0.1:9"\nidentity_secret = "{SECRET}"\n'
                        f'[[proxy.routes]]\npath = "GET /x"\n{extra}\n[seller]\nfacilitator = "http://127.0.0.1:1"\n'
                        f'pay_to = "0x{"11" * 20}"\nnetwork = "eip155:8453"\n')
        with pytest.raises(ConfigError, match=reason):
            load_proxy(path, env={})
