// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title X402Permit2DepositCollector
/// @notice paywire's Permit2 deposit collector for the x402 batch-settlement escrow (canonical address
///         0x4020425FAf3B746C082C2f942b4E5159887B0005). Only the escrow may call `collect`; it moves the deposit
///         from the payer straight to the escrow with Permit2 `permitWitnessTransferFrom`, the witness
///         `DepositWitness(bytes32 channelId)` binding it to one channel (spender: this contract).
///         `collectorData` = `abi.encode(uint256 nonce, uint256 deadline, bytes permit2Signature,
///         bytes eip2612Permit)`; a non-empty `eip2612Permit` = `abi.encode(value, deadline, v, r, s)` is first
///         submitted to the token as `permit(payer, Permit2, …)` (a failure is reported in an event and ignored:
///         the approval may already exist).
contract X402Permit2DepositCollector {
    address public constant x402BatchSettlement = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;
    address public constant PERMIT2 = 0x000000000022D473030F116dDEE9F6B43aC78BA3;

    string public constant DEPOSIT_WITNESS_TYPE_STRING =
        "DepositWitness witness)DepositWitness(bytes32 channelId)TokenPermissions(address token,uint256 amount)";
    bytes32 public constant DEPOSIT_WITNESS_TYPEHASH = keccak256("DepositWitness(bytes32 channelId)");

    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    event EIP2612PermitFailedWithData(address indexed token, address indexed owner, bytes data);

    error OnlyX402BatchSettlement();
    error Permit2612AmountMismatch();

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != x402BatchSettlement) revert OnlyX402BatchSettlement();
        (uint256 nonce, uint256 deadline, bytes memory signature, bytes memory eip2612) =
            abi.decode(collectorData, (uint256, uint256, bytes, bytes));
        if (eip2612.length > 0) _tryPermit(payer, token, amount, eip2612);
        PermitTransferFrom memory permit = PermitTransferFrom(TokenPermissions(token, amount), nonce, deadline);
        _pull(permit, payer, keccak256(abi.encode(DEPOSIT_WITNESS_TYPEHASH, channelId)), signature);
    }

    function _pull(PermitTransferFrom memory permit, address payer, bytes32 witness, bytes memory signature)
        private
    {
        SignatureTransferDetails memory details = SignatureTransferDetails(x402BatchSettlement, permit.permitted.amount);
        (bool ok, bytes memory ret) = PERMIT2.call(
            abi.encodeWithSignature(
                "permitWitnessTransferFrom(((address,uint256),uint256,uint256),(address,uint256),address,bytes32,string,bytes)",
                permit,
                details,
                payer,
                witness,
                DEPOSIT_WITNESS_TYPE_STRING,
                signature
            )
        );
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    function _tryPermit(address payer, address token, uint256 amount, bytes memory data) private {
        (uint256 value, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s) =
            abi.decode(data, (uint256, uint256, uint8, bytes32, bytes32));
        if (value != amount) revert Permit2612AmountMismatch();
        (bool ok, bytes memory ret) = token.call(
            abi.encodeWithSignature(
                "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
                payer,
                PERMIT2,
                value,
                permitDeadline,
                v,
                r,
                s
            )
        );
        if (!ok) emit EIP2612PermitFailedWithData(token, payer, ret);
    }
}
