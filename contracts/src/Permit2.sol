// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Permit2 (signature-transfer subset)
/// @notice paywire's own implementation of the signature-transfer half of Uniswap's Permit2, with the same
///         external interface, EIP-712 types, domain and errors, so that signatures made for the canonical
///         Permit2 (0x000000000022D473030F116dDEE9F6B43aC78BA3) verify here unchanged:
///         - `permitTransferFrom`: move up to a signed amount of one token from `owner` to a recipient the
///           spender (`msg.sender`, bound by the signature) chooses;
///         - `permitWitnessTransferFrom`: the same, with extra data (the witness) bound into the signature
///           under a type string the spender supplies;
///         - one-time unordered nonces kept in a bitmap (`nonceBitmap`, `invalidateUnorderedNonces`).
///         The owner must have approved this contract on the token (ERC-20 `approve`).
///         No constructor and no immutables: the domain separator is computed from `block.chainid` and
///         `address(this)`, so the runtime code can be placed at the canonical address on a dev chain.
contract Permit2 {
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

    /// @notice owner => word position => bitmap of used nonces (nonce = wordPos << 8 | bitPos)
    mapping(address => mapping(uint256 => uint256)) public nonceBitmap;

    event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask);

    error SignatureExpired(uint256 signatureDeadline);
    error InvalidAmount(uint256 maxAmount);
    error InvalidNonce();
    error InvalidSignature();
    error InvalidSigner();
    error InvalidSignatureLength();
    error InvalidContractSignature();
    error TransferFromFailed();

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("Permit2");
    bytes32 private constant _TOKEN_PERMISSIONS_TYPEHASH = keccak256("TokenPermissions(address token,uint256 amount)");
    bytes32 private constant _PERMIT_TRANSFER_FROM_TYPEHASH = keccak256(
        "PermitTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline)"
        "TokenPermissions(address token,uint256 amount)"
    );
    string private constant _WITNESS_STUB =
        "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,";
    bytes4 private constant _EIP1271_MAGIC = 0x1626ba7e;
    uint256 private constant _HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice EIP-712 domain separator: name "Permit2", this chain, this address (no version field).
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, block.chainid, address(this)));
    }

    /// @notice Transfer `transferDetails.requestedAmount` (<= the signed amount) of the signed token from
    ///         `owner` to `transferDetails.to`; the signature names `msg.sender` as the spender.
    function permitTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external {
        bytes32 dataHash = keccak256(
            abi.encode(_PERMIT_TRANSFER_FROM_TYPEHASH, _hashTokenPermissions(permit.permitted), msg.sender,
                permit.nonce, permit.deadline)
        );
        _transfer(permit, transferDetails, owner, dataHash, signature);
    }

    /// @notice As `permitTransferFrom`, with `witness` (the EIP-712 hash of the spender's witness struct)
    ///         bound into the signed message under `witnessTypeString` (e.g.
    ///         "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)").
    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        bytes32 typeHash = keccak256(abi.encodePacked(_WITNESS_STUB, witnessTypeString));
        bytes32 dataHash = keccak256(
            abi.encode(typeHash, _hashTokenPermissions(permit.permitted), msg.sender, permit.nonce,
                permit.deadline, witness)
        );
        _transfer(permit, transferDetails, owner, dataHash, signature);
    }

    /// @notice Mark the nonces set in `mask` at word `wordPos` of the caller as used.
    function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external {
        nonceBitmap[msg.sender][wordPos] |= mask;
        emit UnorderedNonceInvalidation(msg.sender, wordPos, mask);
    }

    function _transfer(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 dataHash,
        bytes calldata signature
    ) private {
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (transferDetails.requestedAmount > permit.permitted.amount) revert InvalidAmount(permit.permitted.amount);
        _useUnorderedNonce(owner, permit.nonce);
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), dataHash));
        _verify(signature, digest, owner);
        _safeTransferFrom(permit.permitted.token, owner, transferDetails.to, transferDetails.requestedAmount);
    }

    function _hashTokenPermissions(TokenPermissions calldata permitted) private pure returns (bytes32) {
        return keccak256(abi.encode(_TOKEN_PERMISSIONS_TYPEHASH, permitted.token, permitted.amount));
    }

    function _useUnorderedNonce(address from, uint256 nonce) private {
        uint256 wordPos = nonce >> 8;
        uint256 bit = 1 << (nonce & 0xff);
        uint256 flipped = nonceBitmap[from][wordPos] ^= bit;
        if (flipped & bit == 0) revert InvalidNonce();
    }

    /// @dev EOA: 65-byte (r, s, v) or 64-byte EIP-2098 (r, vs) signature recovering to `claimedSigner`;
    ///      contract: EIP-1271 `isValidSignature` returning the magic value.
    function _verify(bytes calldata signature, bytes32 digest, address claimedSigner) private view {
        if (claimedSigner.code.length > 0) {
            (bool ok, bytes memory out) =
                claimedSigner.staticcall(abi.encodeWithSelector(_EIP1271_MAGIC, digest, signature));
            if (!ok || out.length < 32 || abi.decode(out, (bytes4)) != _EIP1271_MAGIC) {
                revert InvalidContractSignature();
            }
            return;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            r = bytes32(signature[0:32]);
            s = bytes32(signature[32:64]);
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            r = bytes32(signature[0:32]);
            bytes32 vs = bytes32(signature[32:64]);
            s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
            v = uint8(uint256(vs >> 255)) + 27;
        } else {
            revert InvalidSignatureLength();
        }
        if (uint256(s) > _HALF_CURVE_ORDER) revert InvalidSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
        if (signer != claimedSigner) revert InvalidSigner();
    }

    function _safeTransferFrom(address token, address from, address to, uint256 amount) private {
        if (token.code.length == 0) revert TransferFromFailed();
        (bool ok, bytes memory out) = token.call(abi.encodeWithSelector(0x23b872dd, from, to, amount));
        if (!ok || (out.length != 0 && (out.length < 32 || !abi.decode(out, (bool))))) revert TransferFromFailed();
    }
}
