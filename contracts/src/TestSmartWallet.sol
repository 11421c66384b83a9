// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title TestSmartWallet
/// @notice A minimal EIP-1271 contract account controlled by one EOA, for tests of the contract-signer
///         path of signature verification. It holds tokens; its owner signs on its behalf.
contract TestSmartWallet {
    /// @dev bytes4(keccak256("isValidSignature(bytes32,bytes)"))
    bytes4 private constant _MAGIC = 0x1626ba7e;
    bytes4 private constant _INVALID = 0xffffffff;
    uint256 private constant _HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    /// @notice EIP-1271: the magic value iff `signature` (65 bytes, r || s || v) is the owner's
    ///         secp256k1 signature of `hash` itself (no extra prefixing), else 0xffffffff.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return _INVALID;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if (v != 27 && v != 28) return _INVALID;
        if (uint256(s) > _HALF_CURVE_ORDER) return _INVALID;
        address recovered = ecrecover(hash, v, r, s);
        return recovered != address(0) && recovered == owner ? _MAGIC : _INVALID;
    }
}
