// @x402/extensions 2.27.0 offer-receipt for tests/test_identity_offers.py. JSON on stdin, JSON on stdout.
//   verify: {offers: [...], receipts: [...]}  -> {offers: [{signer|payload, error}], receipts: [...]}
//           (EIP-712: their recoverTypedDataAddress; JWS: jose compactVerify with the kid's did:key resolved by them)
//   make:   {key, ed25519Key, resourceUrl, input, payer, network} -> {offers: [...], receipts: [...]}
//           (their createOfferEIP712/createOfferJWS/createReceiptEIP712/createReceiptJWS)
import {
  createOfferEIP712, createOfferJWS, createReceiptEIP712, createReceiptJWS, verifyOfferSignatureEIP712,
  verifyOfferSignatureJWS, verifyReceiptSignatureEIP712, verifyReceiptSignatureJWS,
} from "@x402/extensions/offer-receipt";
import { privateKeyToAccount } from "viem/accounts";
import * as jose from "jose";
import { base58 } from "@scure/base";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const args = JSON.parse(Buffer.concat(chunks).toString());
const command = process.argv[2];

async function attempt(fn) {
  try { return await fn(); } catch (e) { return { error: String(e && e.message || e) }; }
}

if (command === "verify") {
  const offers = [];
  for (const o of args.offers) {
    offers.push(await attempt(async () => o.format === "eip712"
      ? { signer: (await verifyOfferSignatureEIP712(o)).signer }
      : { payload: await verifyOfferSignatureJWS(o) }));
  }
  const receipts = [];
  for (const r of args.receipts) {
    receipts.push(await attempt(async () => r.format === "eip712"
      ? { signer: (await verifyReceiptSignatureEIP712(r)).signer }
      : { payload: await verifyReceiptSignatureJWS(r) }));
  }
  console.log(JSON.stringify({ offers, receipts }));
} else if (command === "make") {
  const account = privateKeyToAccount(args.key);
  const signTypedData = (p) => account.signTypedData(p);
  // an Ed25519 JWS signer whose kid is its did:key (multicodec 0xed01 + raw public key, base58btc)
  const d = Buffer.from(args.ed25519Key.slice(2), "hex");
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), d]);
  const { createPrivateKey, createPublicKey, sign } = await import("node:crypto");
  const priv = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  const raw = createPublicKey(priv).export({ format: "der", type: "spki" }).subarray(-32);
  const did = "did:key:z" + base58.encode(Buffer.concat([Buffer.from([0xed, 0x01]), raw]));
  const jws = { kid: `${did}#${did.slice(8)}`, format: "jws", algorithm: "EdDSA",
                sign: async (bytes) => jose.base64url.encode(sign(null, Buffer.from(bytes), priv)) };
  const offers = [await createOfferEIP712(args.resourceUrl, args.input, signTypedData),
                  await createOfferJWS(args.resourceUrl, args.input, jws)];
  const input = { resourceUrl: args.resourceUrl, payer: args.payer, network: args.network,
                  transaction: args.transaction };
  const receipts = [await createReceiptEIP712(input, signTypedData), await createReceiptJWS(input, jws)];
  console.log(JSON.stringify({ offers, receipts, address: account.address, did }));
}
