"""RFC 8785 (JCS) and base64url-nopad, the byte forms MPP binds (checklist 105)."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from paywire.errors import WireError
from paywire.mpp.b64 import b64_any_decode, b64url_decode, b64url_encode
from paywire.mpp.jcs import JcsError, canonicalize, format_number

# RFC 8785 Appendix B: IEEE 754 bit patterns and their required serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(hex_bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bits))[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("bits", "want"), RFC8785_NUMBERS)
def test_rfc8785_number_serialization(bits, want):
    """RFC 8785 Appendix B: ECMAScript number formatting of IEEE 754 doubles."""
    assert format_number(_double(bits)) == want
    assert canonicalize(_double(bits)) == want.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_nan_and_infinity_are_errors(bits):
    with pytest.raises(JcsError):
        canonicalize(_double(bits))


def test_rfc8785_section_3_2_2_sample():
    """RFC 8785 §3.2.2: the whitespace-free, sorted, minimally escaped output."""
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    want = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonicalize(value) == want.encode("utf-8")


def test_rfc8785_section_3_2_3_key_order_is_utf16():
    """RFC 8785 §3.2.3: keys sort by UTF-16 code units (the emoji's surrogates sort before U+FB33)."""
    value = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    keys = list(json.loads(canonicalize(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_random_doubles_match_the_reference_implementation():
    """Our number formatter equals the ``rfc8785`` package (pympp's JCS) on 20k random bit patterns."""
    rfc8785 = pytest.importorskip("rfc8785")
    rng = random.Random(8785)
    for _ in range(20_000):
        x = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        if math.isfinite(x):
            assert canonicalize(x) == rfc8785.dumps(x), x


def test_integers_and_other_values():
    assert canonicalize({"b": [1, -2, 0], "a": {"z": None, "y": "ü"}}) == '{"a":{"y":"ü","z":null},"b":[1,-2,0]}'.encode()
    assert canonicalize(2**53) == b"9007199254740992"
    assert canonicalize(2**60) == b"1152921504606847000"  # beyond 2^53 an integer is a double, as in JS
    assert canonicalize("\x7f\x1f") == b'"\x7f\\u001f"'
    for bad in ("\ud800", {"\udfff": 1}, b"bytes", {1: "x"}, float("nan"), {"a": object()}):
        with pytest.raises(JcsError):
            canonicalize(bad)


def test_base64url_roundtrip_and_strictness():
    for n in range(0, 40):
        data = bytes(range(n))
        enc = b64url_encode(data)
        assert "=" not in enc and "+" not in enc and "/" not in enc
        assert b64url_decode(enc) == data
    assert b64url_decode("Zm9vYg==") == b"foob"  # padding accepted on input
    assert b64url_decode("Zm9vYg") == b"foob"
    for bad in ("Zm9v+g", "Zm9v/g", "Zm9 v", "Z", "Zm9vY===", "Zm9vYg=", "é"):
        with pytest.raises(WireError):
            b64url_decode(bad)
    assert b64_any_decode("+/+/") == b64url_decode("-_-_")
