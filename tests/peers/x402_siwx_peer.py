"""Runs the official x402 Python SDK's sign_in_with_x extension (x402 2.25.0) for tests/test_identity_interop.py.

Commands (JSON on stdin, JSON on stdout):
* ``sign``: their client answers a 402's ``sign-in-with-x`` extension → ``{"header": ...}``;
* ``verify``: their server checks a ``SIGN-IN-WITH-X`` header → ``{"valid": ..., "payer": ..., "reason": ...}``;
* ``bench``: time their check (parse, validate, verify) of each header → ``{"seconds": [...], "valid": n}``.
"""

import asyncio
import json
import sys

from eth_account import Account
from x402.extensions.sign_in_with_x import (
    create_siwx_payload,
    encode_siwx_header,
    parse_siwx_header,
    validate_siwx_message,
    verify_siwx_signature,
)


async def sign(args):
    ext = args["extension"]
    chain = ext["supportedChains"][0]
    info = {**ext["info"], "chainId": chain["chainId"], "type": chain["type"]}
    payload = await create_siwx_payload(info, Account.from_key(args["key"]), args["url"])
    return {"header": encode_siwx_header(payload)}


async def verify(args):
    payload = parse_siwx_header(args["header"])
    checked = await validate_siwx_message(payload, args["origin"])
    if not checked.is_valid:
        return {"valid": False, "payer": None, "reason": checked.invalid_reason}
    result = await verify_siwx_signature(payload)
    return {"valid": result.is_valid, "payer": result.payer, "reason": result.invalid_reason}


async def bench(args):
    import gc
    import time

    times, valid = [], 0
    gc.disable()
    for header in args["headers"]:
        t0 = time.perf_counter()
        got = await verify({"header": header, "origin": args["origin"]})
        times.append(time.perf_counter() - t0)
        valid += bool(got["valid"])
    gc.enable()
    return {"seconds": times, "valid": valid}


if __name__ == "__main__":
    command, args = sys.argv[1], json.load(sys.stdin)
    print(json.dumps(asyncio.run({"sign": sign, "verify": verify, "bench": bench}[command](args))))
