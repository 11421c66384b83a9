// @x402/extensions 2.27.0 sign-in-with-x for tests/test_identity_siwx.py. JSON on stdin, JSON on stdout.
//   sign:   {extension, url, key} -> {header}        (their client answers our 402's challenge)
//   verify: {header, origin}      -> {valid, payer, reason}   (their server's checks)
import {
  createSIWxPayload, encodeSIWxHeader, parseSIWxHeader, validateSIWxMessage, verifySIWxSignature,
} from "@x402/extensions/sign-in-with-x";
import { privateKeyToAccount } from "viem/accounts";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const args = JSON.parse(Buffer.concat(chunks).toString());
const command = process.argv[2];

if (command === "sign") {
  const chain = args.extension.supportedChains[0];
  const info = { ...args.extension.info, chainId: chain.chainId, type: chain.type };
  const payload = await createSIWxPayload(info, privateKeyToAccount(args.key), args.url);
  console.log(JSON.stringify({ header: encodeSIWxHeader(payload) }));
} else if (command === "verify") {
  const payload = parseSIWxHeader(args.header);
  const checked = await validateSIWxMessage(payload, new URL(args.origin));
  if (!checked.isValid) {
    console.log(JSON.stringify({ valid: false, payer: null, reason: checked.invalidReason }));
  } else {
    const result = await verifySIWxSignature(payload);
    console.log(JSON.stringify({ valid: result.isValid, payer: result.payer ?? null,
                                 reason: result.isValid ? null : result.invalidReason }));
  }
}
