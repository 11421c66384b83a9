// The official TypeScript MPP client (mppx@0.11.0, pinned in package-lock.json) paying one URL with its native
// `evm/charge` method and a viem account for the payer key.
//
// Config: one JSON argument {url, payerKey, tokenName, tokenVersion, chainId, token, method?, body?}.
// Prints one JSON line: {status, body, headers, receipt (mppx-parsed Payment-Receipt or null), credential
// (the Authorization value mppx sent, for replay tests), challenge (the challenge it answered)}.
import { Receipt } from "mppx";
import { Mppx } from "mppx/client";
import { charge } from "mppx/evm/client";
import { privateKeyToAccount } from "viem/accounts";

const cfg = JSON.parse(process.argv[2]);
const account = privateKeyToAccount(cfg.payerKey);

const mppx = Mppx.create({
  polyfill: false,
  maxPaymentRetries: 1,
  methods: [charge({
    account,
    authorization: { name: cfg.tokenName, version: cfg.tokenVersion },
    networks: [cfg.chainId],
    currencies: [cfg.token],
  })],
});

let credential = null;
let challenge = null;
mppx.onCredentialCreated((event) => {
  credential = event.credential;
  challenge = event.challenge;
});

const init = cfg.method ? { method: cfg.method, body: cfg.body, headers: { "content-type": "application/json" } }
  : undefined;
const response = await mppx.fetch(cfg.url, init);
const body = await response.text();
let receipt = null;
try {
  receipt = Receipt.fromResponse(response);
} catch (err) {
  receipt = null;
}
process.stdout.write(JSON.stringify({
  status: response.status,
  body,
  headers: Object.fromEntries(response.headers),
  receipt,
  credential,
  challenge,
}) + "\n");
