"""``paywire pay`` (curl for paid URLs) and ``paywire wallet new|show|balance|history``.

Exit codes of ``paywire pay``: 0 done (HTTP < 400); 1 other error or HTTP ≥ 400; 3 refused by the policy or
not approved; 4 the server refused the payment (402 after paying); 5 outcome unknown (budget kept spent).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()

EXIT_REFUSED = 3
EXIT_REJECTED = 4
EXIT_UNKNOWN = 5
DEFAULT_KEYSTORE = Path.home() / ".paywire" / "keystore.json"

wallet_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="The buyer's wallet: create a key, show it, read balances, list receipts.")


def register(app: typer.Typer) -> None:
    """Add ``pay`` and ``wallet`` to the ``paywire`` app."""
    app.command()(pay)
    app.add_typer(wallet_app, name="wallet")


# ------------------------------------------------------------------------------------------------ helpers


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _store(store: str) -> str:
    """--store, else $PAYWIRE_BUYER_STORE, else $PAYWIRE_STORE, else ~/.paywire/paywire.db (the user's)."""
    from paywire.client import default_store

    return store or os.environ.get("PAYWIRE_BUYER_STORE") or default_store()


def _say_store(url: str, quiet: bool = False) -> None:
    from paywire.cli.output import store_label

    if not quiet:
        err.print(f"store: {store_label(url)}", highlight=False, soft_wrap=True)


def _profile(explicit: str) -> Any:
    """The profile this command uses (``--profile``, ``$PAYWIRE_PROFILE``, else the devnet's when no wallet is
    configured), or None."""
    from paywire.cli.profile import find_profile
    from paywire.errors import ConfigError

    try:
        return find_profile(explicit)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _say_profile(prof: Any, quiet: bool = False) -> None:
    if prof is not None and not quiet:
        payer = f"payer {prof.payer} " if prof.payer else ""
        err.print(f"profile: {prof.path} ({prof.name}: {payer}on {prof.network})", highlight=False, soft_wrap=True)


def _split_asset(spec: str) -> tuple[str, str, int | None]:
    """``ADDRESS`` or ``NETWORK/ADDRESS[:DECIMALS]`` → (network or "", address, decimals or None)."""
    network, _, rest = spec.rpartition("/")
    address, _, decimals = rest.partition(":")
    if not address.startswith("0x") or len(address) != 42:
        raise _fail(f"--asset {spec!r}: write a token ADDRESS (0x…, 40 hex digits) or NETWORK/ADDRESS[:DECIMALS]")
    try:
        return network, address, int(decimals) if decimals else None
    except ValueError:
        raise _fail(f"--asset {spec!r}: decimals must be a whole number") from None


async def _read_assets(specs: list[str], wallet: Any, rpc: str) -> list[Any]:
    """The ``--asset`` tokens, each with its EIP-712 domain read from the chain (ERC-5267 ``eip712Domain()``,
    else ``name()``/``version()``) when a node is known; without one, ``NETWORK/ADDRESS`` is only valued."""
    import dataclasses

    from paywire.chain.token_domain import read_asset, read_asset_at
    from paywire.errors import ChainError, ConfigError
    from paywire.evm.assets import Asset

    out: list[Any] = []
    for spec in specs:
        network, address, decimals = _split_asset(spec)
        try:
            if network:
                chain = await wallet.chain_for(network)
                asset = (await read_asset(chain, address, network=network) if chain is not None
                         else Asset(network, address, "", "", decimals or 6))
            elif rpc and "=" not in rpc:
                asset = await read_asset_at(rpc, address)
            else:
                raise _fail(f"--asset {address}: give NETWORK/{address}, or --rpc URL of the token's chain so "
                            "paywire can read it")
        except (ConfigError, ChainError, OSError) as exc:
            raise _fail(f"--asset {spec}: {exc}") from None
        out.append(dataclasses.replace(asset, decimals=decimals) if decimals is not None else asset)
    return out


def _load_policy(path: str, assets: list[Any], prof: Any = None) -> tuple[Any, Any]:
    """(policy, the user's approval threshold in micro-dollars or None). The policy file wins over a profile's."""
    from paywire.client.policy import Policy
    from paywire.errors import ConfigError
    from paywire.evm.assets import Asset

    data: dict[str, Any] = {}
    file = path or os.environ.get("PAYWIRE_POLICY", "")
    if file:
        p = Path(file).expanduser()
        try:
            text = p.read_text()
        except OSError as exc:
            raise _fail(f"cannot read the policy file {p}: {exc}") from None
        try:
            if p.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise _fail(f"{p} is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}") from None
    elif prof is not None:
        data = dict(prof.policy)
    extra = list(assets)
    for a in [*(data.pop("assets", []) or []), *(prof.assets if prof is not None else ())]:
        if not isinstance(a, dict) or "network" not in a or "address" not in a:
            raise _fail("policy 'assets' entries need network and address")
        extra.append(Asset(a["network"], a["address"], a.get("name", ""), a.get("version", ""),
                           int(a.get("decimals", 6))))
    try:
        policy = Policy.from_mapping(data, assets=extra)
    except (ConfigError, TypeError) as exc:
        raise _fail(f"bad policy: {exc}") from None
    return policy, policy.limit("approval_threshold")


NO_WALLET = ("no wallet configured: set PAYWIRE_WALLET_KEY (hex key) or PAYWIRE_KEYSTORE (keystore file; create "
             "one with `paywire wallet new`), or start `paywire devnet`, which leaves a profile this command uses")


def _wallet(rpc: str = "", prof: Any = None) -> Any:
    from paywire.errors import ConfigError
    from paywire.wallet import Wallet, parse_rpc

    try:
        kw: dict[str, Any] = {"rpc": parse_rpc(rpc)} if rpc else {}
        if prof is not None:
            return Wallet.from_key(prof.key(), **kw)
        if not _wallet_in_env():
            raise _fail(NO_WALLET)
        return Wallet.from_env(**kw)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _wallet_in_env() -> bool:
    from paywire.cli.profile import wallet_configured

    return wallet_configured()


def _address_from_env() -> tuple[str, str] | None:
    """(address, where it came from) without decrypting anything."""
    from paywire.evm.signer import LocalSigner
    from paywire.wallet import KEY_ENV, KEYSTORE_ENV, keystore_address

    key = os.environ.get(KEY_ENV)
    if key:
        try:
            return LocalSigner(key.strip()).address, f"${KEY_ENV}"
        except ValueError:
            raise _fail(f"${KEY_ENV} is not a 32-byte hex key") from None
    path = os.environ.get(KEYSTORE_ENV)
    if path:
        from paywire.errors import ConfigError

        try:
            addr = keystore_address(path)
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        if addr:
            return addr, f"keystore {path}"
    return None


def _identity(prof: Any) -> tuple[str, str] | None:
    """(address, where it came from): the profile's payer when a profile is used, else the environment's."""
    if prof is not None:
        return prof.payer, f"profile {prof.path} (key file {prof.key_file})"
    return _address_from_env()


CLI_WORDS = {"(add it to Policy(assets=...))": "(value it with --asset NETWORK/ADDRESS, or an 'assets' entry in "
                                               "the --policy file)"}
"""Python-API advice in a core message → the command-line way to do the same."""


def _cli_words(message: str) -> str:
    for api, cli in CLI_WORDS.items():
        message = message.replace(api, cli)
    return message


def _usd(micros: int | None) -> str:
    from paywire.client.policy import fmt_usd

    return fmt_usd(micros) if micros else "-"


def _receipt_table(r: Any) -> Table:
    t = Table(title="paywire receipt", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    rows = [("url", f"{r.method} {r.url}"), ("outcome", r.outcome), ("protocol", getattr(r, "protocol", "") or "-"),
            ("price", _usd(r.usd_micros)),
            ("amount", f"{r.amount} atomic" if r.amount is not None else "-"), ("asset", r.asset or "-"),
            ("network", r.network or "-"), ("pay to", r.pay_to or "-"), ("tx", r.tx or "-"),
            ("x402", f"v{r.x402_version}" if r.x402_version else "-"), ("payment id", r.payment_id or "-"),
            ("reason", r.reason or "-")]
    for k, v in rows:
        t.add_row(k, str(v))
    return t


# ------------------------------------------------------------------------------------------------ pay


def pay(
    url: Annotated[str, typer.Argument(help="The URL to fetch (and pay for, if it answers 402).")],
    method: Annotated[str, typer.Option("-X", "--request", help="HTTP method.")] = "",
    header: Annotated[list[str] | None, typer.Option("-H", "--header", help="'Name: value' (repeatable).")]
    = None,
    data: Annotated[str | None, typer.Option("-d", "--data", help="Request body ('@file' reads a file).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the body to this file.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Pay without asking (the policy still applies).")]
    = False,
    max_price: Annotated[str, typer.Option("--max", help="Pay up to this price without asking and refuse "
                                                         "more, e.g. '$0.10'.")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be paid; sign nothing.")] = False,
    policy_file: Annotated[str, typer.Option("--policy", help="Policy file (JSON or TOML; or $PAYWIRE_POLICY).")]
    = "",
    asset: Annotated[list[str] | None, typer.Option("--asset", help="Also value this token at $1: ADDRESS "
                                                                    "(read from the chain of --rpc) or "
                                                                    "NETWORK/ADDRESS[:DECIMALS] (repeatable).")]
    = None,
    store: Annotated[str, typer.Option(help="Receipts/budgets store URL (env PAYWIRE_BUYER_STORE or "
                                            "PAYWIRE_STORE; default ~/.paywire/paywire.db).")] = "",
    rpc: Annotated[str, typer.Option(envvar="PAYWIRE_RPC", help="Node URL for balance checks and token "
                                                                "domains.")] = "",
    profile: Annotated[str, typer.Option("--profile", help="Profile file (default: $PAYWIRE_PROFILE, else the "
                                                           "one `paywire devnet` leaves when no wallet is set).")]
    = "",
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No receipt on stderr.")] = False,
    pick: Annotated[int, typer.Option("--pick", help="URL is a facilitator: pay for the Nth resource it lists "
                                                     "(numbered as `paywire discover URL` shows them).")] = 0,
) -> None:
    """Fetch a URL like curl and pay its 402 from your wallet: shows the price, asks unless --yes or within
    policy, prints the receipt.

    The wallet comes from $PAYWIRE_WALLET_KEY or $PAYWIRE_KEYSTORE, else from a profile (`paywire devnet` leaves
    one); the body goes to stdout (or -o), the price and the receipt to stderr. Exit codes: 3 refused/not
    approved, 4 payment refused by the server, 5 outcome unknown."""
    from paywire.client.policy import MAX_PER_PAYMENT, to_micros
    from paywire.errors import ConfigError

    if pick:  # a resource from a facilitator's discovery listing
        from paywire.cli.discover import pick as pick_listed

        try:
            listed_method, url = pick_listed(url, pick)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        method = method or listed_method
    prof = _profile(profile)
    _say_profile(prof, quiet)
    node = rpc or (prof.rpc if prof is not None else "")
    wallet = _wallet(node, prof)
    _load_policy(policy_file, [], prof)  # a bad policy file fails before any chain is read
    cap: int | None = None
    if max_price:
        try:
            cap = to_micros(max_price)
        except ConfigError as exc:
            raise _fail(f"--max: {exc}") from None
    user_threshold: int | None = None

    async def build_policy() -> Any:
        nonlocal user_threshold
        tokens = await _read_assets(list(asset or []), wallet, node) if asset else []
        policy, user_threshold = _load_policy(policy_file, tokens, prof)
        if cap is not None:
            current = policy.limit(MAX_PER_PAYMENT)
            micros = min(cap, current) if current is not None else cap
            policy = policy.with_changes(max_per_payment=Decimal(micros) / 1_000_000)
        return policy.with_changes(approval_threshold="0", dry_run=dry_run or policy.dry_run)
    body = _read_data(data)
    headers = _headers(header or [])
    verb = (method or ("POST" if body is not None else "GET")).upper()
    interactive = sys.stdin is not None and sys.stdin.isatty()

    def approve(req: Any) -> bool:
        usd = req.quote.usd_micros
        price = _usd(usd) if usd is not None else f"{req.quote.amount} atomic"
        err.print(f"[bold]402 Payment Required[/]: {price} to {req.quote.payee} on {req.quote.network} "
                  f"(asset {req.quote.asset})", highlight=False)
        if yes:
            return True
        if user_threshold is not None and usd is not None and usd <= user_threshold:
            err.print(f"within {'the profile' if prof is not None and not policy_file else 'policy'}'s budget "
                      f"(approval_threshold {_usd(user_threshold)}): paying", highlight=False)
            return True
        if cap is not None and usd is not None and usd <= cap:
            err.print(f"within --max {_usd(cap)}: paying", highlight=False)
            return True
        if not interactive:
            hint = f"--max '{price}'" if usd is not None else "--max PRICE"
            err.print(f"[red]not paying:[/] this payment ({price}) needs approval and there is no terminal to ask: "
                      f"rerun with --yes, or with {hint} to pay up to that price without asking", highlight=False)
            return False
        answer = typer.confirm(f"Pay {price} for {verb} {url}?", default=False, err=True)
        return bool(answer)

    where = _store(store)
    _say_store(where, quiet)

    async def run() -> int:
        try:
            policy = await build_policy()
        except BaseException:
            await wallet.aclose()
            raise
        return await _pay(url, verb, headers, body, output, policy, wallet, approve, where, timeout, quiet)

    raise typer.Exit(asyncio.run(run()))


def _read_data(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        try:
            return Path(data[1:]).expanduser().read_bytes()
        except OSError as exc:
            raise _fail(f"cannot read {data[1:]}: {exc}") from None
    return data.encode()


def _headers(items: list[str]) -> dict[str, str]:
    out_: dict[str, str] = {}
    for h in items:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise _fail(f"bad header {h!r}: write 'Name: value'")
        out_[name.strip()] = value.strip()
    return out_


async def _pay(url: str, method: str, headers: dict[str, str], body: bytes | None, output: Path | None,
               policy: Any, wallet: Any, approve: Any, store: str, timeout: float, quiet: bool) -> int:
    from paywire.client import (
        Buyer,
        DryRunPayment,
        PaymentDeclined,
        PaymentError,
        PaymentOutcomeUnknown,
        PaymentRefused,
        PaymentRejected,
        receipt_of,
        settlement_of,
        x402_client,
    )
    from paywire.errors import ConfigError

    try:
        buyer = Buyer(wallet, policy, store=store, approve=approve)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    import httpx

    try:
        async with x402_client(buyer, timeout=timeout) as client:
            try:
                r = await client.request(method, url, headers=headers, content=body)
            except DryRunPayment as exc:
                err.print(f"[yellow]{exc}[/]", highlight=False)
                return 0
            except (PaymentRefused, PaymentDeclined) as exc:
                err.print(f"[red]refused:[/] {_cli_words(str(exc))}", highlight=False)
                return EXIT_REFUSED
            except PaymentRejected as exc:
                _show(exc.receipt, quiet)
                err.print(f"[red]the server refused the payment:[/] {exc.reason}", highlight=False)
                return EXIT_REJECTED
            except PaymentOutcomeUnknown as exc:
                _show(exc.receipt, quiet)
                err.print(f"[yellow]outcome unknown:[/] {exc}", highlight=False)
                return EXIT_UNKNOWN
            except PaymentError as exc:
                err.print(f"[red]payment failed:[/] {exc}", highlight=False)
                return 1
            except httpx.HTTPError as exc:
                err.print(f"[red]request failed:[/] {type(exc).__name__}: {exc}", highlight=False)
                return 1
    finally:
        await buyer.aclose()
        await wallet.aclose()
    if output is not None:
        output.write_bytes(r.content)
    else:
        sys.stdout.buffer.write(r.content)
        sys.stdout.buffer.flush()
    receipt = receipt_of(r)
    if receipt is not None:
        _show(receipt, quiet)
        s = settlement_of(r)
        if s is not None and not quiet:
            err.print(f"settled: {s.success} tx {s.transaction or '-'} on {s.network or '-'}", highlight=False)
    if r.status_code >= 400:
        err.print(f"[red]HTTP {r.status_code}[/]", highlight=False)
        return 1
    return 0


def _show(receipt: Any, quiet: bool) -> None:
    if receipt is not None and not quiet:
        err.print(_receipt_table(receipt))


# ------------------------------------------------------------------------------------------------ wallet


@wallet_app.command("new")
def wallet_new(
    keystore: Annotated[Path, typer.Option(help="Where to write the encrypted keystore file.")] = DEFAULT_KEYSTORE,
    print_key: Annotated[bool, typer.Option("--print-key", help="Print the raw private key instead (unsafe; "
                                                                  "for development).")] = False,
    kdf: Annotated[str, typer.Option(help="Key derivation: scrypt (geth default) or pbkdf2.")] = "scrypt",
) -> None:
    """Create a new key and store it encrypted (standard Ethereum keystore JSON)."""
    from paywire.errors import ConfigError
    from paywire.evm.signer import LocalSigner
    from paywire.wallet import write_keystore
    from paywire.wallet.keystore import PASSWORD_ENV

    signer = LocalSigner.generate()
    if print_key:
        out.print(f"address     {signer.address}")
        out.print(f"private key 0x{signer.private_key.hex()}")
        err.print("export PAYWIRE_WALLET_KEY=0x… to use it; keep it secret", highlight=False)
        return
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not (sys.stdin is not None and sys.stdin.isatty()):
            raise _fail(f"set {PASSWORD_ENV} (no terminal to ask for a password)")
        password = typer.prompt("new keystore password", hide_input=True, confirmation_prompt=True, err=True)
    if not password:
        raise _fail("refusing an empty keystore password")
    try:
        path = write_keystore(keystore, signer.private_key, password, kdf=kdf)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    out.print(f"address  {signer.address}")
    out.print(f"keystore {path}")
    err.print(f"use it with: export PAYWIRE_KEYSTORE={path}", highlight=False)


PROFILE_OPTION = typer.Option("--profile", help="Profile file (default: $PAYWIRE_PROFILE, else the one "
                                                 "`paywire devnet` leaves when no wallet is set).")


@wallet_app.command("show")
def wallet_show(profile: Annotated[str, PROFILE_OPTION] = "") -> None:
    """The wallet's address and where it comes from (nothing is decrypted)."""
    found = _identity(_profile(profile))
    if found is None:
        raise _fail(NO_WALLET)
    out.print(f"address {found[0]}")
    out.print(f"source  {found[1]}")


@wallet_app.command("balance")
def wallet_balance(
    rpc: Annotated[str, typer.Option(envvar="PAYWIRE_RPC", help="Node URL (or network=url,...).")] = "",
    asset: Annotated[list[str] | None, typer.Option("--asset", help="Token address (repeatable); default: "
                                                                    "the known USDC of that chain.")] = None,
    network: Annotated[str, typer.Option(help="CAIP-2 network (default: the node's chain).")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    profile: Annotated[str, PROFILE_OPTION] = "",
) -> None:
    """Native and token balances of the wallet, read through the chain layer."""
    from paywire.chain import HttpTransport, RpcChain
    from paywire.evm import token
    from paywire.evm.assets import KNOWN_ASSETS

    prof = _profile(profile)
    found = _identity(prof)
    if found is None:
        raise _fail(NO_WALLET)
    rpc = rpc or (prof.rpc if prof is not None else "")
    if not rpc or "=" in rpc:
        raise _fail("give --rpc URL (or PAYWIRE_RPC) of a node")
    address = found[0]
    profile_tokens = [a["address"] for a in prof.assets] if prof is not None else []

    async def run() -> dict[str, Any]:
        chain = RpcChain(HttpTransport(rpc))
        try:
            net = network or f"eip155:{await chain.chain_id()}"
            tokens = list(asset or [*(a.address for a in KNOWN_ASSETS if a.network == net), *profile_tokens])
            result: dict[str, Any] = {"address": address, "network": net,
                                      "native_wei": str(await chain.get_balance(address)), "tokens": {}}
            for t in tokens:
                raw = await chain.call(t, token.balance_of(address))
                try:
                    decimals = token.decode_uint(await chain.call(t, token.DECIMALS))
                except Exception:
                    decimals = 6
                result["tokens"][t] = {"atomic": str(token.decode_uint(raw)), "decimals": decimals}
            return result
        finally:
            await chain.aclose()

    try:
        info = asyncio.run(run())
    except Exception as exc:
        raise _fail(f"cannot read balances from {rpc}: {exc}") from None
    if as_json:
        out.print_json(json.dumps(info))
        return
    t = Table(title=f"{info['address']} on {info['network']}")
    t.add_column("asset")
    t.add_column("balance", justify="right")
    t.add_row("native (ETH)", f"{int(info['native_wei']) / 10**18:,.6f}")
    for addr, v in info["tokens"].items():
        t.add_row(addr, f"{int(v['atomic']) / 10 ** int(v['decimals']):,.6f}")
    out.print(t)


HISTORY_COLUMNS = ("id", "time", "outcome", "method", "url", "price", "amount", "asset", "network", "pay_to",
                   "tx", "budget", "rule", "reason", "payload_hash", "payment_id")


def _history_row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "time": datetime.fromtimestamp(r.created_at, UTC).isoformat(timespec="seconds"),
        "outcome": r.outcome, "method": r.method, "url": r.url, "price": _usd(r.usd_micros) if r.usd_micros else "",
        "amount": "" if r.amount is None else str(r.amount), "asset": r.asset or "", "network": r.network or "",
        "pay_to": r.pay_to or "", "tx": r.tx or "", "budget": r.budget, "rule": r.rule or "",
        "reason": r.reason or "", "payload_hash": r.payload_hash or "", "payment_id": r.payment_id or "",
    }


@wallet_app.command("history")
def wallet_history(
    store: Annotated[str, typer.Option(help="Receipts store URL (env PAYWIRE_BUYER_STORE or PAYWIRE_STORE; "
                                            "default ~/.paywire/paywire.db).")] = "",
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N entries (0 = all).")] = 50,
    all_accounts: Annotated[bool, typer.Option("--all", help="Every wallet in the store, not just this one.")]
    = False,
    proofs: Annotated[bool, typer.Option("--proofs", help="Export the payments that carry proofs as JSON: the "
                                         "identity this wallet proved and the seller's signed offer and receipt.")]
    = False,
    profile: Annotated[str, PROFILE_OPTION] = "",
) -> None:
    """Receipts: every payment and refused/declined attempt, newest first."""
    from paywire.cli.output import missing_store
    from paywire.store import open_database
    from paywire.store.spend import SpendLedger

    if fmt not in ("table", "json", "csv"):
        raise _fail("--format is table, json or csv")
    found = None if all_accounts else _identity(_profile(profile))
    account = found[0] if found else ""
    where = _store(store)
    _say_store(where)
    absent = missing_store(where)
    if absent is not None:  # a read-only command never creates a store
        raise _fail(f"no receipts store at {absent}: nothing was paid with this store yet (paywire pay creates "
                    "it); give --store or $PAYWIRE_STORE to read another")

    async def run() -> list[Any]:
        db = open_database(where)
        try:
            ledger = SpendLedger(db, account)
            return await ledger.history(limit=limit or None, all_accounts=not account)
        finally:
            await db.aclose()

    receipts = asyncio.run(run())
    if proofs:  # what an owner shows a third party: each verifiable on its own (docs/identity.md)
        kept = [{"id": r.id, "time": _history_row(r)["time"], "url": r.url, "network": r.network, "asset": r.asset,
                 "pay_to": r.pay_to, "amount": None if r.amount is None else str(r.amount), "tx": r.tx,
                 "identity": r.identity, "proofs": json.loads(r.proofs) if r.proofs else None}
                for r in receipts if r.outcome == "paid" and (r.proofs or r.identity)]
        text = json.dumps(kept, indent=2) + "\n"
        receipts = [r for r in receipts if r.outcome == "paid" and (r.proofs or r.identity)]
    elif fmt == "json":
        text = json.dumps([{**r.to_dict(), "time": _history_row(r)["time"]} for r in receipts], indent=2) + "\n"
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS))
        w.writeheader()
        for r in receipts:
            w.writerow(_history_row(r))
        text = buf.getvalue()
    else:
        t = Table(title=f"paywire receipts{' for ' + account if account else ''}")
        for col in ("id", "time", "outcome", "price", "url", "pay_to", "tx", "rule"):
            t.add_column(col, overflow="fold")
        for r in receipts:
            row = _history_row(r)
            t.add_row(str(row["id"]), row["time"], row["outcome"], row["price"], row["url"],
                      _short(row["pay_to"]), _short(row["tx"]), row["rule"])
        if output is None:
            out.print(t)
            return
        buf_console = Console(file=io.StringIO(), width=200)
        buf_console.print(t)
        text = buf_console.file.getvalue()  # type: ignore[attr-defined]
    if output is not None:
        output.write_text(text)
        err.print(f"{len(receipts)} receipts written to {output}", highlight=False)
    else:
        sys.stdout.write(text)


@wallet_app.command("channels")
def wallet_channels(
    store: Annotated[str, typer.Option(help="Buyer store URL (env PAYWIRE_BUYER_STORE or PAYWIRE_STORE; "
                                            "default ~/.paywire/paywire.db).")] = "",
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    all_accounts: Annotated[bool, typer.Option("--all", help="Every wallet in the store, not just this one.")]
    = False,
    profile: Annotated[str, PROFILE_OPTION] = "",
) -> None:
    """batch-settlement channels: deposited balance, what each seller charged, what can still come back."""
    from paywire.cli.output import missing_store
    from paywire.store import open_database
    from paywire.store.channels import BuyerChannelStore

    if fmt not in ("table", "json"):
        raise _fail("--format is table or json")
    found = None if all_accounts else _identity(_profile(profile))
    account = found[0] if found else ""
    where = _store(store)
    _say_store(where)
    absent = missing_store(where)
    if absent is not None:
        raise _fail(f"no buyer store at {absent}: no channel was opened with this store yet")

    async def run() -> list[Any]:
        db = open_database(where)
        try:
            book = BuyerChannelStore(db, account)
            await book.migrate()
            return await book.all(all_accounts=not account)
        finally:
            await db.aclose()

    rows = [{"account": acct, "channel_id": ch.channel_id, "network": ch.network,
             "receiver": ch.config.get("receiver", ""), "token": ch.config.get("token", ""),
             "balance": str(ch.balance), "charged": str(ch.charged),
             "refundable": str(max(ch.balance - ch.charged, 0)),
             # the spend policy's view: the deposit is reserved budget, the charges are spent out of it, the rest
             # comes back to the budget when refunded or withdrawn
             "reserved": str(ch.balance), "spent": str(ch.charged), "withdrawable": str(max(ch.balance - ch.charged, 0)),
             "withdraw_delay": ch.config.get("withdrawDelay"),
             "distrusted": ch.distrusted} for acct, ch in asyncio.run(run())]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    t = Table(title=f"paywire channels{' for ' + account if account else ''}")
    for col in ("channel_id", "network", "receiver", "reserved", "spent", "withdrawable", "distrusted"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(_short(r["channel_id"]), r["network"], _short(str(r["receiver"])), r["reserved"], r["spent"],
                  r["withdrawable"], r["distrusted"])
    out.print(t)


@wallet_app.command("withdraw")
def wallet_withdraw(
    channel: Annotated[str, typer.Argument(help="The channel id (see `paywire wallet channels`).")],
    finish: Annotated[bool, typer.Option("--finish", help="Collect a withdrawal whose delay has passed.")] = False,
    amount: Annotated[int, typer.Option(help="Atomic units to withdraw (0 = all the unclaimed escrow).")] = 0,
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL (or NETWORK=URL) of the channel's chain.")] = "",
    store: Annotated[str, typer.Option(help="Buyer store URL (env PAYWIRE_BUYER_STORE or PAYWIRE_STORE).")] = "",
    profile: Annotated[str, PROFILE_OPTION] = "",
) -> None:
    """batch-settlement timed withdrawal without the seller: start it, then collect it after the channel's delay."""
    from paywire.cli.output import missing_store
    from paywire.errors import ChainError
    from paywire.evm import batch as b
    from paywire.schemes.evm_batch.withdraw import finish_withdrawal, start_withdrawal
    from paywire.store import open_database
    from paywire.store.channels import BuyerChannelStore

    prof = _profile(profile)
    wallet = _wallet(rpc, prof)
    where = _store(store)
    if missing_store(where) is not None:
        raise _fail(f"no buyer store at {where}: no channel was opened with this store")
    key = getattr(wallet.signer, "private_key", None)
    if not isinstance(key, bytes):
        raise _fail("withdrawing needs a local key (PAYWIRE_WALLET_KEY, a keystore or a devnet profile)")

    async def run() -> Any:
        db = open_database(where)
        try:
            found = await BuyerChannelStore(db, wallet.address).get(channel.lower())
        finally:
            await db.aclose()
        if found is None:
            raise _fail(f"no channel {channel} for {wallet.address} in {where}")
        chain = await wallet.chain_for(found.network)
        if chain is None:
            raise _fail(f"no RPC for {found.network}: give --rpc")
        cfg = b.ChannelConfig.from_wire(found.config)
        try:
            if not finish:
                return await start_withdrawal(chain, key, cfg, amount or None)
            done = await finish_withdrawal(chain, key, cfg)
        except ChainError as exc:
            raise _fail(str(exc)) from None
        await _withdrawn(where, wallet.address, found, done, _load_policy("", [], prof)[0])
        return done

    w = asyncio.run(run())
    if finish:
        out.print(f"withdrew {w.amount} (atomic units) in {w.transaction}")
    else:
        ready = datetime.fromtimestamp(w.ready_at, UTC).isoformat(timespec="seconds")
        out.print(f"withdrawal of {w.amount} started in {w.transaction}; `--finish` after {ready}")


async def _withdrawn(where: str, account: str, channel: Any, done: Any, policy: Any) -> None:
    """After ``finalizeWithdraw``: the channel's balance shrinks by what came back, and so does the budget the
    deposit had reserved (a ledger row of negative weight)."""
    from dataclasses import replace

    from paywire.store import open_database
    from paywire.store.channels import BuyerChannelStore
    from paywire.store.spend import SpendLedger

    if done.amount <= 0:
        return
    db = open_database(where)
    try:
        book = BuyerChannelStore(db, account)
        await book.put(replace(channel, balance=max(channel.balance - done.amount, channel.charged)))
        usd = policy.value_released(channel.network, str(channel.config.get("token", "")), done.amount)
        if usd:
            await SpendLedger(db, account).release(
                url="", method="", host="", network=channel.network, asset=str(channel.config.get("token", "")),
                pay_to=str(channel.config.get("receiver", "")), amount=done.amount, usd_micros=usd,
                reason=f"channel withdrawal {done.transaction}")
    finally:
        await db.aclose()


def _short(value: str) -> str:
    return value[:10] + "…" + value[-4:] if len(value) > 16 else value

