"""Facilitator side of ``batch-settlement`` on EVM: verify deposits, vouchers and refunds against the escrow's
state, and settle the four on-chain actions (``deposit``, ``claim``, ``settle``, ``refund``) with our keys.

The first gas key of a network is also the *receiver authorizer* ``/supported`` advertises
(``extra.receiverAuthorizer``): sellers that delegate to us get their claim batches and refunds signed here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from paywire.chain.rail import EvmNetwork
from paywire.errors import ChainError, ChainRevert
from paywire.evm import batch as b
from paywire.evm import eip712
from paywire.evm import permit2 as p2
from paywire.evm import token as tok
from paywire.evm.crypto import address_bytes, recover_address, to_checksum
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_batch import payload as pl
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

_IS_VALID_SIGNATURE = b.selector("isValidSignature(bytes32,bytes)")
_MAGIC = bytes.fromhex("1626ba7e")
_RECEIPT_TIMEOUT = 60.0


class Invalid(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


def _authorizer_of(net: EvmNetwork) -> LocalSigner | None:
    """The receiver authorizer: the network's named key (the fleet key, else its first gas key)."""
    named = net.named
    if named is None:
        return None
    key = getattr(named, "private_key", None)  # a TxSender's; another sender kind may keep its key elsewhere
    return LocalSigner(bytes(key)) if isinstance(key, bytes) else None


class BatchEvmFacilitator:
    """``batch-settlement`` × ``eip155:*`` for the facilitator role.

    ``authorizers``: network → the receiver-authorizer key (default: the network's fleet key, else its first gas
    key).
    """

    scheme = pl.SCHEME
    network_pattern = "eip155:*"
    v2_only = True

    def __init__(self, networks: Mapping[str, EvmNetwork] | Sequence[EvmNetwork], *,
                 authorizers: Mapping[str, LocalSigner] | None = None, receipt_timeout: float = _RECEIPT_TIMEOUT,
                 **_ignored: Any) -> None:
        nets = networks.values() if isinstance(networks, Mapping) else networks
        self._nets: dict[str, EvmNetwork] = {n.network: n for n in nets}
        self._authorizers: dict[str, LocalSigner] = {}
        for name, net in self._nets.items():
            signer = (authorizers or {}).get(name) or _authorizer_of(net)
            if signer is not None:
                self._authorizers[name] = signer
        self._receipt_timeout = receipt_timeout

    # -- registry facts -------------------------------------------------------------------------
    def networks(self) -> Sequence[str]:
        return list(self._nets)

    def signer_addresses(self) -> Sequence[str]:
        return sorted({s.address for n in self._nets.values() for s in n.all_senders})

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        signer = self._authorizers.get(network)
        return {"receiverAuthorizer": signer.address} if signer is not None else None

    # -- reads ----------------------------------------------------------------------------------
    async def channel_state(self, net: EvmNetwork, channel_id: bytes) -> b.OnchainChannel:
        try:
            raw = await net.chain.call(b.MULTICALL3_ADDRESS, b.try_aggregate(b.channel_state_calls(channel_id)))
            return b.decode_channel_state(b.decode_try_aggregate(raw))
        except (ChainError, ValueError) as exc:
            raise Invalid(pl.CHANNEL_STATE_READ_FAILED, f"cannot read the channel: {exc}") from None

    async def _valid_signature(self, net: EvmNetwork, signer: str, digest: bytes, signature: bytes) -> bool:
        """ECDSA by ``signer``, else EIP-1271 when ``signer`` is a contract (the escrow's own rule)."""
        recovered = recover_address(digest, signature) if len(signature) == 65 else None
        if recovered is not None and recovered == address_bytes(signer):
            return True
        try:
            if not await net.chain.get_code(signer):
                return False
            from eth_abi.abi import encode

            ret = await net.chain.call(signer, _IS_VALID_SIGNATURE + encode(["bytes32", "bytes"], [digest, signature]))
        except ChainError:
            return False
        return ret[:4] == _MAGIC

    # -- verify ---------------------------------------------------------------------------------
    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> VerifyResponse:
        try:
            parsed, _net, state = await self._check(payload, requirements)
        except pl.PayloadError as exc:
            return VerifyResponse(False, exc.reason, None, str(exc))
        except Invalid as exc:
            return VerifyResponse(False, exc.reason, _payer(payload), str(exc))
        return VerifyResponse(True, payer=parsed.config.payer, extra=state.to_wire(parsed.channel_id))

    async def _check(self, payload: PaymentPayload, requirements: PaymentRequirements,
                     ) -> tuple[pl.ChannelPayload, EvmNetwork, b.OnchainChannel]:
        if requirements.scheme != pl.SCHEME or payload.accepted.scheme != pl.SCHEME:
            raise Invalid(pl.SCHEME_MISMATCH)
        if payload.accepted.network != requirements.network:
            raise Invalid(pl.NETWORK_MISMATCH)
        net = self._nets.get(requirements.network)
        if net is None:
            raise Invalid(pl.NETWORK_MISMATCH, f"this facilitator does not settle on {requirements.network}")
        p = pl.parse_payment(payload.payload)
        chain_id = int(requirements.network.split(":", 1)[1])
        check_config(p, requirements, chain_id)
        cfg, v = p.config, p.voucher
        digest = b.voucher_digest(p.channel_id, v.max_claimable, chain_id)
        if int(cfg.payer_authorizer, 16) != 0:
            recovered = recover_address(digest, v.signature) if len(v.signature) == 65 else None
            if recovered is None or recovered != address_bytes(cfg.payer_authorizer):
                raise Invalid(pl.VOUCHER_SIGNATURE, "the voucher is not signed by the payer authorizer")
        elif not await self._valid_signature(net, cfg.payer, digest, v.signature):
            raise Invalid(pl.VOUCHER_SIGNATURE, "the voucher is not signed by the payer")
        state = await self.channel_state(net, p.channel_id)
        if p.type == "deposit":
            await self._check_deposit(p, requirements, net, chain_id)
            if v.max_claimable > state.balance + p.deposit_amount:
                raise Invalid(pl.CUMULATIVE_EXCEEDS_BALANCE)
            if v.max_claimable <= state.total_claimed:
                raise Invalid(pl.CUMULATIVE_BELOW_CLAIMED)
            return p, net, state
        if state.balance == 0:
            raise Invalid(pl.CHANNEL_NOT_FOUND, "the channel has no balance")
        if v.max_claimable > state.balance:
            raise Invalid(pl.CUMULATIVE_EXCEEDS_BALANCE)
        if v.max_claimable < state.total_claimed or (p.type == "voucher" and v.max_claimable == state.total_claimed):
            raise Invalid(pl.CUMULATIVE_BELOW_CLAIMED)
        return p, net, state

    async def _check_deposit(self, p: pl.ChannelPayload, requirements: PaymentRequirements, net: EvmNetwork,
                             chain_id: int) -> None:
        cfg = p.config
        if p.deposit_amount == 0:
            raise Invalid(pl.DEPOSIT_PAYLOAD, "a deposit must be positive")
        now = int(time.time())
        if p.erc3009 is not None:
            e = p.erc3009
            name, version = requirements.extra.get("name"), requirements.extra.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                raise Invalid(pl.MISSING_EIP712_DOMAIN)
            if e.valid_before < now + 6:
                raise Invalid(pl.VALID_BEFORE)
            if e.valid_after > now:
                raise Invalid(pl.VALID_AFTER)
            domain = eip712.domain_separator(name, version, chain_id, cfg.token)
            digest = eip712.transfer_authorization_digest(
                domain, address_bytes(cfg.payer), address_bytes(b.ERC3009_COLLECTOR_ADDRESS), p.deposit_amount,
                e.valid_after, e.valid_before, b.erc3009_deposit_nonce(p.channel_id, e.salt),
                typehash=eip712.RECEIVE_WITH_AUTHORIZATION_TYPEHASH)
            if not await self._valid_signature(net, cfg.payer, digest, e.signature):
                raise Invalid(pl.RECEIVE_AUTHORIZATION_SIGNATURE)
        else:
            a = p.permit2
            assert a is not None
            if a.from_.lower() != cfg.payer.lower():
                raise Invalid(pl.PERMIT2_INVALID_SIGNATURE, "the permit's owner is not the payer")
            if a.spender.lower() != b.PERMIT2_COLLECTOR_ADDRESS.lower():
                raise Invalid(pl.PERMIT2_INVALID_SPENDER)
            if a.token.lower() != cfg.token.lower():
                raise Invalid(pl.TOKEN_MISMATCH)
            if a.amount != p.deposit_amount:
                raise Invalid(pl.PERMIT2_AMOUNT_MISMATCH)
            if a.witness_channel_id != p.channel_id:
                raise Invalid(pl.CHANNEL_ID_MISMATCH)
            if a.deadline < now + 6:
                raise Invalid(pl.PERMIT2_DEADLINE_EXPIRED)
            digest = b.permit2_deposit_digest(a.token, a.amount, a.nonce, a.deadline, p.channel_id, chain_id)
            if not await self._valid_signature(net, cfg.payer, digest, a.signature):
                raise Invalid(pl.PERMIT2_INVALID_SIGNATURE)
            allowance = tok.decode_uint(await net.chain.call(cfg.token, p2.allowance(cfg.payer)))
            if allowance < p.deposit_amount:
                raise Invalid(pl.PERMIT2_ALLOWANCE_REQUIRED,
                              f"the payer has not approved Permit2 on {cfg.token} for {p.deposit_amount}")
        balance = tok.decode_uint(await net.chain.call(cfg.token, tok.balance_of(cfg.payer)))
        if balance < p.deposit_amount:
            raise Invalid(pl.INSUFFICIENT_BALANCE)

    # -- settle ---------------------------------------------------------------------------------
    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> SettleResponse:
        kind = payload.payload.get("type") if isinstance(payload.payload, Mapping) else None
        network = requirements.network
        try:
            if kind == "deposit":
                return await self._settle_deposit(payload, requirements)
            if kind == "refund":
                return await self._settle_refund(payload, requirements)
            net = self._nets.get(network)
            if net is None or requirements.scheme != pl.SCHEME:
                raise Invalid(pl.NETWORK_MISMATCH)
            if kind == "claim":
                return await self._settle_claim(net, payload.payload, network)
            if kind == "settle":
                return await self._settle_receiver(net, payload.payload, network)
            raise Invalid(pl.PAYLOAD_TYPE)
        except pl.PayloadError as exc:
            return SettleResponse(False, network=network, error_reason=exc.reason, error_message=str(exc))
        except Invalid as exc:
            return SettleResponse(False, network=network, payer=_payer(payload), error_reason=exc.reason,
                                  error_message=str(exc))

    async def _send(self, net: EvmNetwork, data: bytes, failed: str, simulated: str) -> str:
        sender = net.sender()
        try:
            await net.chain.call(b.BATCH_SETTLEMENT_ADDRESS, data, sender=sender.address)
        except ChainRevert as exc:
            raise Invalid(simulated, f"simulation reverted: {b.error_name(exc.data) or exc.reason}") from None
        except ChainError as exc:
            raise Invalid(pl.RPC_READ_FAILED, str(exc)) from None
        try:
            tx = await sender.send(b.BATCH_SETTLEMENT_ADDRESS, data)
            receipt = await net.chain.wait_for_receipt(tx, timeout=self._receipt_timeout)
        except (TimeoutError, ChainError) as exc:
            raise Invalid("settlement_pending", f"sent but not confirmed: {exc}") from None
        if receipt.status != 1:
            raise Invalid(failed, f"transaction {tx} reverted")
        return tx

    async def _settle_deposit(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        p, net, _state = await self._check(payload, requirements)
        if p.erc3009 is not None:
            e = p.erc3009
            data = b.deposit(p.config, p.deposit_amount, b.ERC3009_COLLECTOR_ADDRESS,
                             b.erc3009_collector_data(e.valid_after, e.valid_before, e.salt, e.signature))
        else:
            a = p.permit2
            assert a is not None
            eip2612 = p2.Eip2612Permit.from_extensions(payload.extensions)
            extra = b"" if eip2612 is None else b.eip2612_permit_data(eip2612.value, eip2612.deadline,
                                                                       eip2612.signature)
            data = b.deposit(p.config, p.deposit_amount, b.PERMIT2_COLLECTOR_ADDRESS,
                             b.permit2_collector_data(a.nonce, a.deadline, a.signature, extra))
        try:
            tx = await self._send(net, data, pl.DEPOSIT_FAILED, pl.DEPOSIT_SIMULATION_FAILED)
        except Invalid as exc:
            landed = await self._deposit_landed(net, p, requirements) if exc.reason == pl.DEPOSIT_SIMULATION_FAILED \
                else None
            if landed is None:
                raise
            return landed
        after = await self.channel_state(net, p.channel_id)
        return SettleResponse(True, tx, requirements.network, p.config.payer, amount=p.deposit_amount,
                              extra={"channelState": after.to_wire(p.channel_id)})

    async def _deposit_landed(self, net: EvmNetwork, p: pl.ChannelPayload,
                              requirements: PaymentRequirements) -> SettleResponse | None:
        """A retried settle of a deposit that already landed (its ERC-3009 nonce, bound to this channel, is used):
        success without a new transaction, amount 0 — when the voucher fits the balance as it is."""
        if p.erc3009 is None:
            return None
        nonce = b.erc3009_deposit_nonce(p.channel_id, p.erc3009.salt)
        try:
            used = tok.decode_bool(await net.chain.call(p.config.token, tok.authorization_state(p.config.payer,
                                                                                                 nonce)))
        except (ChainError, ValueError):
            return None
        if not used:
            return None
        state = await self.channel_state(net, p.channel_id)
        if p.voucher.max_claimable > state.balance:
            raise Invalid(pl.CUMULATIVE_EXCEEDS_BALANCE, "the deposit was already used; the voucher exceeds the balance")
        return SettleResponse(True, "", requirements.network, p.config.payer, amount=0,
                              extra={"channelState": state.to_wire(p.channel_id)})

    async def _settle_claim(self, net: EvmNetwork, raw: Mapping[str, Any], network: str) -> SettleResponse:
        claims = _claims(raw, pl.CLAIM_PAYLOAD)
        sig = await self._authorizer_signature(net, network, raw.get("claimAuthorizerSignature"), claims,
                                               pl.CLAIM_PAYLOAD)
        tx = await self._send(net, b.claim_with_signature(claims, sig), pl.CLAIM_FAILED, pl.CLAIM_SIMULATION_FAILED)
        return SettleResponse(True, tx, network)

    async def _authorizer_signature(self, net: EvmNetwork, network: str, given: Any,
                                    claims: Sequence[b.VoucherClaim], reason: str) -> bytes:
        if given is not None:
            try:
                return b.hex_bytes(given)
            except ValueError:
                raise Invalid(reason, "claimAuthorizerSignature is not hex") from None
        signer = self._authorizers.get(network)
        if signer is None or any(c.config.receiver_authorizer.lower() != signer.address.lower() for c in claims):
            raise Invalid(pl.RECEIVER_AUTHORIZER_MISMATCH, "these channels do not delegate to this facilitator")
        chain_id = int(network.split(":", 1)[1])
        return await signer.sign_digest(b.claim_batch_digest(claims, chain_id))

    async def _settle_receiver(self, net: EvmNetwork, raw: Mapping[str, Any], network: str) -> SettleResponse:
        try:
            receiver, token = to_checksum(str(raw.get("receiver"))), to_checksum(str(raw.get("token")))
        except ValueError:
            raise Invalid(pl.SETTLE_PAYLOAD, "receiver and token must be addresses") from None
        claimed, settled = b.decode_pair(await net.chain.call(b.BATCH_SETTLEMENT_ADDRESS,
                                                              b.receivers_call(receiver, token)))
        if claimed == settled:
            return SettleResponse(True, "", network, amount=0)
        tx = await self._send(net, b.settle(receiver, token), pl.SETTLE_FAILED, pl.SETTLE_FAILED)
        return SettleResponse(True, tx, network, amount=claimed - settled)

    async def _settle_refund(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        p, net, state = await self._check(payload, requirements)
        raw = payload.payload
        network = requirements.network
        chain_id = int(network.split(":", 1)[1])
        try:
            nonce = b.uint(raw.get("refundNonce"))
            amount = b.uint(raw.get("amount"), 128) if raw.get("amount") is not None else state.available
        except ValueError:
            raise Invalid(pl.REFUND_PAYLOAD, "refundNonce / amount") from None
        claims = _claims(raw, pl.REFUND_PAYLOAD) if raw.get("claims") else []
        if nonce != state.refund_nonce:
            raise Invalid(pl.REFUND_PAYLOAD, f"refundNonce {nonce} is not the channel's {state.refund_nonce}")
        calls: list[bytes] = []
        pending = [c for c in claims if c.total_claimed > state.total_claimed]
        if pending:
            sig = await self._authorizer_signature(net, network, raw.get("claimAuthorizerSignature"), pending,
                                                   pl.REFUND_PAYLOAD)
            calls.append(b.claim_with_signature(pending, sig))
        claimed_after = max([state.total_claimed, *(c.total_claimed for c in pending)])
        if amount == 0 or state.balance - claimed_after <= 0:
            raise Invalid(pl.REFUND_NO_BALANCE)
        given = raw.get("refundAuthorizerSignature")
        if given is not None:
            refund_sig = b.hex_bytes(given)
        else:
            signer = self._authorizers.get(network)
            if signer is None or p.config.receiver_authorizer.lower() != signer.address.lower():
                raise Invalid(pl.RECEIVER_AUTHORIZER_MISMATCH, "this channel does not delegate to this facilitator")
            refund_sig = await signer.sign_digest(b.refund_digest(p.channel_id, nonce, amount, chain_id))
        calls.append(b.refund_with_signature(p.config, amount, nonce, refund_sig))
        data = calls[0] if len(calls) == 1 else b.multicall(calls)
        tx = await self._send(net, data, pl.REFUND_FAILED, pl.REFUND_SIMULATION_FAILED)
        after = await self.channel_state(net, p.channel_id)
        return SettleResponse(True, tx, network, p.config.payer, amount=state.balance - after.balance,
                              extra={"channelState": after.to_wire(p.channel_id)})


def check_config(p: pl.ChannelPayload, requirements: PaymentRequirements, chain_id: int) -> None:
    """The spec's rules 1–5: the config hashes to the channel id and matches the offer."""
    cfg = p.config
    if cfg.channel_id(chain_id) != p.channel_id:
        raise Invalid(pl.CHANNEL_ID_MISMATCH, "the channel config does not hash to the voucher's channel id")
    if cfg.receiver.lower() != requirements.pay_to.lower():
        raise Invalid(pl.RECEIVER_MISMATCH)
    wanted = requirements.extra.get("receiverAuthorizer")
    if (not isinstance(wanted, str) or int(wanted, 16) == 0
            or cfg.receiver_authorizer.lower() != wanted.lower()):
        raise Invalid(pl.RECEIVER_AUTHORIZER_MISMATCH)
    if cfg.token.lower() != requirements.asset.lower():
        raise Invalid(pl.TOKEN_MISMATCH)
    delay = requirements.extra.get("withdrawDelay")
    if delay is not None and str(cfg.withdraw_delay) != str(delay):
        raise Invalid(pl.WITHDRAW_DELAY_MISMATCH)
    if not b.MIN_WITHDRAW_DELAY <= cfg.withdraw_delay <= b.MAX_WITHDRAW_DELAY:
        raise Invalid(pl.WITHDRAW_DELAY_OUT_OF_RANGE)


def _claims(raw: Mapping[str, Any], reason: str) -> list[b.VoucherClaim]:
    rows = raw.get("claims")
    if not isinstance(rows, list) or not rows or len(rows) > 500:
        raise Invalid(reason, "claims must be a list of 1..500 rows")
    try:
        return [b.VoucherClaim.from_wire(r) for r in rows]
    except ValueError as exc:
        raise Invalid(reason, f"a claim row is malformed: {exc}") from None


def _payer(payload: PaymentPayload) -> str | None:
    cfg = payload.payload.get("channelConfig") if isinstance(payload.payload, Mapping) else None
    payer = cfg.get("payer") if isinstance(cfg, Mapping) else None
    return payer if isinstance(payer, str) else None


__all__ = ["BatchEvmFacilitator", "Invalid", "check_config"]
