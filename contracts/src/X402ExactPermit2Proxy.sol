// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title X402ExactPermit2Proxy
/// @notice paywire's implementation of the x402 `exact` Permit2 proxy (canonical address
///         0x402085c248EeA27D92E8b30b2C58ed07f9E20001): the spender named in the payer's Permit2 signature.
///         It moves exactly the signed amount to `witness.to`; the witness is bound into the signature, so
///         whoever submits the transaction cannot redirect the funds.
///         Witness type: `Witness(address to,uint256 validAfter)`.
///         `settleWithPermit` first submits the payer's EIP-2612 permit approving Permit2 (a failing permit
///         is reported in an event and ignored: the approval may already exist).
///         Permit2 is the canonical address, a constant, so the runtime code can be placed anywhere.
contract X402ExactPermit2Proxy {
    address public constant PERMIT2 = 0x000000000022D473030F116dDEE9F6B43aC78BA3;

    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct Witness {
        address to;
        uint256 validAfter;
    }

    struct EIP2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    event Settled();
    event SettledWithPermit();
    event EIP2612PermitFailedWithData(address indexed token, address indexed owner, bytes data);

    error InvalidDestination();
    error PaymentTooEarly();
    error InvalidOwner();
    error InvalidAmount();
    error Permit2612AmountMismatch();
    error Reentrancy();

    bool private transient _entered;

    modifier nonReentrant() {
        if (_entered) revert Reentrancy();
        _entered = true;
        _;
        _entered = false;
    }

    /// @notice Pay `permit.permitted.amount` of `permit.permitted.token` from `owner` to `witness.to`.
    function settle(
        PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _settle(permit, owner, witness, signature);
        emit Settled();
    }

    /// @notice `settle`, after submitting the payer's EIP-2612 permit that approves Permit2 on the token.
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        if (permit2612.value != permit.permitted.amount) revert Permit2612AmountMismatch();
        _permit(permit.permitted.token, owner, permit2612);
        _settle(permit, owner, witness, signature);
        emit SettledWithPermit();
    }

    function _settle(
        PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) private {
        uint256 amount = permit.permitted.amount;
        if (amount == 0) revert InvalidAmount();
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter));
        (bool ok, bytes memory out) = PERMIT2.call(
            abi.encodeWithSignature(
                "permitWitnessTransferFrom(((address,uint256),uint256,uint256),(address,uint256),address,bytes32,string,bytes)",
                permit, witness.to, amount, owner, witnessHash, WITNESS_TYPE_STRING, signature
            )
        );
        if (!ok) {
            assembly {
                revert(add(out, 32), mload(out))
            }
        }
    }

    function _permit(address token, address owner, EIP2612Permit calldata p) private {
        (bool ok, bytes memory out) = token.call(
            abi.encodeWithSignature(
                "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
                owner, PERMIT2, p.value, p.deadline, p.v, p.r, p.s
            )
        );
        if (!ok) emit EIP2612PermitFailedWithData(token, owner, out);
    }
}
