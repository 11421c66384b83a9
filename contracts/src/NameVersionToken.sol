// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title NameVersionToken
/// @notice Token metadata without the EIP-5267 `eip712Domain()` getter: only `name()`, `version()`,
///         `symbol()` and `decimals()`, the way older EIP-3009 tokens expose their EIP-712 domain.
/// @dev For tests of the domain reader's fallback path; it holds no balances.
contract NameVersionToken {
    string private _name;
    string private _version;

    constructor(string memory name_, string memory version_) {
        _name = name_;
        _version = version_;
    }

    function name() external view returns (string memory) {
        return _name;
    }

    function version() external view returns (string memory) {
        return _version;
    }

    function symbol() external pure returns (string memory) {
        return "NVT";
    }

    function decimals() external pure returns (uint8) {
        return 6;
    }
}
