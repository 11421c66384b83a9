// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title X402ERC3009DepositCollector
/// @notice paywire's ERC-3009 deposit collector for the x402 batch-settlement escrow (canonical address
///         0x4020806089470a89826cB9fB1f4059150b550004). Only the escrow may call `collect`; it pulls the
///         deposit with the token's `receiveWithAuthorization` (so the payer's signature names this contract as
///         `to`, and the nonce is `keccak256(abi.encode(channelId, salt))`, binding the deposit to one channel)
///         and forwards it to the escrow.
///         `collectorData` = `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
///         The escrow is the canonical address, a constant, so the runtime code can be placed anywhere.
contract X402ERC3009DepositCollector {
    address public constant x402BatchSettlement = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;

    error OnlyX402BatchSettlement();
    error TokenTransferFailed();

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != x402BatchSettlement) revert OnlyX402BatchSettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        (bool ok, bytes memory ret) = token.call(
            abi.encodeWithSignature(
                "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)",
                payer,
                address(this),
                amount,
                validAfter,
                validBefore,
                nonce,
                signature
            )
        );
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        (ok, ret) = token.call(abi.encodeWithSignature("transfer(address,uint256)", x402BatchSettlement, amount));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TokenTransferFailed();
    }
}
